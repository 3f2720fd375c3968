"""Monte Carlo estimates with their standard errors: streaming moments of per-sample
estimates (:class:`MomentAccumulator`), the standard error of a sample variance from the fourth
central moment (:func:`variance_of_sample_variance`), per-parameter summaries of a gradient
estimator (:class:`GradientStats`) and the ratio of two measured variances with its
delta-method error (:func:`variance_ratio`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# -- moments ------------------------------------------------------------------------------

def variance_of_sample_variance(fourth_moment: torch.Tensor, variance: torch.Tensor,
                                num_samples: int) -> torch.Tensor:
    """Var(s^2) ~= (m4 - (S - 3) / (S - 1) s^4) / S for the unbiased sample variance s^2 of S
    independent draws, m4 = (1/S) sum_s (g_s - mean g)^4 the sample fourth central moment: the
    exact Var(s^2) = (mu4 - (S - 3) / (S - 1) sigma^4) / S with mu4 and sigma^2 replaced by
    their estimates (never negative: m4 >= ((S - 1) / S)^2 s^4 > (S - 3) / (S - 1) s^4)."""
    size = num_samples
    return ((fourth_moment - (size - 3) / (size - 1) * variance**2) / size).clamp(min=0)


class MomentAccumulator:
    """Streaming first four moments of per-sample estimates ``[S, P]`` that arrive in blocks of
    rows, in ``O(P)`` memory: per-parameter sums of (g - c)^k, k = 1..4, and one scalar per
    draw, ||g_s - c||^2, from which :meth:`stats` gives every mean and variance with its
    standard error.

    The shift c (``shift``, else the mean of the first ``pilot_rows`` rows, held back until that
    many have arrived) keeps the power sums free of cancellation: the per-parameter moments are
    exact algebra for any c. The standard error of the parameter-averaged variance uses
    ||g_s - c||^2 in place of ||g_s - mean g||^2 (the exact mean is known only at the end); that
    adds 4 m^T Sigma m to the variance of ||g_s - .||^2, m = mean g - c, which for a pilot of C
    rows is about 2 / C of it for Gaussian-like g (about 3% at C = 64, so ~1.5% on the standard
    error, on average too large rather than too small), less for heavy-tailed g; a given
    ``shift`` equal to the sample mean (as in :meth:`GradientStats.of`) makes it exact. Combining
    the per-parameter standard errors instead would need the correlations between parameters:
    as if independent it understates the score function's 2-3 times (measured on the linear
    VAE of the tests), the sum of the per-parameter ones (an upper bound) overstates it ~1.4x."""

    def __init__(self, shift: torch.Tensor | None = None, pilot_rows: int = 64,
                 block_elements: int = 2**21, max_block_rows: int = 65536):
        self.shift = None if shift is None else shift.detach().double().flatten()
        self.pilot_rows = pilot_rows
        self.block_elements, self.max_block_rows = block_elements, max_block_rows
        self._pending: list[torch.Tensor] = []  # the pilot rows, until the shift is known
        self._num_pending = 0
        self._buffer: torch.Tensor | None = None  # [R, P] float64 rows awaiting processing
        self._filled = 0
        self.num_samples = 0
        self.sums: list[torch.Tensor] | None = None  # sum (g - c)^k, k = 1..4
        self._sq_norms: list[torch.Tensor] = []  # ||g_s - c||^2, one per draw

    def add(self, block: torch.Tensor) -> None:
        """Rows ``[C, P]`` (any float dtype; accumulated in float64)."""
        block = block.detach().reshape(len(block), -1)
        if self.shift is None:
            self._pending.append(block)
            self._num_pending += len(block)
            if self._num_pending >= self.pilot_rows:
                self._flush_pilot()
            return
        self._stage(block)

    def _flush_pilot(self) -> None:
        pilot, self._pending, self._num_pending = torch.cat(self._pending), [], 0
        self.shift = pilot.double().mean(0)
        self._stage(pilot)

    def _stage(self, block: torch.Tensor) -> None:
        # rows are copied into a preallocated float64 block of at most block_elements (16 MiB)
        # and processed in place when it is full: no allocation per row (a 1-row block of a
        # large P would otherwise cost a fresh mmap for every temporary)
        if self._buffer is None:
            size = self.shift.numel()
            rows = max(1, min(self.block_elements // size, self.max_block_rows))
            self._buffer = torch.empty(rows, size, dtype=torch.float64)
            self._work = torch.empty_like(self._buffer)
            self._ones = torch.ones(rows, dtype=torch.float64)
            self.sums = [torch.zeros_like(self.shift) for _ in range(4)]
        start = 0
        while start < len(block):
            take = min(len(self._buffer) - self._filled, len(block) - start)
            self._buffer[self._filled : self._filled + take].copy_(block[start : start + take])
            self._filled += take
            start += take
            if self._filled == len(self._buffer):
                self._process()

    def _process(self) -> None:
        rows, self._filled = self._filled, 0
        if rows == 0:
            return
        y, y2, ones = self._buffer[:rows], self._work[:rows], self._ones[:rows]
        y.sub_(self.shift)
        torch.mul(y, y, out=y2)
        self.sums[0].addmv_(y.T, ones)  # sum over rows, in place
        self.sums[1].addmv_(y2.T, ones)
        self._sq_norms.append(y2.sum(1))
        y.mul_(y2)  # (g - c)^3
        self.sums[2].addmv_(y.T, ones)
        torch.mul(y2, y2, out=y)  # (g - c)^4
        self.sums[3].addmv_(y.T, ones)
        self.num_samples += rows

    def stats(self, estimator: str) -> GradientStats:
        if self._pending:
            self._flush_pilot()
        self._process()
        size, (s1, s2, s3, s4) = self.num_samples, self.sums
        d = s1 / size  # mean - c
        mean = self.shift + d
        central2 = (s2 / size - d**2).clamp(min=0)  # (1/S) sum (g - mean)^2
        central4 = (s4 - 4 * d * s3 + 6 * d**2 * s2) / size - 3 * d**4
        variance = central2 * size / (size - 1)
        variance_stderr = variance_of_sample_variance(central4.clamp(min=0), variance, size).sqrt()
        # sum_p s_p^2 = (1/(S - 1)) sum_s ||g_s - mean||^2: its variance is that of the per-draw
        # ||g_s - mean||^2 (correlations between parameters included) over S; with the
        # finite-S term 2 tr(Sigma^2) / (S (S - 1)) taken from the diagonal of Sigma (P = 1: the
        # formula of variance_of_sample_variance)
        sq_norms = torch.cat(self._sq_norms)
        total = variance.sum()
        second_moment = sq_norms.var(correction=0) + (total * (size - 1) / size) ** 2
        total_var = (second_moment - total**2 + 2 * (variance**2).sum() / (size - 1)) / size
        average_stderr = float(total_var.clamp(min=0).sqrt()) / mean.numel()
        return GradientStats(estimator, mean, variance, size, variance_stderr, average_stderr)


@dataclass
class GradientStats:
    """Per-parameter mean and variance ``[P]`` of the per-sample estimates of one estimator,
    with their standard errors: ``mean_stderr`` = sqrt(variance / S) and ``variance_stderr``
    from the fourth central moment (:func:`variance_of_sample_variance`), both per parameter,
    and ``average_variance_stderr``, the standard error of ``variance.mean()`` with the
    correlations between parameters included (see :class:`MomentAccumulator`). All treat the
    S estimates as independent: for the leave-one-out baseline they are weakly correlated
    (Cov / Var ~ 1 / S^2, see :meth:`ToyProblem.exact_variance_of_mean`). The standard error of a
    variance rests on a fourth moment, which heavy-tailed estimates (the score function: kurtosis
    42 on the toy problem) measure poorly at small S: the reported Var of the variance estimate
    is right on average, but a single report's stderr is then typically too small (on the toy
    at S = 1000 the spread over repeats is ~10% above the mean reported stderr, 1% above its
    root mean square; at S = 100, ~40%)."""

    estimator: str
    mean: torch.Tensor  # [P]
    variance: torch.Tensor  # [P], unbiased sample variance of a single-sample estimate
    num_samples: int
    variance_stderr: torch.Tensor | None = None  # [P]
    average_variance_stderr: float | None = None

    @classmethod
    def of(cls, estimator: str, grads: torch.Tensor) -> GradientStats:
        """From per-sample estimates ``[S, ...]`` (flattened to ``[S, P]``)."""
        flat = grads.reshape(len(grads), -1).double()
        moments = MomentAccumulator(shift=flat.mean(0))
        moments.add(flat)
        return moments.stats(estimator)

    @property
    def mean_stderr(self) -> torch.Tensor:
        """Standard error sqrt(Var g / S) of each parameter's mean ``[P]``."""
        return (self.variance / self.num_samples).sqrt()

    @property
    def snr(self) -> torch.Tensor:
        """|E g| / std(g) per parameter (of one sample; the S-sample mean has sqrt(S) times
        this); NaN where the estimate is always 0 (e.g. weights of a dead unit)."""
        std = self.variance.sqrt()
        return torch.where(std > 0, self.mean.abs() / std, torch.nan)

    def summary(self) -> dict:
        """Scalars for one parameter: ``mean``, ``variance``, their ``mean_stderr`` and
        ``variance_stderr``, ``snr``. For many, averages over parameters: ``mean_abs`` (mean
        |E g|), ``mean_stderr`` (mean over parameters of each one's stderr of E g: how finely
        the means are resolved, to compare with ``mean_abs``; not a stderr of ``mean_abs``),
        ``variance`` (mean variance) with ``variance_stderr`` (its standard error),
        ``variance_stderr_per_parameter`` (mean over parameters of each one's stderr of its
        variance), ``snr`` (mean SNR) and ``snr_median``. Stderr entries are left out when
        not known (stats built by hand)."""
        if self.mean.numel() == 1:
            out = {"mean": float(self.mean), "mean_stderr": float(self.mean_stderr),
                   "variance": float(self.variance)}
            if self.variance_stderr is not None:
                out["variance_stderr"] = float(self.variance_stderr)
            return {**out, "snr": float(self.snr), "num_samples": self.num_samples}
        snr = self.snr[~self.snr.isnan()]
        out = {"mean_abs": float(self.mean.abs().mean()),
               "mean_stderr": float(self.mean_stderr.mean()),
               "variance": float(self.variance.mean())}
        if self.average_variance_stderr is not None:
            out["variance_stderr"] = self.average_variance_stderr
        if self.variance_stderr is not None:
            out["variance_stderr_per_parameter"] = float(self.variance_stderr.mean())
        return {**out, "snr": float(snr.mean()), "snr_median": float(snr.median()),
                "num_parameters": self.mean.numel(), "num_samples": self.num_samples}


def variance_ratio(numerator: dict, denominator: dict) -> dict:
    """Ratio r = V1 / V2 of two independently measured variances (``summary()`` dicts with
    ``variance`` and ``variance_stderr``), with its delta-method standard error
    r * sqrt((se1 / V1)^2 + (se2 / V2)^2) and the 95% interval r * exp(+-1.96 of that relative
    error) (delta method on log r, so it stays positive and is skewed the way the ratio is):
    ``{ratio, stderr, interval: [low, high]}``."""
    ratio = numerator["variance"] / denominator["variance"]
    rel = math.hypot(numerator["variance_stderr"] / numerator["variance"],
                     denominator["variance_stderr"] / denominator["variance"])
    return {"ratio": ratio, "stderr": ratio * rel,
            "interval": [ratio * math.exp(-1.96 * rel), ratio * math.exp(1.96 * rel)]}
