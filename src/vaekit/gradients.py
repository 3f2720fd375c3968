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

import torch
from torch.distributions import Distribution, Normal

from .estimates import GradientStats, MomentAccumulator, variance_of_sample_variance, \
    variance_ratio
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


__all__ = ["ESTIMATORS", "ESTIMATOR_NAMES", "GradientStats", "MomentAccumulator", "TOY_SAMPLES",
           "ToyProblem", "toy_gradients", "toy_variance_curve", "vae_encoder_gradients",
           "variance_of_sample_variance", "variance_ratio"]
