"""Decoders returning the likelihood p(x|z) over a whole example as a ``torch.distributions``
object: ``decoder(z)`` has batch shape ``z.shape[:-1]`` and event shape ``data_shape``, so
``decoder(z).log_prob(x)`` is already summed over all data dimensions (``Independent``).

Each likelihood also states its support (``check_support``) so grey-level data under a
Bernoulli likelihood is refused instead of silently scored.

Discrete likelihoods (``discrete = True``) give probabilities of the data's levels, so their
log p(x) is a log-probability and -log p(x) / (D ln 2) is bits per dimension of the data: the
Bernoulli on binary data, and for quantized grey levels k in {0, ..., n - 1} (integers, uint8 in
memory; the encoder sees k / (n - 1)) the discretized logistic (Salimans et al. 2017, Kingma et
al. 2016), its mixture, and a per-pixel n-way categorical (van den Oord et al. 2016), which live
in :mod:`vaekit.grey_levels`. This module holds the continuous and binary likelihoods and the
registry of all of them, :data:`LIKELIHOODS` (the table likelihood is :mod:`vaekit.tables`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, ContinuousBernoulli, Distribution, Independent, Normal

from .errors import DataError
from .grey_levels import (CATEGORICAL_FEATURES, LOG_SCALE_CEILING,  # noqa: F401 (re-exported)
                          LOG_SCALE_FLOOR, CategoricalLikelihood, DiscretizedLogistic,
                          DiscretizedLogisticLikelihood, DiscretizedLogisticMixtureLikelihood,
                          LevelCategorical, _DiscreteLikelihood, bounded_log_scale, log1mexp)
from .tables import TableLikelihood


class _LogitsLikelihood(nn.Module):
    """p(x|z) = prod_d D(x_d; logits_d(z)) for a one-parameter family D taking ``logits``
    (``distribution``); the network maps ``z [..., L] -> logits [..., *data_shape]``. The
    per-dimension factors are summed over the data axes by ``independent`` (an ``Independent``
    or a subclass computing ``log_prob`` faster)."""

    distribution: type[Distribution]
    independent: type[Independent] = Independent

    def __init__(self, net: nn.Module, data_shape: Sequence[int]) -> None:
        super().__init__()
        self.net = net
        self.data_shape = tuple(data_shape)

    def forward(self, z: torch.Tensor) -> Distribution:
        per_dim = self.distribution(logits=self.net(z), validate_args=False)
        return self.independent(per_dim, len(self.data_shape), validate_args=False)


class IndependentBernoulli(Independent):
    """``Independent(Bernoulli(logits=l), n)`` with log p(x) = sum_d [x_d l_d - softplus(l_d)]
    (= -binary cross-entropy with logits; softplus(l) = log(1 + e^l) is computed stably).

    The same distribution as torch's composition; only ``log_prob`` is computed differently,
    because it dominates the importance-sampled log p(x): torch's ``Bernoulli.log_prob`` first
    expands x to the logits' shape ([K, B, D] for K samples) and runs BCE in several passes over
    that tensor. Here x . l is one contraction that broadcasts x over the sample axes without
    expanding it, and softplus is one pass: 1.75 vs 2.7 ms for K = 1667 samples of 784 pixels
    on a 2-core CPU (benchmarks/run.py measures the whole evaluation)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        n = self.reinterpreted_batch_ndims
        logits = self.base_dist.logits.flatten(-n) if n else self.base_dist.logits.unsqueeze(-1)
        value = value.flatten(-n) if n else value.unsqueeze(-1)
        if logits.numel() >= 64 * value.numel():
            # x shared by many samples: a batched matrix-vector product, x never expanded
            # (einsum's batched product is slow for few samples per x, as in training); in
            # float32 even under autocast, which would run it in 16 bits
            with torch.autocast(logits.device.type, enabled=False):
                x_dot_l = torch.einsum("...d,...d->...", logits, value.to(logits.dtype))
        else:
            x_dot_l = (logits * value).sum(-1)
        return x_dot_l - F.softplus(logits).sum(-1)


