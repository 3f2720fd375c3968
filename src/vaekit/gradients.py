"""Gradient estimators for grad_theta E_{q_theta}[f(z)], and their measured mean and variance.

Three estimators, each giving one estimate per draw z_s so that mean and variance can be measured:

- ``reparameterization`` (pathwise): z_s = g(theta, eps_s) via ``rsample``;
  estimate grad_theta f(g(theta, eps_s)) (Kingma & Welling 2014).
- ``score_function`` (REINFORCE, Williams 1992): z_s = ``sample()``, no gradient through it;
  estimate f(z_s) grad_theta log q_theta(z_s), unbiased because E_q[grad log q] = 0.
- ``score_function_baseline``: (f(z_s) - b_s) grad_theta log q_theta(z_s) with the leave-one-out
  baseline b_s = mean_{j != s} f(z_j) (Kool, van Hoof & Welling 2019), independent of z_s
  and so unbiased.

On the toy problem q_theta = N(theta, 1), f(x) = x^2 every mean and variance has a closed form
(:class:`ToyProblem`); on a VAE the same estimators give the encoder gradient of the ELBO
(:func:`vae_encoder_gradients`). Every measured mean and variance comes with its standard error
(:class:`GradientStats`), and the variance ratio of two estimators with a delta-method one
(:func:`variance_ratio`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributions import Distribution, Normal

from .objectives import (reparameterized_terms, score_function_surrogate,
                         score_function_terms)

ESTIMATOR_NAMES = ("reparameterization", "score_function", "score_function_baseline")


# -- estimators for a parameter tensor ------------------------------------------------------

def _per_sample_copies(theta: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``[S, *theta.shape]`` copies of theta, one leaf per draw, so one backward pass gives the
    gradient of each draw's term with respect to its own copy: the per-sample estimates."""
    return theta.detach().expand(num_samples, *theta.shape).clone().requires_grad_(True)


def reparameterization_gradients(make_q: Callable[[torch.Tensor], Distribution],
                                 theta: torch.Tensor, f: Callable[[torch.Tensor], torch.Tensor],
                                 num_samples: int) -> torch.Tensor:
    """g_s = grad_theta f(z_s), z_s = q_theta.rsample(): ``[S, *theta.shape]``.

    ``make_q(theta_s)`` receives ``[S, *theta.shape]`` copies and returns a distribution whose
    draws z have the sample axis first; ``f(z)`` and ``log_prob(z)`` must have one shape
    ``[S, ...]`` (for an elementwise q such as N(theta, 1) each entry of theta is then an
    independent problem)."""
    theta_s = _per_sample_copies(theta, num_samples)
    z = make_q(theta_s).rsample()
    (grad,) = torch.autograd.grad(f(z).sum(), theta_s)
    return grad


def _score_gradients(make_q, theta, f, num_samples, baseline: bool) -> torch.Tensor:
    theta_s = _per_sample_copies(theta, num_samples)
    q = make_q(theta_s)
    z = q.sample()  # no gradient through the draw
    surrogate = score_function_surrogate(f(z), q.log_prob(z), baseline=baseline)
    (grad,) = torch.autograd.grad(surrogate.sum(), theta_s)
    return grad


def score_function_gradients(make_q, theta, f, num_samples) -> torch.Tensor:
    """g_s = f(z_s) grad_theta log q_theta(z_s), z_s = q_theta.sample(): ``[S, *theta.shape]``."""
    return _score_gradients(make_q, theta, f, num_samples, baseline=False)


def score_function_baseline_gradients(make_q, theta, f, num_samples) -> torch.Tensor:
    """g_s = (f(z_s) - b_s) grad_theta log q_theta(z_s), b_s = mean_{j != s} f(z_j) over the
    ``num_samples >= 2`` draws: ``[S, *theta.shape]``. The g_s are weakly correlated through
    the baseline (see :meth:`ToyProblem.exact_variance_of_mean`)."""
    return _score_gradients(make_q, theta, f, num_samples, baseline=True)


ESTIMATORS = {
    "reparameterization": reparameterization_gradients,
    "score_function": score_function_gradients,
    "score_function_baseline": score_function_baseline_gradients,
}


# -- summaries ------------------------------------------------------------------------------

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


# -- the toy problem ------------------------------------------------------------------------

