"""Several stochastic layers z = [z_1, ..., z_L] (z_1 next to x, z_L at the top), as one
distribution over the concatenated layers so that every objective and estimator of vaekit
works unchanged on a hierarchical model (log q(z|x) and log p(z) sum their layers' terms).

Generative path (Burda et al. 2016; Sønderby et al. 2016):

    p(x, z) = p(x | z_1) p(z_1 | z_2) ... p(z_{L-1} | z_L) p(z_L),

p(z_L) any prior of :data:`vaekit.priors.PRIORS`, each p(z_l | z_{l+1}) a diagonal Gaussian
whose parameters an MLP computes from z_{l+1}, and p(x | z_1) the configured likelihood.

Inference (:data:`INFERENCES`):

- ``bottom-up`` (the IWAE paper): q(z|x) = q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1});
- ``top-down`` (the Ladder VAE): a deterministic upward pass d_1 = f_1(x), d_{l+1} =
  f_{l+1}(d_l) gives a Gaussian estimate N(m_l, s_l^2) per layer; then
  q(z|x) = q(z_L | x) prod_l q(z_l | z_{l+1}, x), q(z_L | x) = N(m_L, s_L^2) and
  q(z_l | z_{l+1}, x) the precision-weighted combination of N(m_l, s_l^2) with the generative
  p(z_l | z_{l+1}) = N(mu_l, sigma_l^2):

      1 / v = 1 / s_l^2 + 1 / sigma_l^2,     mean = v (m_l / s_l^2 + mu_l / sigma_l^2),

  so the posterior shares the generative path (and is exact for linear-Gaussian models whose
  layers' likelihoods are diagonal).

Layers are concatenated bottom first: ``z[..., :L_1]`` is z_1."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.func
from torch import nn
from torch.distributions import Distribution, Independent, Normal, constraints

from .nets import INITIALIZATIONS, MLP
from .posteriors import _diagonal_gaussian
from .priors import PRIORS, tempered

if TYPE_CHECKING:
    from .config import ModelConfig


def call(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    return module(*args)


def call_detached(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """``module(*args)`` with the module's parameters cut from the autograd graph: the output
    still depends on ``args`` (DReG needs log q(z|x) to depend on z but not on the encoder's
    parameters, and q(z_2 | z_1) is a network of the sampled z_1)."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, args)


