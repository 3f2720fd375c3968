"""Priors p(z): ``nn.Module``s whose ``forward()`` returns a distribution over z with event
shape ``[L]`` (no batch shape). Parameters of learned priors are trained jointly with the
model because the objective calls ``prior()`` on every step.

Every prior is built as ``PRIORS[name](latent_dim, **options)`` with the options
``num_components``, ``flow_steps``, ``flow_hidden``, ``encoder`` and ``data_shape``; a prior
ignores the options it does not use."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import (Categorical, Distribution, Independent, MixtureSameFamily,
                                 MultivariateNormal, Normal, TransformedDistribution)

from .errors import ConfigError
from .flows import AffineCoupling, ModuleTransform
from .nets import MLP
from .posteriors import POSTERIORS, _diagonal_gaussian


class DiagonalGaussianMixture(MixtureSameFamily):
    """sum_k pi_k N(z; mu_k, diag(sigma_k^2)): torch's ``MixtureSameFamily`` of
    ``Independent(Normal)`` components (sampling, mean, expand, ... are torch's), with a faster
    ``log_prob`` for a mixture with no batch shape (a prior: components ``[K]``, event ``[L]``).

    Written by hand because torch's ``log_prob`` broadcasts every z against every component, a
    ``[..., K, L]`` temporary per elementwise step; at K = 500 (a VampPrior) that memory traffic
    was most of a K = 5000 log p(x) evaluation, which the matrix form below made 9.1 times
    faster (``benchmarks/mixture_prior.py``). The quadratic form is expanded,

        sum_l (z_l - mu_kl)^2 / sigma_kl^2 = z^2 . p_k - 2 z . (mu_k p_k) + mu_k^2 . p_k,
        p_k = sigma_k^-2,

    three matrix products, computed in float64: their terms can be far larger than their
    difference (z near mu_k with a small sigma_k): in float32 the cancellation cost 0.37 nats in
    the test's hard case. Batched mixtures (after ``expand``) use torch's ``log_prob``."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        normal = self.component_distribution.base_dist
        if len(self.batch_shape) or normal.loc.dim() != 2:
            return super().log_prob(value)
        with torch.autocast(value.device.type, enabled=False):
            z = value.double().reshape(-1, normal.loc.shape[-1])  # [N, L]
            loc, scale = normal.loc.double(), normal.scale.double()  # [K, L]
            precision = scale.pow(-2)
            quadratic = (z * z) @ precision.T - 2 * z @ (loc * precision).T \
                + (loc * loc * precision).sum(-1)  # [N, K]
            log_normalizer = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)
            log_components = -0.5 * quadratic.clamp(min=0) - log_normalizer  # log N(z; mu_k, .)
            log_weights = self.mixture_distribution.logits.double().log_softmax(-1)
            log_p = torch.logsumexp(log_components + log_weights, dim=-1)
        return log_p.to(value.dtype).reshape(value.shape[:-1])


def mixture(weights: Categorical, components: Distribution) -> MixtureSameFamily:
    """The mixture of ``components`` (batch ``[K]``) with ``weights``: a
    :class:`DiagonalGaussianMixture` when they are diagonal Gaussians, else torch's
    ``MixtureSameFamily``."""
    diagonal = (isinstance(components, Independent) and isinstance(components.base_dist, Normal)
                and components.reinterpreted_batch_ndims == 1)
    family = DiagonalGaussianMixture if diagonal else MixtureSameFamily
    return family(weights, components, validate_args=False)


class StandardNormalPrior(nn.Module):
    """p(z) = N(z; 0, I)."""

    def __init__(self, latent_dim: int, **_: object) -> None:
        super().__init__()
        # buffers, so the prior follows the model to its device and dtype
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1,
                           validate_args=False)