@dataclass(frozen=True)
class ToyProblem:
    """q_theta = N(theta, 1), f(x) = x^2: E_q[f] = theta^2 + 1, gradient 2 theta.

    With x = theta + eps, eps ~ N(0, 1) and the moments E eps^2 = 1, E eps^4 = 3, E eps^6 = 15
    (odd moments 0), the per-sample estimators and their variances are:

    - pathwise: g = 2x = 2(theta + eps), Var = 4.
    - score function: grad_theta log q(x) = x - theta = eps, so g = x^2 eps
      = theta^2 eps + 2 theta eps^2 + eps^3 with E g = 2 theta and
      E g^2 = theta^4 + 4 theta^2 E eps^4 + E eps^6 + 2 * 2 theta^2 E eps^4 = theta^4 + 18 theta^2 + 15,
      so Var = theta^4 + 14 theta^2 + 15.
    - leave-one-out baseline over S draws: g_s = (f_s - b_s) eps_s. With m = E f = theta^2 + 1,
      f_s - m = 2 theta eps + eps^2 - 1, so E[(f_s - m)^2 eps^2] = 12 theta^2 + 10, and
      b_s - m is independent of eps_s with variance Var[x^2] / (S - 1) = (4 theta^2 + 2) / (S - 1):
      Var g_s = 8 theta^2 + 10 + (4 theta^2 + 2) / (S - 1). Two estimates share draws through
      their baselines: Cov(g_s, g_t) = E[f_s eps_s] E[f_t eps_t] / (S - 1)^2 = 4 theta^2 / (S - 1)^2.
      (S -> infinity gives 8 theta^2 + 10, the variance with the ideal constant baseline b = m.)

    Fourth central moments (for the standard error of a measured variance; E eps^2k = (2k - 1)!!
    up to E eps^12 = 10395, expanded by sympy): pathwise 16 E eps^4 = 48; score function
    3 theta^8 + 300 theta^6 + 5334 theta^4 + 21780 theta^2 + 10395 (kurtosis 42 at theta = 1);
    baseline, in the ideal-baseline limit S -> infinity,
    E[((2 theta eps + eps^2 - 1) eps - 2 theta)^4] = 960 theta^4 + 14496 theta^2 + 7188 (the
    leave-one-out baseline adds O(1/S)).
    """

    theta: float = 1.0

    @staticmethod
    def q(theta: torch.Tensor) -> Distribution:
        return Normal(theta, torch.ones_like(theta))

    @staticmethod
    def f(x: torch.Tensor) -> torch.Tensor:
        return x**2

    @property
    def exact_gradient(self) -> float:
        return 2 * self.theta

    def exact_variance(self, estimator: str, num_samples: int) -> float:
        """Var of one per-sample estimate g_s (for the baseline: among ``num_samples`` draws)."""
        t2 = self.theta**2
        if estimator == "reparameterization":
            return 4.0
        if estimator == "score_function":
            return t2**2 + 14 * t2 + 15
        return 8 * t2 + 10 + (4 * t2 + 2) / (num_samples - 1)

    def exact_fourth_moment(self, estimator: str) -> float:
        """E (g - E g)^4 of one per-sample estimate (for the baseline: its S -> infinity limit)."""
        t2 = self.theta**2
        if estimator == "reparameterization":
            return 48.0
        if estimator == "score_function":
            return 3 * t2**4 + 300 * t2**3 + 5334 * t2**2 + 21780 * t2 + 10395
        return 960 * t2**2 + 14496 * t2 + 7188

    def exact_variance_stderr(self, estimator: str, num_samples: int) -> float:
        """Standard deviation of the unbiased sample variance of ``num_samples`` estimates,
        sqrt((mu4 - (S - 3) / (S - 1) sigma^4) / S) (for the baseline to O(1/S): the leave-one-out
        coupling is ignored)."""
        variance = self.exact_variance(estimator, num_samples)
        size = num_samples
        return math.sqrt((self.exact_fourth_moment(estimator)
                          - (size - 3) / (size - 1) * variance**2) / size)

    def exact_variance_of_mean(self, estimator: str, num_samples: int) -> float:
        """Var of the S-sample estimate (1/S) sum_s g_s = (Var g_s + (S - 1) Cov(g_s, g_t)) / S."""
        variance = self.exact_variance(estimator, num_samples)
        if estimator == "score_function_baseline":
            variance += 4 * self.theta**2 / (num_samples - 1)
        return variance / num_samples

    def gradients(self, estimator: str, num_samples: int) -> torch.Tensor:
        """Per-sample estimates ``[S]`` (float64) of d/dtheta E_q[x^2]."""
        theta = torch.tensor(self.theta, dtype=torch.float64)
        return ESTIMATORS[estimator](self.q, theta, self.f, num_samples)