class BernoulliLikelihood(_LogitsLikelihood):
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits_d(z))); ``log_prob`` is
    sum_d [x_d l_d - softplus(l_d)], minus binary cross-entropy with logits, the numerically
    stable form (:class:`IndependentBernoulli`)."""

    distribution = Bernoulli
    independent = IndependentBernoulli
    support = "binary values {0, 1}"
    discrete = True  # probabilities of the data's two levels: bits/dim of binary data

    @staticmethod
    def check_support(x: torch.Tensor) -> None:
        if not bool(((x == 0) | (x == 1)).all()):
            raise DataError(
                "the Bernoulli likelihood needs binary data but got values strictly between 0 "
                "and 1; use --binarize dynamic (or static), or --likelihood continuous-bernoulli "
                "or gaussian for grey levels"
            )


class ContinuousBernoulliLikelihood(_LogitsLikelihood):
    """p(x|z) = prod_d CB(x_d; lambda_d(z)) for x in [0, 1], the properly normalised
    counterpart of BCE on grey levels (Loaiza-Ganem & Cunningham 2019)."""

    distribution = ContinuousBernoulli
    support = "values in [0, 1]"

    @staticmethod
    def check_support(x: torch.Tensor) -> None:
        if not bool(((x >= 0) & (x <= 1)).all()):
            raise DataError(
                "the continuous Bernoulli likelihood needs values in [0, 1]; rescale the data "
                "or use --likelihood gaussian"
            )


class GaussianLikelihood(nn.Module):
    """p(x|z) = prod_d N(x_d; m_d + s_d mu_d(z), (s_d sigma_d)^2) with sigma fixed, or learned as
    one global scale or one per data dimension: sigma = min_scale + softplus(raw), so it never
    falls below the floor ``min_scale`` (a learned scale can otherwise shrink towards 0 and make
    the density unbounded).

    ``m, s`` (buffers ``data_loc``, ``data_scale``; 0 and 1 unless the data is standardized) map
    the network's standardized output back to the data's units, so ``log_prob`` is always the
    density of x itself (the log-Jacobian -sum log s is included)."""

    support = "finite real values"
    SCALE_MODES = ("fixed", "learned-global", "learned-per-dim")

    def __init__(
        self,
        net: nn.Module,
        data_shape: Sequence[int],
        scale_mode: str = "learned-global",
        init_scale: float = 1.0,
        min_scale: float = 1e-3,
    ) -> None:
        super().__init__()
        self.net = net
        self.data_shape = tuple(data_shape)
        self.scale_mode = scale_mode
        self.min_scale = min_scale
        self.register_buffer("data_loc", torch.zeros(self.data_shape))
        self.register_buffer("data_scale", torch.ones(self.data_shape))
        if scale_mode == "fixed":
            self.register_buffer("fixed_scale", torch.tensor(float(init_scale)))
        else:
            shape = () if scale_mode == "learned-global" else self.data_shape
            # softplus^-1(init - floor), so the initial scale is exactly init_scale
            raw = math.log(math.expm1(max(init_scale - min_scale, 1e-6)))
            self.raw_scale = nn.Parameter(torch.full(shape, raw))

    def scale(self) -> torch.Tensor:
        if self.scale_mode == "fixed":
            return self.fixed_scale
        return self.min_scale + F.softplus(self.raw_scale)

    def forward(self, z: torch.Tensor) -> Distribution:
        loc = self.data_loc + self.data_scale * self.net(z)
        scale = self.data_scale * self.scale()
        return Independent(Normal(loc, scale, validate_args=False), len(self.data_shape),
                           validate_args=False)

    @staticmethod
    def check_support(x: torch.Tensor) -> None:
        if not bool(torch.isfinite(x).all()):
            raise DataError("the data contains NaN or infinite values; clean them first")


LIKELIHOODS: dict[str, type[nn.Module]] = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "continuous-bernoulli": ContinuousBernoulliLikelihood,
    "discretized-logistic": DiscretizedLogisticLikelihood,
    "discretized-logistic-mixture": DiscretizedLogisticMixtureLikelihood,
    "categorical": CategoricalLikelihood,
    "table": TableLikelihood,  # mixed-type columns with missing values (vaekit.tables)
}


def is_discrete(name: str) -> bool:
    """Whether likelihood ``name`` gives probabilities of levels (a bits/dim of the data)."""
    return bool(getattr(LIKELIHOODS.get(name), "discrete", False))


def needs_levels(name: str) -> bool:
    """Whether likelihood ``name`` models quantized grey levels (integer data, n bins)."""
    cls = LIKELIHOODS.get(name)
    return isinstance(cls, type) and issubclass(cls, _DiscreteLikelihood)


def model_errors(model) -> str | None:
    """The grey-level likelihoods' rules on the model options (collected by config
    validation)."""
    if model.likelihood != "auto" and not needs_levels(model.likelihood) \
            and model.levels is not None:
        return (f"levels applies to the discrete grey-level likelihoods; likelihood "
                f"'{model.likelihood}' is not one")
    if needs_levels(model.likelihood) and model.standardize:
        return (f"likelihood '{model.likelihood}' models integer levels, which are not "
                "standardized (the encoder sees them scaled to [0, 1])")
    return None