class LayeredLatent(Distribution):
    """A distribution over z = [z_1, ..., z_L] (event ``[sum_l L_l]``, bottom first) given as a
    chain: the layer ``order[0]`` is drawn from ``first``, each next layer ``order[i]`` from
    ``conditionals[i-1](previous layer)`` (a diagonal Gaussian). ``log_prob`` sums the layers'
    log-densities. ``detach``: builds the same chain with the networks' parameters detached
    (for :func:`vaekit.objectives.detached`)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, first: Distribution, conditionals: Sequence[Callable], sizes: Sequence[int],
                 order: Sequence[int], detach: Callable[[], LayeredLatent] | None = None) -> None:
        self.first = first
        self.conditionals = list(conditionals)
        self.sizes = tuple(sizes)
        self.order = tuple(order)
        self._detach = detach
        super().__init__(first.batch_shape, torch.Size([sum(self.sizes)]), validate_args=False)

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """The layers of ``z [..., sum L_l]``, bottom first."""
        return list(z.split(self.sizes, dim=-1))

    def _ancestral(self, sample_shape, draw) -> torch.Tensor:
        layers: list[torch.Tensor | None] = [None] * len(self.sizes)
        layers[self.order[0]] = previous = draw(self.first, sample_shape)
        for index, conditional in zip(self.order[1:], self.conditionals):
            layers[index] = previous = draw(conditional(previous), torch.Size())
        return torch.cat(layers, -1)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Ancestral sampling along the chain, each layer reparameterized given its parent
        (so gradients reach every layer's parameters through the draws)."""
        return self._ancestral(sample_shape, lambda d, shape: d.rsample(shape))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Ancestral sampling without gradients (also for a first layer that has no
        ``rsample``, such as a VampPrior or mixture at the top)."""
        with torch.no_grad():
            return self._ancestral(sample_shape, lambda d, shape: d.sample(shape))

    def log_prob_layers(self, z: torch.Tensor) -> list[torch.Tensor]:
        """log p(z_l | parent) for each layer l at ``z [..., sum L_l]``, bottom first."""
        layers = self.split(z)
        out: list[torch.Tensor | None] = [None] * len(layers)
        out[self.order[0]] = self.first.log_prob(layers[self.order[0]])
        for parent, child, conditional in zip(self.order[:-1], self.order[1:], self.conditionals):
            out[child] = conditional(layers[parent]).log_prob(layers[child])
        return out

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return sum(self.log_prob_layers(z))

    def conditional_means(self, num_samples: int = 64) -> torch.Tensor:
        """E[z] per layer, ``[*batch, sum L_l]``: the first layer's mean exactly, each next
        layer's as the average over ``num_samples`` chains of its conditional mean given the
        sampled parent (Rao-Blackwellised: the noise of the layer itself does not enter)."""
        means: list[torch.Tensor | None] = [None] * len(self.sizes)
        means[self.order[0]] = self.first.mean.expand(*self.batch_shape, self.sizes[self.order[0]])
        previous = self.first.sample((num_samples,))
        for index, conditional in zip(self.order[1:], self.conditionals):
            q_child = conditional(previous)
            means[index] = q_child.mean.mean(0)
            previous = q_child.sample()
        return torch.cat(means, -1)

    def at_temperature(self, temperature: float) -> LayeredLatent:
        """The chain with every layer tempered (:func:`vaekit.priors.tempered`): the first layer
        at T, each next layer's Gaussian given its parent with its scale times T. For a chain of
        linear-Gaussian layers this is the joint Gaussian with its covariance times T^2."""
        conditionals = [lambda parent, conditional=conditional: tempered(conditional(parent),
                                                                          temperature)
                        for conditional in self.conditionals]
        return LayeredLatent(tempered(self.first, temperature), conditionals, self.sizes,
                             self.order)

    def expand(self, batch_shape, _instance=None) -> LayeredLatent:
        return LayeredLatent(self.first.expand(batch_shape), self.conditionals, self.sizes,
                             self.order)

    def detached(self) -> LayeredLatent:
        if self._detach is None:
            raise NotImplementedError("this layered distribution cannot be detached")
        return self._detach()


def gaussian_of(net: nn.Module, run: Callable = call) -> Callable[[torch.Tensor], Distribution]:
    """z -> diagonal Gaussian with [loc, log_var] = net(z)."""
    return lambda z: _diagonal_gaussian(run(net, z))


def layer_nets(sizes: Sequence[int], hidden: Sequence[int], activation: str, *,
               input_sizes: Sequence[int] | None = None, gated: bool = False) -> nn.ModuleList:
    """MLPs from layer l (``input_sizes[l]`` numbers; default L_l) to [loc, log_var] of layer
    l + 1, for l = 1..L-1 (upward), each with the hidden sizes ``hidden``."""
    input_sizes = sizes[:-1] if input_sizes is None else input_sizes
    return nn.ModuleList(MLP((d_in,), (2 * d_out,), hidden, activation, gated=gated)
                         for d_in, d_out in zip(input_sizes, sizes[1:]))


class HierarchicalPrior(nn.Module):
    """p(z) = p(z_L) prod_{l<L} p(z_l | z_{l+1}): ``top`` is a prior module over z_L (any of
    :data:`vaekit.priors.PRIORS`); with 0-based layers, ``down_nets[l]`` maps z_{l+1} to
    [loc, log_var] of p(z_l | z_{l+1})."""

    def __init__(self, top: nn.Module, down_nets: nn.ModuleList, sizes: Sequence[int]) -> None:
        super().__init__()
        self.top = top
        self.down_nets = down_nets
        self.sizes = tuple(sizes)

    def conditional(self, layer: int, run: Callable = call) -> Callable:
        """z_{layer+1} -> p(z_layer | z_{layer+1}) (0-based layer < L - 1)."""
        return gaussian_of(self.down_nets[layer], run)

    def forward(self, *condition: torch.Tensor) -> LayeredLatent:
        """``condition``: passed to the top prior (a conditional model's p(z_L | y))."""
        top = len(self.sizes) - 1
        order = list(range(top, -1, -1))
        return LayeredLatent(self.top(*condition), [self.conditional(layer) for layer in order[1:]],
                             self.sizes, order)

    @torch.no_grad()
    def decode_means(self, z_layer: torch.Tensor, layer: int) -> torch.Tensor:
        """[z_1, ..., z_layer] with z_{l} = E[z_l | z_{l+1}]: the generative means from the
        code ``z_layer`` of ``layer`` (0-based) down to the bottom layer, concatenated bottom
        first; ``[..., L_1 + ... + L_layer]``."""
        layers = [z_layer]
        for below in range(layer - 1, -1, -1):
            layers.insert(0, self.conditional(below)(layers[0]).mean)
        return torch.cat(layers, -1)


class BottomUpPosterior(nn.Module):
    """q(z|x) = q(z_1 | x) prod_l q(z_{l+1} | z_l) (Burda et al. 2016): ``bottom_net`` maps x to
    [loc, log_var] of z_1, ``up_nets[l]`` maps z_{l+1} to those of z_{l+2} (0-based)."""

    has_inverse = True
    detachable = True

    def __init__(self, bottom_net: nn.Module, up_nets: nn.ModuleList, sizes: Sequence[int],
                 **_: object) -> None:
        super().__init__()
        self.bottom_net = bottom_net
        self.up_nets = up_nets
        self.sizes = tuple(sizes)
        self.latent_dim = sum(self.sizes)

    @staticmethod
    def up_input_sizes(sizes: Sequence[int]) -> list[int]:
        return list(sizes[:-1])  # the sampled layer below

    def forward(self, x: torch.Tensor, run: Callable = call) -> LayeredLatent:
        first = _diagonal_gaussian(run(self.bottom_net, x))
        return LayeredLatent(first, [gaussian_of(net, run) for net in self.up_nets], self.sizes,
                             range(len(self.sizes)), lambda: self(x, call_detached))

    def top_posterior(self, x: torch.Tensor) -> Distribution:
        """A distribution over z_L for the VampPrior: q(z_L | z_{L-1} = m_{L-1}(x)) with the
        layers below at their conditional means (q(z_L | x) itself has no closed form here; the
        mixture over pseudo-inputs is a normalised prior either way)."""
        z = _diagonal_gaussian(self.bottom_net(x)).mean
        for net in self.up_nets[:-1]:
            z = _diagonal_gaussian(net(z)).mean
        return _diagonal_gaussian(self.up_nets[-1](z))


class TopDownPosterior(nn.Module):
    """The Ladder VAE posterior (Sønderby et al. 2016), see the module docstring: ``bottom_net``
    maps x to the estimate [m_1, log s_1^2], ``up_nets[l]`` maps layer l's estimate to layer
    l + 1's (0-based); ``generative`` is the model's :class:`HierarchicalPrior` (shared, not
    owned: its parameters belong to the prior in ``state_dict``)."""

    has_inverse = True
    detachable = True

    def __init__(self, bottom_net: nn.Module, up_nets: nn.ModuleList, sizes: Sequence[int], *,
                 generative: HierarchicalPrior, **_: object) -> None:
        super().__init__()
        self.bottom_net = bottom_net
        self.up_nets = up_nets
        self.sizes = tuple(sizes)
        self.latent_dim = sum(self.sizes)
        object.__setattr__(self, "generative", generative)  # not a submodule: see the docstring

    @staticmethod
    def up_input_sizes(sizes: Sequence[int]) -> list[int]:
        return [2 * size for size in sizes[:-1]]  # the estimate [m_l, log s_l^2] of the layer

    def estimates(self, x: torch.Tensor, run: Callable = call) -> list[Independent]:
        """The upward estimates N(m_l, s_l^2), bottom first."""
        d = run(self.bottom_net, x)
        out = [_diagonal_gaussian(d)]
        for net in self.up_nets:
            d = run(net, d)
            out.append(_diagonal_gaussian(d))
        return out

    def forward(self, x: torch.Tensor, run: Callable = call) -> LayeredLatent:
        estimates = self.estimates(x, run)
        top = len(self.sizes) - 1
        order = list(range(top, -1, -1))
        conditionals = [self._combined(estimates[layer], self.generative.conditional(layer, run))
                        for layer in order[1:]]
        return LayeredLatent(estimates[top], conditionals, self.sizes, order,
                             lambda: self(x, call_detached))

    @staticmethod
    def _combined(estimate: Independent, prior_of: Callable) -> Callable:
        def conditional(parent: torch.Tensor) -> Distribution:
            p = prior_of(parent).base_dist
            q = estimate.base_dist
            # precisions 1/s^2 + 1/sigma^2; in log space so that neither can overflow
            log_prec_q, log_prec_p = -2 * q.scale.log(), -2 * p.scale.log()
            log_prec = torch.logaddexp(log_prec_q, log_prec_p)
            loc = torch.exp(log_prec_q - log_prec) * q.loc + torch.exp(log_prec_p - log_prec) * p.loc
            return Independent(Normal(loc, torch.exp(-0.5 * log_prec), validate_args=False), 1,
                               validate_args=False)
        return conditional

    def top_posterior(self, x: torch.Tensor) -> Distribution:
        """q(z_L | x) (exact: the top layer's own estimate), for the VampPrior."""
        return self.estimates(x)[-1]


class TopLayerEncoder:
    """x -> q(z_L | x) of a hierarchical posterior: the "encoder" a VampPrior at the top layer
    evaluates at its pseudo-inputs (Tomczak & Welling 2018, HVAE + VampPrior). A plain object,
    so the posterior's parameters are not registered twice."""

    has_inverse = True

    def __init__(self, posterior: nn.Module) -> None:
        self.posterior = posterior

    def __call__(self, x: torch.Tensor) -> Distribution:
        return self.posterior.top_posterior(x)


class TakeBottomLayer(nn.Module):
    """z = [z_1, ..., z_L] -> z_1: the decoder p(x | z_1) sees only the bottom layer (unless
    ``model.skip_decoder``: then it reads z whole, p(x | z_1, ..., z_L)). With ``latent_dim``
    (the sum of the layers' sizes) what follows z (a conditional model's y) is kept:
    [z_1, ..., z_L, y] -> [z_1, y]."""

    def __init__(self, size: int, latent_dim: int | None = None) -> None:
        super().__init__()
        self.size, self.latent_dim = size, latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.latent_dim is None or z.shape[-1] == self.latent_dim:  # nothing follows z
            return z[..., : self.size]
        return torch.cat([z[..., : self.size], z[..., self.latent_dim :]], -1)


# config model.inference -> the posterior of a model with several stochastic layers (the default,
# bottom-up, kept its upper layer active on MNIST where top-down collapsed to KL 0.1 nats in the
# first epoch without KL warm-up: docs/hierarchical.md)
INFERENCES: dict[str, type[nn.Module]] = {
    "bottom-up": BottomUpPosterior,
    "top-down": TopDownPosterior,
}


def hierarchical_latents(cfg: ModelConfig, bottom_net: nn.Module, data_shape: Sequence[int]
                         ) -> tuple[nn.Module, HierarchicalPrior]:
    """The posterior (``cfg.inference``) and the prior of the stochastic layers
    ``cfg.latent_sizes`` above ``bottom_net`` (x -> [loc, log_var] of z_1): the MLPs between
    layers have the hidden sizes ``cfg.layer_hidden`` (the same upward and downward) and the
    configured prior ``cfg.prior`` sits at the top layer."""
    sizes = cfg.latent_sizes
    posterior_cls = INFERENCES[cfg.inference]
    up_nets = layer_nets(sizes, cfg.layer_hidden, cfg.activation,
                         input_sizes=posterior_cls.up_input_sizes(sizes), gated=cfg.gated)
    down_nets = nn.ModuleList(MLP((above,), (2 * below,), cfg.layer_hidden[::-1], cfg.activation,
                                  gated=cfg.gated)
                              for below, above in zip(sizes[:-1], sizes[1:]))
    if INITIALIZATIONS[cfg.init] is not None:
        INITIALIZATIONS[cfg.init](up_nets)
        INITIALIZATIONS[cfg.init](down_nets)
    generative = HierarchicalPrior(nn.Identity(), down_nets, sizes)  # the top is set below
    posterior = posterior_cls(bottom_net, up_nets, sizes, generative=generative)
    generative.top = PRIORS[cfg.prior](
        sizes[-1], num_components=cfg.prior_components, encoder=TopLayerEncoder(posterior),
        data_shape=data_shape, flow_steps=cfg.flow_steps, flow_hidden=cfg.flow_hidden,
        clip_pseudo_inputs=cfg.vamp_clip_pseudo_inputs)
    return posterior, generative


def model_errors(model) -> str | None:
    """The rules of several stochastic layers on the model options (collected by config
    validation)."""
    layered = isinstance(model.latent_dim, tuple)
    if layered and model.posterior != "gaussian":
        return (f"posterior '{model.posterior}' has one stochastic layer; a model with several "
                f"(--latent-dim {','.join(map(str, model.latent_dim))}) uses diagonal Gaussian "
                "layers chosen with --inference (top-down or bottom-up)")
    if model.skip_decoder and not layered:
        return ("skip_decoder (--skip-decoder) lets the decoder read every stochastic layer; a "
                "one-layer model has one: give --latent-dim a comma list")
    return None