# the toy default: standard errors 0.14% (pathwise), 0.6% (score function), 0.8% (baseline) of
# the variances at theta = 1, under a second for the three estimators
TOY_SAMPLES = 1_000_000


def toy_gradients(theta: float = 1.0, num_samples: int = 10_000, seed: int = 0) -> dict[str, dict]:
    """Measured and exact mean and per-sample variance of each estimator on :class:`ToyProblem`,
    the measured ones with their standard errors: ``{name: {mean, mean_stderr, variance,
    variance_stderr, snr, num_samples, exact_mean, exact_variance, exact_variance_stderr}}``
    (``exact_variance_stderr``: the true standard deviation of the variance estimate)."""
    problem = ToyProblem(theta)
    out = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in ESTIMATOR_NAMES:
            stats = GradientStats.of(name, problem.gradients(name, num_samples))
            out[name] = {**stats.summary(), "exact_mean": problem.exact_gradient,
                         "exact_variance": problem.exact_variance(name, num_samples),
                         "exact_variance_stderr": problem.exact_variance_stderr(name, num_samples)}
    return out


def toy_variance_curve(theta: float = 1.0, sample_sizes: Sequence[int] = (2, 4, 8, 16, 32, 64, 128),
                       num_repeats: int = 2000, seed: int = 0) -> dict[str, dict[str, list]]:
    """Variance of the S-sample estimate (1/S) sum_s g_s against S, measured over
    ``num_repeats`` independent repeats and in closed form:
    ``{name: {num_samples: [...], variance: [...], exact_variance: [...]}}``."""
    problem = ToyProblem(theta)
    # R independent copies of theta: the estimators return [S, R], each column a separate run
    # (the leave-one-out baseline runs over S within a column)
    theta_r = torch.full((num_repeats,), theta, dtype=torch.float64)
    curves = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in ESTIMATOR_NAMES:
            measured = [float(ESTIMATORS[name](problem.q, theta_r, problem.f, size).mean(0).var())
                        for size in sample_sizes]
            curves[name] = {"num_samples": list(sample_sizes), "variance": measured,
                            "exact_variance": [problem.exact_variance_of_mean(name, size)
                                               for size in sample_sizes]}
    return curves


# -- the encoder gradient of a VAE's ELBO ---------------------------------------------------

def vae_encoder_gradients(model, x: torch.Tensor, estimator: str, num_samples: int,
                          chunk_size: int = 64) -> GradientStats:
    """Mean and variance ``[P]`` over ``num_samples`` per-sample estimates of grad_phi of
    (1/B) sum_b ELBO(x_b), phi = the encoder's parameters, ELBO = E_q[log p(x|z)] - KL, with
    their standard errors (streamed by :class:`MomentAccumulator`: memory O(P) plus one block
    of at most ``chunk_size`` rows, whatever ``num_samples``).

    Sample s draws one z per example. Both estimators target the same gradient: the KL is
    differentiated exactly when torch has a closed form, so they differ only in how
    grad_phi E_q[log p(x|z)] is estimated: pathwise grad_phi log p(x|z(phi, eps_s)), or
    (log p(x|z_s) - b_s) grad_phi log q(z_s|x) (see :func:`vaekit.objectives.score_function_terms`);
    the baseline b_s is the leave-one-out mean over all ``num_samples`` draws.
    ``x``: ``[B, *data_shape]``."""
    if estimator not in ESTIMATOR_NAMES:
        from .errors import ConfigError

        raise ConfigError(f"unknown estimator '{estimator}' (valid: {', '.join(ESTIMATOR_NAMES)})")
    params = [p for p in model.encoder.parameters() if p.requires_grad]
    moments = MomentAccumulator(pilot_rows=min(chunk_size, num_samples))
    decoder_grad = [p.requires_grad for p in model.decoder.parameters()]
    model.decoder.requires_grad_(False)  # only encoder gradients: no decoder graph to keep
    try:
        q_z = model.encoder(x)
        p_z = model.prior()
        if estimator == "score_function_baseline":  # the baseline couples all draws
            chunks = [score_function_terms(model, x, q_z, p_z, num_samples, baseline=True)]
        elif estimator == "score_function":
            sizes = [min(chunk_size, num_samples - i) for i in range(0, num_samples, chunk_size)]
            chunks = (score_function_terms(model, x, q_z, p_z, size) for size in sizes)
        else:
            # one draw at a time: a batched backward would push every row's cotangent through
            # the whole decoder graph of the chunk (C times the work), while the score terms
            # only reach the small log q(z|x) graph
            chunks = (reparameterized_terms(model, x, q_z, p_z, 1) for _ in range(num_samples))
        for chunk in chunks:
            elbo_s = (chunk.reconstruction - chunk.kl).mean(1)  # [C]: one ELBO estimate per draw
            for start in range(0, len(elbo_s), chunk_size):
                rows = elbo_s[start : start + chunk_size]
                # one batched backward gives the gradient of each row separately: [C, P]
                grads = torch.autograd.grad(rows, params, grad_outputs=torch.eye(len(rows)),
                                            is_grads_batched=True, retain_graph=True)
                moments.add(torch.cat([g.reshape(len(rows), -1) for g in grads], 1))
    finally:
        for p, flag in zip(model.decoder.parameters(), decoder_grad):
            p.requires_grad_(flag)
    return moments.stats(estimator)


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