class MixtureOfGaussiansPrior(nn.Module):
    """p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)) with learned means ``loc [K, L]``,
    scales ``exp(log_scale) [K, L]`` and weights ``pi = softmax(logits) [K]``, as
    ``MixtureSameFamily``. The means start as draws from N(0, I), the scales at 1."""

    def __init__(self, latent_dim: int, num_components: int = 10, **_: object) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.randn(num_components, latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(num_components, latent_dim))
        self.logits = nn.Parameter(torch.zeros(num_components))

    def forward(self) -> Distribution:
        components = Independent(Normal(self.loc, self.log_scale.clamp(-15, 10).exp(),
                                        validate_args=False), 1, validate_args=False)
        return mixture(Categorical(logits=self.logits, validate_args=False), components)


class VampPrior(nn.Module):
    """VampPrior p(z) = (1/K) sum_k q(z | u_k) (Tomczak & Welling 2018): the model's own
    encoder evaluated at K learned pseudo-inputs ``u [K, *data_shape]``.

    The encoder is shared with the VAE, not owned: it is kept outside the module tree so its
    parameters appear once in ``state_dict`` (under ``encoder.``) and are saved once; only the
    pseudo-inputs belong to the prior. Needs a posterior whose ``log_prob`` works at any z
    (``has_inverse``). :meth:`init_from_data` sets the pseudo-inputs to training examples;
    otherwise they start as small noise around 0.5 (the middle of [0, 1] data).

    With ``clip_pseudo_inputs`` the encoder sees hardtanh(u), clipped to [0, 1], as the authors'
    code does for [0, 1] images (their parameters start at N(-0.05, 0.01) under the clip, where
    the hard tanh has no gradient; vaekit's start, 0.5 + noise or data, is inside it)."""

    needs_posterior_density = True

    def __init__(self, latent_dim: int, *, encoder: nn.Module, data_shape: Sequence[int],
                 num_components: int = 10, clip_pseudo_inputs: bool = False,
                 **_: object) -> None:
        super().__init__()
        self.pseudo_inputs = nn.Parameter(0.5 + 0.01 * torch.randn(num_components, *data_shape))
        self.clip_pseudo_inputs = clip_pseudo_inputs
        # a plain attribute (not a submodule): see the class docstring
        object.__setattr__(self, "encoder", encoder)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor) -> None:
        """u_k = K distinct random training examples (``x: [N, *data_shape]``, N >= K; with
        fewer examples they repeat)."""
        k = len(self.pseudo_inputs)
        index = torch.randperm(len(x))[:k] if len(x) >= k else torch.randint(len(x), (k,))
        self.pseudo_inputs.copy_(x[index.to(x.device)].to(self.pseudo_inputs))

    def inputs(self) -> torch.Tensor:
        """The pseudo-inputs the encoder sees: u, or hardtanh(u) in [0, 1] when clipped."""
        if self.clip_pseudo_inputs:
            return torch.nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)
        return self.pseudo_inputs

    def forward(self) -> Distribution:
        components = self.encoder(self.inputs())  # batch [K], event [L]
        weights = Categorical(logits=self.pseudo_inputs.new_zeros(len(self.pseudo_inputs)),
                              validate_args=False)
        return mixture(weights, components)


class FlowPrior(nn.Module):
    """p(z) = N(f^-1(z); 0, I) |det d f^-1 / dz|: a standard normal pushed through
    ``flow_steps`` RealNVP affine couplings f (Dinh et al. 2017) with alternating masks, as a
    ``TransformedDistribution``; log p(z) is exact at any z. Starts as N(0, I) (each coupling
    is initialised to the identity)."""

    def __init__(self, latent_dim: int, flow_steps: int = 4, flow_hidden: int = 64,
                 **_: object) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)
        self.steps = nn.ModuleList(AffineCoupling(latent_dim, flow_hidden, parity=k % 2)
                                   for k in range(flow_steps))

    def forward(self) -> Distribution:
        base = Independent(Normal(self.loc, self.scale, validate_args=False), 1,
                           validate_args=False)
        return TransformedDistribution(base, [ModuleTransform(step) for step in self.steps],
                                       validate_args=False)


