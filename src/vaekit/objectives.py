"""Objectives as pure functions of a model and a batch. Each returns per-example values
(higher is better, shape ``[B]``); the training loop negates and averages in one place.

Shapes: samples first, then batch, then event: z is ``[K, B, L]``, log-weights ``[K, B]``."""

from __future__ import annotations

import copy
import math
from functools import partial
from typing import NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from .errors import ConfigError
from .posteriors import POSTERIORS


class ElboTerms(NamedTuple):
    """Per-example terms of ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), each ``[B]``."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor  # E_q[log p(x|z)], Monte Carlo over the drawn z
    kl: torch.Tensor  # KL(q(z|x) || p(z)), closed form when torch has one


def kl_samples(q_z: Distribution, p_z: Distribution, z: torch.Tensor,
               log_qz: torch.Tensor | None = None, *, score: bool | None = None) -> torch.Tensor:
    """KL(q(z|x) || p(z)) at each draw z_k, ``[K, B]`` for ``z [K, B, L]``: the closed form
    (the same for every k) when torch registers one for the pair of distributions, else the
    Monte Carlo estimate log q(z_k|x) - log p(z_k). The one place this rule is written.

    ``log_qz [K, B]``: q_z.log_prob(z) when the caller has it. ``score`` (None: pathwise) gives
    a Monte Carlo KL the score-function gradient of :func:`score_function_surrogate` instead,
    for draws taken without gradient (True: with the leave-one-out baseline); a closed form is
    differentiated exactly either way."""
    try:
        return kl_divergence(q_z, p_z).expand(z.shape[:-1])
    except NotImplementedError:
        pass
    log_qz = q_z.log_prob(z) if log_qz is None else log_qz
    if score is None:
        return log_qz - p_z.log_prob(z)
    log_ratio = log_qz.detach() - p_z.log_prob(z)  # [K, B]
    return log_ratio + score_function_surrogate(log_ratio, log_qz, baseline=score)


def kl_term(q_z: Distribution, p_z: Distribution, z: torch.Tensor) -> torch.Tensor:
    """KL(q || p) per example ``[B]``: :func:`kl_samples` averaged over the draws ``z [K, B, L]``."""
    return kl_samples(q_z, p_z, z).mean(0)


def kl_per_dim(q_z: Distribution, p_z: Distribution) -> torch.Tensor | None:
    """KL per latent dimension ``[B, L]`` when both are factorised Gaussians (diagonal
    posterior against a diagonal prior), else None; sums to :func:`kl_term`."""
    if (
        isinstance(q_z, Independent) and isinstance(p_z, Independent)
        and isinstance(q_z.base_dist, Normal) and isinstance(p_z.base_dist, Normal)
    ):
        return kl_divergence(q_z.base_dist, p_z.base_dist)
    return None


class ElboSamples(NamedTuple):
    """Per-sample ELBO terms ``[K, B]`` whose *values* are the Monte Carlo estimates
    log p(x|z_k) and KL_k (the closed-form KL repeated over k when torch has one) and whose
    *gradients* are those of the chosen gradient estimator; (1/K) sum_k of either is the usual
    K-sample estimate, and the gradient of row k alone is the k-th per-sample estimate."""

    reconstruction: torch.Tensor  # [K, B]
    kl: torch.Tensor  # [K, B]

    def terms(self) -> ElboTerms:
        """The K-sample estimates per example, ``[B]`` each."""
        reconstruction, kl = self.reconstruction.mean(0), self.kl.mean(0)
        return ElboTerms(reconstruction - kl, reconstruction, kl)


def elbo_samples(model, x: torch.Tensor, num_samples: int = 1,
                 gradient_estimator: str = "reparameterization", *,
                 q_z: Distribution | None = None, p_z: Distribution | None = None) -> ElboSamples:
    """The ELBO core that training, validation and evaluation all call:
    log p(x|z_k) and KL(q(z|x) || p(z)) for ``num_samples`` draws z_k ~ q(z|x) per example,
    with the encoder gradient of ``gradient_estimator`` (a key of :data:`GRADIENT_ESTIMATORS`;
    the values are the same whichever is chosen). ``q_z``, ``p_z``: the encoder's and prior's
    distributions when the caller has them."""
    q_z = model.encoder(x) if q_z is None else q_z
    p_z = model.prior() if p_z is None else p_z
    return gradient_estimator_terms(gradient_estimator)(model, x, q_z, p_z, num_samples)


def elbo_terms(model, x: torch.Tensor, num_samples: int = 1) -> ElboTerms:
    """ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)), in nats, summed over data dims.

    The expectation uses ``num_samples`` reparameterized draws ``z = q_z.rsample()``
    (Kingma & Welling 2014). ``x``: ``[B, *data_shape]``; returns :class:`ElboTerms` of ``[B]``."""
    return elbo_samples(model, x, num_samples).terms()


def elbo(model, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
    """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) per example, ``[B]``."""
    return elbo_terms(model, x, num_samples).elbo


class WeightTerms(NamedTuple):
    """The terms of log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), each ``[K, B]``."""

    log_px_z: torch.Tensor
    log_pz: torch.Tensor
    log_qz: torch.Tensor

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_px_z + self.log_pz - self.log_qz


def weight_terms(model, x: torch.Tensor, q_z: Distribution, z: torch.Tensor,
                 log_qz: torch.Tensor | None = None) -> WeightTerms:
    """log p(x|z_k), log p(z_k) and log q(z_k|x) for given draws ``z [K, B, L]`` of the proposal
    ``q_z`` (batch ``[B]``): the one place log importance weights are computed. The IWAE bound,
    the DReG estimator and the importance-sampled log-likelihood all call it. ``log_qz [K, B]``,
    when given, is q_z.log_prob(z) computed by the caller (a planar-flow posterior knows its
    density only at the very tensor it sampled, not at a slice of it)."""
    log_qz = q_z.log_prob(z) if log_qz is None else log_qz
    return WeightTerms(model.decoder(z).log_prob(x), model.prior().log_prob(z), log_qz)


def log_importance_weights(model, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x): ``[K, B]``.

    Shared by the IWAE bound and the importance-sampled log-likelihood (Burda et al. 2016)."""
    q_z = model.encoder(x)
    z = q_z.rsample((num_samples,))  # [K, B, L]
    return weight_terms(model, x, q_z, z).log_w


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) sum_k exp(log_w_k) along ``dim``, without overflow."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def iwae_bound(model, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """IWAE_K(x) = log (1/K) sum_k w_k, computed with logsumexp; K = 1 is the ELBO
    (with a Monte Carlo KL). Returns ``[B]`` (Burda et al. 2016)."""
    return log_mean_exp(log_importance_weights(model, x, num_samples))


def detached(dist: Distribution) -> Distribution:
    """A copy of ``dist`` whose parameters are cut from the autograd graph: ``log_prob(z)`` of
    the copy still depends on ``z`` but no longer on the parameters that produced ``dist``.
    Works for distributions built from tensors (Normal, Independent, MultivariateNormal,
    mixtures, TransformedDistribution with tensor-parameter transforms); raises ConfigError
    for transforms holding learned ``nn.Module`` parameters, which a copy cannot detach.
    A distribution with its own ``detached()`` (the layers of a hierarchical posterior, whose
    conditionals are networks of the sampled layer below) provides the copy itself."""
    if hasattr(dist, "detached"):
        return dist.detached()
    copy_ = copy.copy(dist)
    for name, value in vars(dist).items():
        if isinstance(value, torch.Tensor):
            setattr(copy_, name, value.detach())
        elif isinstance(value, Distribution):
            setattr(copy_, name, detached(value))
        elif _has_learned_parameters(value):
            raise ConfigError(
                f"the posterior {type(dist).__name__} has learned transforms whose parameters "
                "cannot be detached for DReG; use --objective iwae with this posterior"
            )
    return copy_


def _has_learned_parameters(value) -> bool:
    modules = value if isinstance(value, (list, tuple)) else [value]
    return any(isinstance(m, nn.Module) and any(p.requires_grad for p in m.parameters())
               for m in modules)


def iwae_dreg_surrogate(
    model, x: torch.Tensor, num_samples: int
) -> tuple[torch.Tensor, WeightTerms, Distribution, torch.Tensor]:
    """A surrogate whose value is IWAE_K(x) ``[B]`` and whose gradient is the doubly
    reparameterized (DReG) IWAE gradient (Tucker et al. 2019):

        encoder phi:       sum_k w~_k^2  d log w_k / d z_k  d z_k / d phi
        decoder/prior th:  sum_k w~_k    d log w_k / d theta          (the usual IWAE gradient)

    with w~_k = w_k / sum_j w_j and log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x).

    Built as: log q is evaluated under a detached copy of q(z|x), so phi reaches log w only
    through the reparameterized z_k = z(eps_k; phi); the gradient of
    logsumexp_k log w_k is then sum_k w~_k d log w_k, and a hook on z multiplies the gradient
    flowing into z_k by one more w~_k (a constant). Returns the surrogate and the weight
    terms, the proposal and the draws (for reporting)."""
    q_z = model.encoder(x)
    z = q_z.rsample((num_samples,))  # [K, B, L]
    terms = weight_terms(model, x, detached(q_z), z)
    log_w = terms.log_w  # [K, B]
    if z.requires_grad:
        w_normalized = torch.softmax(log_w.detach(), 0)  # [K, B]
        z.register_hook(lambda grad: grad * w_normalized.unsqueeze(-1))
    return log_mean_exp(log_w), terms, q_z, z


def leave_one_out_mean(f: torch.Tensor) -> torch.Tensor:
    """b_k = (1/(K-1)) sum_{j != k} f_j over the leading axis of ``f [K, ...]`` (needs K >= 2).

    Independent of z_k, so subtracting it from f(z_k) keeps the score-function estimator
    unbiased: the "free" baseline of Kool, van Hoof & Welling (2019)."""
    num = f.shape[0]
    return (f.sum(0, keepdim=True) - f) / (num - 1)


def score_function_surrogate(f: torch.Tensor, log_q: torch.Tensor, *, baseline: bool = False
                             ) -> torch.Tensor:
    """s_k = (f_k - b_k) * (log q(z_k) - stop_grad(log q(z_k))): zero in value, with gradient
    (f_k - b_k) grad log q(z_k), the score-function (REINFORCE, Williams 1992) estimate of
    grad E_q[f]. ``f``, ``log_q``: ``[K, ...]`` with z drawn without gradient; ``b_k`` is the
    :func:`leave_one_out_mean` with ``baseline``, else 0. Returns ``[K, ...]``."""
    signal = f.detach()
    if baseline:
        signal = signal - leave_one_out_mean(signal)
    return signal * (log_q - log_q.detach())


def reparameterized_terms(model, x: torch.Tensor, q_z: Distribution, p_z: Distribution,
                          num_samples: int) -> ElboSamples:
    """Pathwise gradients: z_k = q_z.rsample() (Kingma & Welling 2014), so
    grad_phi log p(x|z_k) flows through z_k; the KL is closed form when torch has one, else
    the pathwise Monte Carlo log q(z_k|x) - log p(z_k)."""
    z = q_z.rsample((num_samples,))  # [K, B, L]
    log_px_z = model.decoder(z).log_prob(x)  # [K, B]
    kl = kl_samples(q_z, p_z, z)
    return ElboSamples(log_px_z, kl)


def score_function_terms(model, x: torch.Tensor, q_z: Distribution, p_z: Distribution,
                         num_samples: int, *, baseline: bool = False) -> ElboSamples:
    """Score-function gradients for the encoder: z_k ~ q(z|x) drawn without gradient, and

        grad_phi E_q[log p(x|z)] ~ (log p(x|z_k) - b_k) grad_phi log q(z_k|x)

    while the decoder (and a learned prior) get their ordinary gradients at the fixed z_k.
    A closed-form KL is differentiated exactly, as in :func:`reparameterized_terms`, so both
    estimators target the same grad_phi ELBO and differ only in the reconstruction term;
    without one, the Monte Carlo KL log q(z_k|x) - log p(z_k) gets the score-function
    treatment too (its direct term -grad_phi log q has mean zero and is left out).
    ``baseline``: leave-one-out mean over the K samples (needs K >= 2)."""
    if baseline and num_samples < 2:
        raise ConfigError("the score-function baseline is a leave-one-out mean over samples: "
                          "use --num-samples 2 or more")
    z = q_z.sample((num_samples,))  # [K, B, L], no gradient through the draw
    log_qz = q_z.log_prob(z)  # [K, B]
    log_px_z = model.decoder(z).log_prob(x)  # [K, B]
    reconstruction = log_px_z + score_function_surrogate(log_px_z, log_qz, baseline=baseline)
    kl = kl_samples(q_z, p_z, z, log_qz, score=baseline)
    return ElboSamples(reconstruction, kl)


# How the encoder gradient of the ELBO is estimated in training (decoder gradients are pathwise
# in all of them); each maps (model, x, q_z, p_z, num_samples) to ElboSamples.
GRADIENT_ESTIMATORS = {
    "reparameterization": reparameterized_terms,
    "score": score_function_terms,
    "score-baseline": partial(score_function_terms, baseline=True),
}


def gradient_estimator_terms(name: str):
    """The function of :data:`GRADIENT_ESTIMATORS` called ``name``; ConfigError listing the
    valid names otherwise."""
    if name not in GRADIENT_ESTIMATORS:
        raise ConfigError(f"unknown gradient estimator '{name}' "
                          f"(valid: {', '.join(GRADIENT_ESTIMATORS)})")
    return GRADIENT_ESTIMATORS[name]


def elbo_loss(
    model, x: torch.Tensor, *, beta: float = 1.0, free_bits: float = 0.0, num_samples: int = 1,
    gradient_estimator: str = "reparameterization",
) -> tuple[torch.Tensor, ElboTerms]:
    """loss = -mean_B( E_q[log p(x|z)] - beta * KL ), with optional free bits (Kingma et al.
    2016): the KL of each latent dimension, averaged over the batch, counts as at least
    ``free_bits`` nats. Returns the scalar loss and the true (unweighted) per-example ELBO terms
    for reporting; with beta = 1 and free_bits = 0 the loss is exactly -mean ELBO.

    ``gradient_estimator`` (a key of :data:`GRADIENT_ESTIMATORS`) chooses how the encoder
    gradient of E_q[log p(x|z)] is estimated; the values, and so the reported ELBO, are the
    same Monte Carlo estimates whichever is chosen."""
    q_z = model.encoder(x)
    p_z = model.prior()
    terms = elbo_samples(model, x, num_samples, gradient_estimator, q_z=q_z, p_z=p_z).terms()
    kl = terms.kl  # [B]
    if free_bits > 0:
        per_dim = kl_per_dim(q_z, p_z)
        if per_dim is not None:
            kl_penalty = per_dim.mean(0).clamp(min=free_bits).sum()
        else:  # no per-dimension split: apply the floor to the total, scaled by L
            kl_penalty = kl.mean().clamp(min=free_bits * q_z.event_shape[-1])
    else:
        kl_penalty = kl.mean()
    loss = -terms.reconstruction.mean() + beta * kl_penalty
    return loss, terms


def _reported_elbo(model, x, q_z, z, terms: WeightTerms) -> ElboTerms:
    """The ELBO terms from the same draws, for reporting next to an IWAE loss."""
    with torch.no_grad():
        return ElboSamples(terms.log_px_z, kl_samples(q_z, model.prior(), z, terms.log_qz)).terms()


def iwae_loss(
    model, x: torch.Tensor, *, beta: float = 1.0, free_bits: float = 0.0, num_samples: int = 1,
    gradient_estimator: str = "reparameterization",
) -> tuple[torch.Tensor, ElboTerms]:
    """loss = -mean_B IWAE_K(x), IWAE_K(x) = log (1/K) sum_k w_k (Burda et al. 2016); the
    gradient is sum_k w~_k d log w_k with normalized weights w~_k. K = 1 is the ELBO with a
    Monte Carlo KL. Returns the loss and the ELBO terms of the same draws for reporting."""
    q_z = model.encoder(x)
    z = q_z.rsample((num_samples,))  # [K, B, L]
    terms = weight_terms(model, x, q_z, z)
    return -log_mean_exp(terms.log_w).mean(), _reported_elbo(model, x, q_z, z, terms)


def iwae_dreg_loss(
    model, x: torch.Tensor, *, beta: float = 1.0, free_bits: float = 0.0, num_samples: int = 1,
    gradient_estimator: str = "reparameterization",
) -> tuple[torch.Tensor, ElboTerms]:
    """loss = -mean_B IWAE_K(x) with the doubly reparameterized encoder gradient (Tucker et al.
    2019); same value and same expected gradient as :func:`iwae_loss`, lower encoder gradient
    variance. See :func:`iwae_dreg_surrogate` for the formula."""
    bound, terms, q_z, z = iwae_dreg_surrogate(model, x, num_samples)
    return -bound.mean(), _reported_elbo(model, x, q_z, z, terms)


# objective name (config train.objective) -> loss function (model, x, *, beta, free_bits,
# num_samples) -> (scalar loss, per-example ELBO terms for reporting)
OBJECTIVES = {
    "elbo": elbo_loss,
    "iwae": iwae_loss,
    "iwae-dreg": iwae_dreg_loss,
}


def training_loss(
    model, x: torch.Tensor, *, objective: str = "elbo", beta: float = 1.0,
    free_bits: float = 0.0, num_samples: int = 1, gradient_estimator: str = "reparameterization",
) -> tuple[torch.Tensor, ElboTerms]:
    """The scalar loss of ``objective`` (a name in :data:`OBJECTIVES`) and the per-example ELBO
    terms for reporting. ``elbo``: see :func:`elbo_loss`; ``iwae``: :func:`iwae_loss`;
    ``iwae-dreg``: :func:`iwae_dreg_loss`."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective '{objective}' (valid: {', '.join(OBJECTIVES)})")
    if objective != "elbo" and (beta != 1.0 or free_bits > 0
                                or gradient_estimator != "reparameterization"):
        # the same rule as vaekit.config.TrainConfig, for callers that skip the config
        raise ConfigError(f"--objective {objective} optimises the IWAE bound itself with "
                          "reparameterized gradients: --beta, --kl-warmup, --free-bits and "
                          "--gradient-estimator apply to --objective elbo only")
    return OBJECTIVES[objective](model, x, beta=beta, free_bits=free_bits,
                                 num_samples=num_samples, gradient_estimator=gradient_estimator)