def gradient_report(run_dir: str | Path | None = None, *, num_samples: int = 1000,
                    toy_samples: int = TOY_SAMPLES, theta: float = 1.0, num_examples: int = 100,
                    out: str | Path | None = None, seed: int = 0,
                    log: Callable[[str], None] | None = None) -> dict:
    """The toy problem (measured against closed forms, ``toy_samples`` draws per estimator) and,
    given a run directory, the encoder gradient of its model on the first ``num_examples`` test
    examples, under each estimator (``num_samples`` draws each); writes
    ``gradient_variance.png`` (variance of the S-sample estimate against S, log-log) into
    ``out`` (default: the run directory, else the current one). Returns ``{"toy": {name: {...}},
    "vae": {name: {...}}, "variance_ratio": {"toy": r, "vae": r}, "variance_ratio_stderr":
    {...}, "variance_ratio_interval": {"toy": [low, high], ...}, "plot": path}`` (the ratio is
    score_function / reparameterization; stderr and interval from :func:`variance_ratio`)."""
    from .errors import ConfigError

    if num_samples < 2:
        raise ConfigError("--num-samples must be at least 2 (a variance needs two samples)")
    if toy_samples < 2:
        raise ConfigError("--toy-samples must be at least 2 (a variance needs two samples)")
    report: dict = {"toy": toy_gradients(theta, toy_samples, seed)}
    ratios = {"toy": variance_ratio(report["toy"]["score_function"],
                                    report["toy"]["reparameterization"])}
    if run_dir is not None:
        from .runs import load, run_data

        model = load(run_dir)
        x, _ = run_data(model, split="test")
        x = x[:num_examples]
        vae = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name in ESTIMATOR_NAMES:
                if log:
                    log(f"measuring {name} on {len(x)} test examples ({num_samples} samples)")
                vae[name] = vae_encoder_gradients(model, x, name, num_samples).summary()
        report["vae"] = vae
        ratios["vae"] = variance_ratio(vae["score_function"], vae["reparameterization"])
    report["variance_ratio"] = {k: r["ratio"] for k, r in ratios.items()}
    report["variance_ratio_stderr"] = {k: r["stderr"] for k, r in ratios.items()}
    report["variance_ratio_interval"] = {k: r["interval"] for k, r in ratios.items()}
    from .plots import plot_variance_curves

    out_dir = Path(out) if out is not None else Path(run_dir) if run_dir is not None else Path(".")
    sizes = [s for s in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if s <= max(toy_samples, 2)]
    curves = toy_variance_curve(theta, sizes, num_repeats=2000, seed=seed)
    report["plot"] = str(plot_variance_curves(curves, out_dir / "gradient_variance.png",
                                              title=f"q = N({theta:g}, 1), f(x) = x^2"))
    return report
