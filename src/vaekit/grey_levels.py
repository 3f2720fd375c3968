"""Likelihoods of quantized grey levels: p(x|z) over integer levels k in {0, ..., n - 1} (uint8
in memory for 8-bit data; the encoder sees k / (n - 1)). Their log p(x) is a log-probability,
so -log p(x) / (D ln 2) is bits per dimension of the data (``discrete = True``).

The distributions per dimension, the discretized logistic (Salimans et al. 2017, Kingma et al.
2016) and an n-way categorical over the levels (van den Oord et al. 2016), and the decoders that
return them: :class:`DiscretizedLogisticLikelihood`, its mixture, :class:`CategoricalLikelihood`.
All are registered in :data:`vaekit.likelihoods.LIKELIHOODS`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (Categorical, Distribution, Independent, MixtureSameFamily,
                                 constraints)
from torch.distributions.utils import broadcast_all, lazy_property

from .errors import DataError

# Floor of the logistic's log-scale in the units where the data span [-1, 1] (PixelCNN++ uses
# -7: a scale of 9e-4, a quarter of an 8-bit bin's half-width), and a ceiling (a scale of 1100,
# far wider than the data's range) so that extreme network outputs give a finite scale in
# float32. Both are smooth, log_scale = floor + softplus(ceiling - softplus(ceiling - raw) -
# floor): never below the floor, the ceiling to within 1e-6, about the identity between them,
# and gradients everywhere.
LOG_SCALE_FLOOR = -7.0
LOG_SCALE_CEILING = 7.0


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - e^-d) for d > 0, accurate for small and large d (Maechler 2012): log(-expm1(-d))
    below log 2, log1p(-e^-d) above. Each branch gets an argument clamped to its own range, so
    the branch torch.where discards has a finite gradient too."""
    tiny = torch.finfo(d.dtype).tiny
    small = d.clamp(min=tiny, max=math.log(2))
    large = d.clamp(min=math.log(2))
    return torch.where(d < math.log(2), torch.log(-torch.expm1(-small)),
                       torch.log1p(-torch.exp(-large)))