def config_errors(model, train, data) -> str | None:
    """What is wrong with the objective's options in the config sections ``model``, ``train``,
    ``data`` (a one-line message), or None: the objectives' rules, which config validation
    collects (:class:`vaekit.config.RunConfig`)."""
    if train.objective != "elbo" and (train.beta != 1.0 or train.kl_warmup_epochs > 0
                                      or train.free_bits > 0):
        return (f"objective '{train.objective}' optimises the IWAE bound itself; beta, "
                "kl_warmup_epochs and free_bits apply to the ELBO only")
    if train.objective != "elbo" and train.gradient_estimator != "reparameterization":
        return (f"objective '{train.objective}' uses reparameterized gradients; "
                "gradient_estimator (--gradient-estimator) applies to objective 'elbo' only")
    if train.gradient_estimator == "score-baseline" and train.num_samples < 2:
        return ("gradient_estimator 'score-baseline' subtracts a leave-one-out mean over "
                "samples: use --num-samples 2 or more (num_samples in a config)")
    posterior = model.posterior
    if train.objective == "iwae-dreg" and not POSTERIORS[posterior].detachable:
        valid = [n for n, cls in POSTERIORS.items() if cls.detachable]
        return (f"objective 'iwae-dreg' evaluates q(z|x) with its parameters detached, which "
                f"posterior '{posterior}' (learned transforms) cannot; use objective 'iwae' or "
                f"posterior {' or '.join(valid)}")
    return None