def tempered(p_z: Distribution, temperature: float) -> Distribution:
    """``p_z`` at temperature T: its Gaussian noise scaled by T, the way reduced-temperature
    samples are drawn in the literature (Kingma & Dhariwal 2018; Vahdat & Kautz 2020). A Gaussian
    N(mu, Sigma) becomes N(mu, T^2 Sigma); a mixture keeps its weights and means and tempers
    each component; a flow f(eps) draws f(T eps). T = 1 is ``p_z`` itself; T < 1 trades variety
    for typical samples. Several stochastic layers temper every layer's conditional (as NVAE's
    reduced-temperature samples do). A prior of another kind is refused."""
    if temperature == 1:
        return p_z
    at_temperature = getattr(p_z, "at_temperature", None)  # a chain of layers tempers each one
    if at_temperature is not None:
        return at_temperature(temperature)
    if isinstance(p_z, Independent):
        return Independent(tempered(p_z.base_dist, temperature), p_z.reinterpreted_batch_ndims,
                           validate_args=False)
    if isinstance(p_z, Normal):
        return Normal(p_z.loc, p_z.scale * temperature, validate_args=False)
    if isinstance(p_z, MultivariateNormal):
        return MultivariateNormal(p_z.loc, scale_tril=p_z.scale_tril * temperature,
                                  validate_args=False)
    if isinstance(p_z, MixtureSameFamily):
        return mixture(p_z.mixture_distribution, tempered(p_z.component_distribution, temperature))
    if isinstance(p_z, TransformedDistribution):
        return TransformedDistribution(tempered(p_z.base_dist, temperature), p_z.transforms,
                                       validate_args=False)
    raise ConfigError(f"--temperature {temperature:g}: this model's prior ({type(p_z).__name__}) "
                      "has no temperature; sample it at --temperature 1")


PRIORS: dict[str, type[nn.Module]] = {
    "normal": StandardNormalPrior,
    "mog": MixtureOfGaussiansPrior,
    "vamp": VampPrior,
    "flow": FlowPrior,
}


# -- conditional priors p(z | y) ----------------------------------------------------------------

class ClassGaussianPrior(nn.Module):
    """p(z | y) = N(z; M y, diag(exp(2 S y))): one learned Gaussian per class (rows of the
    tables ``loc [C, L]`` and ``log_scale [C, L]``; a soft y mixes their parameters). Starts as
    N(0, I) for every class."""

    def __init__(self, latent_dim: int, num_classes: int, **_: object) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(num_classes, latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(num_classes, latent_dim))

    def forward(self, y: torch.Tensor) -> Distribution:
        """``y [B, C]`` -> batch ``[B]``, event ``[L]``."""
        loc, log_scale = y @ self.loc, (y @ self.log_scale).clamp(-15, 10)
        return Independent(Normal(loc, log_scale.exp(), validate_args=False), 1,
                           validate_args=False)


class NetworkGaussianPrior(nn.Module):
    """p(z | y) = N(z; mu(y), diag(sigma^2(y))) with [mu, log sigma^2] an MLP of y ``[B, C]``
    (hidden sizes ``hidden``): for conditions that are not classes (covariates)."""

    def __init__(self, latent_dim: int, condition_dim: int, hidden: Sequence[int] = (64,),
                 activation: str = "relu", **_: object) -> None:
        super().__init__()
        self.net = MLP((condition_dim,), (2 * latent_dim,), hidden, activation)

    def forward(self, y: torch.Tensor) -> Distribution:
        return _diagonal_gaussian(self.net(y))


# config model.conditional_prior -> p(z | y) of a conditional model (vaekit.conditional; none: the
# configured prior p(z), not conditioned)
CONDITIONAL_PRIORS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "class": ClassGaussianPrior,
    "net": NetworkGaussianPrior,
}


def model_errors(model) -> str | None:
    """The priors' rule on the model options (collected by config validation): a prior that
    evaluates q(z|x) at arbitrary z needs a posterior that can."""
    if (getattr(PRIORS[model.prior], "needs_posterior_density", False)
            and not POSTERIORS[model.posterior].has_inverse):
        valid = [n for n, cls in POSTERIORS.items() if cls.has_inverse]
        return (f"prior '{model.prior}' evaluates q(z|x) at arbitrary z, which posterior "
                f"'{model.posterior}' cannot (valid posteriors with it: {', '.join(valid)})")
    return None