class DiscretizedLogistic(Distribution):
    """P(x = k) for k in {0, ..., n - 1}: the mass that a logistic(loc, scale) puts on bin k of
    [-1, 1], whose centre is c_k = -1 + 2k / (n - 1) and half-width h = 1 / (n - 1); the edge bins
    take the tails (Salimans et al. 2017, Kingma et al. 2016):

        P(0) = sigmoid(a_0),  P(n-1) = 1 - sigmoid(b_{n-1}),  P(k) = sigmoid(a_k) - sigmoid(b_k)
        a_k = (c_k + h - loc) / scale,  b_k = (c_k - h - loc) / scale.

    Computed in log space without cancellation: sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b)
    (1 - e^-(a - b)), so log P(k) = logsigmoid(a) + logsigmoid(-b) + log1mexp(a - b), exact for
    any loc (inside or far outside [-1, 1]) and any scale; only where a - b = 2h / scale is 0 in
    floating point (a scale beyond ~1e38 h, or a and b rounding to one number) the mid-bin value
    log(2h) + log density(c_k) is used.

    ``loc``, ``scale``: any broadcastable shapes (the batch shape); ``num_bins`` = n >= 2.
    Values are integer levels (any dtype); ``sample`` returns them as floats."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_enumerate_support = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, num_bins: int,
                 validate_args: bool | None = None) -> None:
        self.loc, self.scale = broadcast_all(loc, scale)
        self.num_bins = int(num_bins)
        if self.num_bins < 2:
            raise ValueError(f"num_bins must be at least 2, got {num_bins}")
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.num_bins - 1)

    @property
    def half_width(self) -> float:
        return 1.0 / (self.num_bins - 1)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.num_bins = self.num_bins
        super(DiscretizedLogistic, new).__init__(torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        h = self.half_width
        k = value.to(self.loc.dtype)
        inv_scale = self.scale.reciprocal()
        # the edges as one expression of the level, so bin k's upper edge is bin k+1's lower
        # edge to the last bit and the masses of neighbouring bins add up exactly
        a = ((2 * k + 1) * h - 1 - self.loc) * inv_scale
        b = ((2 * k - 1) * h - 1 - self.loc) * inv_scale
        width = a - b  # 2h / scale, as the rounded a and b see it
        log_cdf_a, log_sf_b = F.logsigmoid(a), F.logsigmoid(-b)  # log P(y < a), log P(y > b)
        interior = log_cdf_a + log_sf_b + log1mexp(width)
        if not bool((width > 0).all()):  # only where 2h / scale underflows: the mid-bin value
            u = ((2 * k * h - 1) - self.loc) * inv_scale
            mid_bin = math.log(2 * h) - u - 2 * F.softplus(-u) - torch.log(self.scale)
            interior = torch.where(width > 0, interior, mid_bin)
        last = self.num_bins - 1
        return torch.where(k <= 0, log_cdf_a, torch.where(k >= last, log_sf_b, interior))

    def cdf_above(self, k: int) -> torch.Tensor:
        """P(x >= k) = 1 - sigmoid(b_k) = sigmoid(-b_k)."""
        h = self.half_width
        return torch.sigmoid((self.loc - ((2 * k - 1) * h - 1)) / self.scale)

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = sum_{k=1}^{n-1} P(x >= k), in levels (one pass per level: memory of one
        batch-shaped tensor)."""
        total = torch.zeros_like(self.loc)
        for k in range(1, self.num_bins):
            total = total + self.cdf_above(k)
        return total

    @property
    def mode(self) -> torch.Tensor:
        return ((self.loc.clamp(-1, 1) + 1) / (2 * self.half_width)).round()

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """k = the bin of y = loc + scale * logit(u), u ~ U(0, 1): round((y + 1) / 2h), clamped to
        {0, ..., n - 1} (the edge bins hold the tails)."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            eps = torch.finfo(self.loc.dtype).eps
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(eps, 1 - eps)
            y = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return torch.floor((y + 1) / (2 * self.half_width) + 0.5).clamp(0, self.num_bins - 1)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        values = torch.arange(self.num_bins, dtype=self.loc.dtype, device=self.loc.device)
        values = values.view((-1,) + (1,) * len(self.batch_shape))
        return values.expand((-1,) + self.batch_shape) if expand else values


class LevelCategorical(Categorical):
    """An n-way categorical over the levels {0, ..., n - 1} of one pixel: torch's Categorical
    with the mean of the levels as numbers, E[x] = sum_k k p_k (the picture of a sample; torch's
    Categorical has no mean), and a faster ``log_prob``.

    The logits are kept as given, not normalised up front as torch's Categorical does, and
    ``log_prob`` is torch's fused cross-entropy (log-softmax and pick in one kernel, and one in
    the backward pass): the MNIST default decoder's forward and backward (network, head and
    log-likelihood, batch 128, one CPU thread) took 1.6 times less than with torch's
    normalise-then-gather (``benchmarks/categorical_logprob.py``). The
    normalised ``logits`` and ``probs`` are computed when asked for (sampling, the mean)."""

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None) -> None:
        self._raw_logits = logits
        self._param = logits
        self._num_events = logits.size(-1)
        Distribution.__init__(self, logits.size()[:-1], validate_args=validate_args)

    @lazy_property
    def logits(self) -> torch.Tensor:
        return self._raw_logits - self._raw_logits.logsumexp(-1, keepdim=True)

    @lazy_property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self._raw_logits, -1)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return LevelCategorical(self._raw_logits.expand(*batch_shape, self._num_events),
                                validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        levels = torch.arange(self._num_events, dtype=self.probs.dtype, device=self.probs.device)
        return self.probs @ levels

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        logits = self._raw_logits.expand(*shape, self._num_events).reshape(-1, self._num_events)
        target = value.long().expand(shape).reshape(-1)
        return -F.cross_entropy(logits, target, reduction="none").view(shape)


def bounded_log_scale(raw: torch.Tensor) -> torch.Tensor:
    """The network's raw output as a log-scale between :data:`LOG_SCALE_FLOOR` and
    :data:`LOG_SCALE_CEILING` (smoothly; about ``raw`` in between)."""
    below_ceiling = LOG_SCALE_CEILING - F.softplus(LOG_SCALE_CEILING - raw)
    return LOG_SCALE_FLOOR + F.softplus(below_ceiling - LOG_SCALE_FLOOR)


class _DiscreteLikelihood(nn.Module):
    """p(x|z) = prod_d P(x_d | params_d(z)) over levels x_d in {0, ..., n - 1}: the network maps
    ``z [..., L]`` to ``params_per_dim`` numbers per data dimension (laid out as
    ``[..., P * C, H, W]``: P blocks of the data's channels; ``[..., P * D]`` for vectors)."""

    discrete = True
    support = "integer levels 0 .. n - 1"

    def __init__(self, net: nn.Module, data_shape: Sequence[int], num_bins: int,
                 num_components: int = 10) -> None:
        super().__init__()
        self.net = net
        self.data_shape = tuple(data_shape)
        self.num_bins = int(num_bins)
        self.num_components = int(num_components)

    @classmethod
    def params_per_dim(cls, num_bins: int, num_components: int) -> int:
        raise NotImplementedError

    def net_output(self, z: torch.Tensor) -> torch.Tensor:
        """The network's output, in float32 at least: under 16-bit autocast a location would be
        rounded to about 1/128 of the range, half an 8-bit bin."""
        out = self.net(z)
        return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out

    def params(self, z: torch.Tensor) -> torch.Tensor:
        """The network's output as ``[..., *data_shape, P]``."""
        out = self.net_output(z)
        batch = out.shape[: out.dim() - len(self.data_shape)]
        p = self.params_per_dim(self.num_bins, self.num_components)
        out = out.reshape(*batch, p, *self.data_shape)
        return out.movedim(len(batch), -1).contiguous()

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Levels as grey values in [0, 1]: k / (n - 1) (for pictures)."""
        return x.float() / (self.num_bins - 1)

    def check_support(self, x: torch.Tensor) -> None:
        n = self.num_bins
        if x.is_floating_point() and not bool((x == x.round()).all()):
            raise DataError(f"this likelihood models integer levels 0..{n - 1} but the data are "
                            "not integers; give the data set's grey levels (or use --bits N)")
        if len(x) and not bool(((x >= 0) & (x <= n - 1)).all()):
            raise DataError(f"this likelihood models levels 0..{n - 1} but the data hold values "
                            f"up to {float(x.max()):g}; use --bits to set the number of levels")


class DiscretizedLogisticLikelihood(_DiscreteLikelihood):
    """p(x|z) = prod_d DiscretizedLogistic(x_d; mu_d(z), s_d(z)) over n levels, with a location
    and a log-scale per dimension from the network, the log-scale above a smooth floor
    (:data:`LOG_SCALE_FLOOR`; :func:`bounded_log_scale`), as in Kingma et al. 2016 (IAF) and
    Salimans et al. 2017."""

    @classmethod
    def params_per_dim(cls, num_bins: int, num_components: int) -> int:
        return 2

    def forward(self, z: torch.Tensor) -> Distribution:
        params = self.params(z)
        loc, log_scale = params[..., 0], bounded_log_scale(params[..., 1])
        per_dim = DiscretizedLogistic(loc, log_scale.exp(), self.num_bins, validate_args=False)
        return Independent(per_dim, len(self.data_shape), validate_args=False)


class DiscretizedLogisticMixtureLikelihood(_DiscreteLikelihood):
    """p(x|z) = prod_d sum_j pi_dj(z) DiscretizedLogistic(x_d; mu_dj(z), s_dj(z)): a mixture of
    ``num_components`` discretized logistics per pixel and channel (Salimans et al. 2017). The
    channels of a colour image are modelled independently given z, not with PixelCNN++'s
    linear dependence of a pixel's green and blue means on its red and green values."""

    @classmethod
    def params_per_dim(cls, num_bins: int, num_components: int) -> int:
        return 3 * num_components

    def forward(self, z: torch.Tensor) -> Distribution:
        out = self.net_output(z)  # [..., 3 * J * C, H, W]: logits, locations, log-scales
        batch = out.shape[: out.dim() - len(self.data_shape)]
        out = out.reshape(*batch, 3, self.num_components, *self.data_shape)
        logits, loc, raw_scale = (out.select(len(batch), i).movedim(len(batch), -1).contiguous()
                                  for i in range(3))  # each [..., *data, J]
        scale = bounded_log_scale(raw_scale).exp()
        mixture = MixtureSameFamily(
            Categorical(logits=logits, validate_args=False),
            DiscretizedLogistic(loc, scale, self.num_bins, validate_args=False),
            validate_args=False)
        return Independent(mixture, len(self.data_shape), validate_args=False)


# Features per data dimension that the categorical likelihood's network outputs; a linear map
# shared by all pixels turns them into n logits (plus a learned logit bias per pixel and level),
# so the output layer is not n = 256 times the size of the image.
CATEGORICAL_FEATURES = 16


class CategoricalLikelihood(_DiscreteLikelihood):
    """p(x|z) = prod_d softmax(l_d(z))[x_d]: an n-way categorical per pixel and channel (n = 256
    for 8-bit data; van den Oord et al. 2016), logits l_d = W f_d(z) + b_d from
    :data:`CATEGORICAL_FEATURES` features f_d per dimension, W shared, b_d per dimension."""

    def __init__(self, net: nn.Module, data_shape: Sequence[int], num_bins: int,
                 num_components: int = 10) -> None:
        super().__init__(net, data_shape, num_bins, num_components)
        self.head = nn.Linear(CATEGORICAL_FEATURES, self.num_bins)
        self.logit_bias = nn.Parameter(torch.zeros(*self.data_shape, self.num_bins))

    @classmethod
    def params_per_dim(cls, num_bins: int, num_components: int) -> int:
        return CATEGORICAL_FEATURES

    def forward(self, z: torch.Tensor) -> Distribution:
        with torch.autocast(z.device.type, enabled=False):  # the logits in float32
            logits = self.head(self.params(z)) + self.logit_bias
        per_dim = LevelCategorical(logits=logits, validate_args=False)
        return Independent(per_dim, len(self.data_shape), validate_args=False)
