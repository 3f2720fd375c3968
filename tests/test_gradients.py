"""Gradient estimators against closed forms: the toy problem q = N(theta, 1), f(x) = x^2
(means and variances derived in vaekit.gradients.ToyProblem), and the encoder gradient of a
linear-Gaussian VAE whose ELBO has a closed form (so its exact gradient comes from autograd)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from linear_gaussian import make_problem, vae
from vaekit.errors import ConfigError
from vaekit.gradients import (ESTIMATORS, ESTIMATOR_NAMES, TOY_SAMPLES, GradientStats,
                              MomentAccumulator, ToyProblem, toy_gradients, toy_variance_curve,
                              vae_encoder_gradients, variance_of_sample_variance, variance_ratio)
from vaekit.objectives import leave_one_out_mean, training_loss
from vaekit.posteriors import GaussianPosterior


@pytest.mark.parametrize("theta", [1.0, -2.0])
@pytest.mark.parametrize("estimator", ESTIMATOR_NAMES)
def test_toy_mean_and_variance_match_closed_forms(estimator, theta):
    problem, num = ToyProblem(theta), 200_000
    torch.manual_seed(0)
    g = problem.gradients(estimator, num)
    assert g.shape == (num,)
    exact_var = problem.exact_variance(estimator, num)
    # tolerance: 5 standard errors, of the mean from the exact variance, of the variance from
    # the sample fourth moment
    assert abs(g.mean() - problem.exact_gradient) < 5 * math.sqrt(exact_var / num)
    centred_sq = (g - g.mean()) ** 2
    assert abs(g.var() - exact_var) < 5 * centred_sq.std() / math.sqrt(num)


def test_toy_closed_forms_are_the_known_values():
    # independent spot checks of the formulas at theta = 1 (4, 1 + 14 + 15, 8 + 10 + 6 / (S - 1))
    problem = ToyProblem(1.0)
    assert problem.exact_variance("reparameterization", 10) == 4
    assert problem.exact_variance("score_function", 10) == 30
    assert problem.exact_variance("score_function_baseline", 4) == pytest.approx(20.0)


def test_variance_of_the_mean_includes_the_baseline_covariance():
    # at theta = 2, S = 2 the leave-one-out estimates are correlated: Var of the mean is
    # (60 + 16) / 2 = 38, not 60 / 2 = 30; 200k repeats measure it to ~1% (tolerance 5%)
    curves = toy_variance_curve(2.0, (2, 5), num_repeats=200_000, seed=1)
    problem = ToyProblem(2.0)
    assert problem.exact_variance_of_mean("score_function_baseline", 2) == pytest.approx(38.0)
    for name, curve in curves.items():
        for measured, exact in zip(curve["variance"], curve["exact_variance"]):
            assert measured == pytest.approx(exact, rel=0.05), name


def test_toy_report_has_exact_entries_and_variance_ordering():
    report = toy_gradients(1.0, 100_000, seed=0)
    assert set(report) == set(ESTIMATOR_NAMES)
    assert report["score_function"]["exact_variance"] == 30
    variances = [report[n]["variance"] for n in ESTIMATOR_NAMES]
    assert variances[0] < variances[2] < variances[1]  # 4 < ~18 < 30


@pytest.mark.parametrize("theta", [1.0, -2.0, 0.5])
def test_toy_fourth_moments_by_quadrature(theta):
    # Gauss-Hermite with 20 nodes is exact for polynomials in eps up to degree 39 (g^4 has 12)
    nodes, weights = np.polynomial.hermite_e.hermegauss(20)
    weights = weights / weights.sum()
    problem = ToyProblem(theta)
    per_sample = {"reparameterization": 2 * (theta + nodes),
                  "score_function": (theta + nodes) ** 2 * nodes,
                  "score_function_baseline": (2 * theta * nodes + nodes**2 - 1) * nodes}  # S -> inf
    for name, g in per_sample.items():
        mean = (weights * g).sum()
        assert mean == pytest.approx(problem.exact_gradient)
        assert (weights * (g - mean) ** 2).sum() == pytest.approx(
            problem.exact_variance(name, 10**12))
        assert (weights * (g - mean) ** 4).sum() == pytest.approx(problem.exact_fourth_moment(name))


def test_variance_of_sample_variance_is_exact_for_gaussian_moments():
    # mu4 = 3 sigma^4: Var(s^2) = 2 sigma^4 / (S - 1)
    for size in (2, 10, 1000):
        got = variance_of_sample_variance(torch.tensor(3.0 * 4.0), torch.tensor(2.0), size)
        assert float(got) == pytest.approx(2 * 4.0 / (size - 1))


@pytest.mark.parametrize("estimator", ESTIMATOR_NAMES)
def test_toy_stderrs_match_the_spread_over_repeats(estimator):
    # 2000 independent repeats of S = 1000 draws (the columns of one call, as in
    # toy_variance_curve): the spread of the estimates against the reported standard errors
    problem, size, repeats = ToyProblem(1.0), 1000, 2000
    torch.manual_seed(4)
    theta = torch.full((repeats,), 1.0, dtype=torch.float64)
    stats = GradientStats.of(estimator, ESTIMATORS[estimator](problem.q, theta, problem.f, size))
    mean_spread, var_spread = float(stats.mean.std()), float(stats.variance.std())
    assert mean_spread / float(stats.mean_stderr.mean()) == pytest.approx(1, abs=0.1)
    # the reported Var of the variance estimate is unbiased to O(1/S): its root mean square
    # matches the spread closely; the mean stderr lags it for the heavy-tailed score-function
    # estimates (Jensen, and a skewed fourth-moment estimate), ~10-20% at this S
    rms_stderr = float(stats.variance_stderr.pow(2).mean().sqrt())
    assert var_spread / rms_stderr == pytest.approx(1, abs=0.1)
    assert var_spread / float(stats.variance_stderr.mean()) == pytest.approx(1, abs=0.25)
    exact = problem.exact_variance_stderr(estimator, size)
    assert rms_stderr == pytest.approx(exact, rel=0.1)
    assert var_spread == pytest.approx(exact, rel=0.15)


@pytest.mark.parametrize("theta", [1.0, -2.0])
def test_toy_at_the_default_sample_count_is_within_a_few_percent(theta):
    report = toy_gradients(theta, TOY_SAMPLES, seed=0)
    for name, r in report.items():
        assert r["num_samples"] == TOY_SAMPLES
        assert abs(r["mean"] - r["exact_mean"]) < 4 * r["mean_stderr"], name
        assert r["mean"] == pytest.approx(r["exact_mean"], rel=0.01), name
        assert abs(r["variance"] - r["exact_variance"]) < 4 * r["variance_stderr"], name
        assert r["variance"] == pytest.approx(r["exact_variance"], rel=0.03), name
        assert r["variance_stderr"] == pytest.approx(r["exact_variance_stderr"], rel=0.1), name
        assert r["variance_stderr"] < 0.01 * r["exact_variance"]  # <1%: the score function's ~0.6%
    ratio = variance_ratio(report["score_function"], report["reparameterization"])
    exact = report["score_function"]["exact_variance"] / 4
    assert abs(ratio["ratio"] - exact) < 4 * ratio["stderr"]
    assert ratio["ratio"] == pytest.approx(exact, rel=0.03)
    low, high = ratio["interval"]
    assert low < ratio["ratio"] < high
    assert math.log(high / ratio["ratio"]) == pytest.approx(1.96 * ratio["stderr"] / ratio["ratio"])


def test_variance_ratio_delta_method():
    ratio = variance_ratio({"variance": 30.0, "variance_stderr": 0.3},
                           {"variance": 4.0, "variance_stderr": 0.04})
    assert ratio["ratio"] == 7.5
    assert ratio["stderr"] == pytest.approx(7.5 * math.sqrt(2) * 0.01)
    assert ratio["interval"][0] == pytest.approx(7.5 * math.exp(-1.96 * math.sqrt(2) * 0.01))


def correlated_draws(generator, size, num_parameters=12):
    """A common skewed factor (chi-square, kurtosis 15) on every parameter, plus independent
    Gaussian noise: strongly correlated, heavy-ish tailed, like score-function gradients."""
    loading = torch.linspace(0.5, 2.0, num_parameters, dtype=torch.float64)
    common = torch.randn(size, 1, generator=generator, dtype=torch.float64) ** 2 - 1
    noise = torch.randn(size, num_parameters, generator=generator, dtype=torch.float64)
    return 1.0 + common * loading + 0.7 * noise


def test_moment_accumulator_streams_the_exact_per_parameter_statistics():
    g = correlated_draws(torch.Generator().manual_seed(5), 150)
    direct = GradientStats.of("x", g)
    centred = g - g.mean(0)
    torch.testing.assert_close(direct.mean, g.mean(0))
    torch.testing.assert_close(direct.variance, g.var(0))
    torch.testing.assert_close(direct.variance_stderr, variance_of_sample_variance(
        (centred**4).mean(0), g.var(0), 150).sqrt())
    for block in (1, 5, 64, 150):  # pilot shift from the first 64 rows, rows streamed after it
        moments = MomentAccumulator(pilot_rows=64)
        for rows in g.split(block):
            moments.add(rows)
        stats = moments.stats("x")
        assert stats.num_samples == 150
        for key in ("mean", "variance", "variance_stderr"):
            torch.testing.assert_close(getattr(stats, key), getattr(direct, key))
        # the average's stderr uses ||g_s - c||^2 with the pilot mean c: O(1/64) larger
        assert stats.average_variance_stderr == pytest.approx(direct.average_variance_stderr,
                                                              rel=0.05)
    # one parameter: the average's stderr is that parameter's
    single = GradientStats.of("x", g[:, :1])
    assert single.average_variance_stderr == pytest.approx(float(single.variance_stderr))


def test_average_variance_stderr_includes_the_correlation_between_parameters():
    generator, size, repeats = torch.Generator().manual_seed(6), 200, 300
    stats = []
    for _ in range(repeats):
        moments = MomentAccumulator(pilot_rows=64)
        for rows in correlated_draws(generator, size).split(5):
            moments.add(rows)
        stats.append(moments.stats("x"))
    averages = torch.tensor([float(s.variance.mean()) for s in stats])
    reported = torch.tensor([s.average_variance_stderr for s in stats])
    spread = float(averages.std())
    assert spread / float(reported.mean()) == pytest.approx(1, abs=0.25)
    assert spread / float(reported.pow(2).mean().sqrt()) == pytest.approx(1, abs=0.15)
    # treating the parameters as independent would understate it about 3 times
    independent = torch.tensor([float(s.variance_stderr.pow(2).sum().sqrt()) / s.mean.numel()
                                for s in stats])
    assert spread > 2 * float(independent.mean())


def test_leave_one_out_mean():
    f = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]])
    torch.testing.assert_close(leave_one_out_mean(f), torch.tensor([[4.0, 8.0], [3.0, 6.0],
                                                                    [2.0, 4.0]]))


def test_gradient_stats_snr():
    grads = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    stats = GradientStats.of("x", grads)
    torch.testing.assert_close(stats.snr[0], torch.tensor(2.0 / math.sqrt(2.0), dtype=torch.float64))
    assert stats.snr[1].isnan()  # an always-zero gradient has no SNR, and is left out
    assert stats.summary()["snr"] == pytest.approx(2.0 / math.sqrt(2.0))


# -- a VAE with a closed-form ELBO -------------------------------------------------------

def linear_vae(seed=0):
    W, b, s, decoder, exact, marginal, x = make_problem(seed=seed)
    torch.manual_seed(seed)
    encoder = GaussianPosterior(nn.Linear(5, 4, dtype=torch.float64), 2)
    return vae(encoder, decoder, 2, 5), x[:8], (W, b, s)


def exact_elbo(model, x, W, b, s):
    """E_q log N(x; W z + b, s^2 I) - KL, with E_q ||x - W z - b||^2 = ||x - W mu - b||^2
    + sum_l sigma_l^2 ||W_l||^2 for q = N(mu, diag sigma^2)."""
    q = model.encoder(x)
    mu, sigma = q.base_dist.loc, q.base_dist.scale
    sq = ((x - mu @ W.T - b) ** 2).sum(-1) + (sigma**2 * (W**2).sum(0)).sum(-1)
    recon = -0.5 * x.shape[-1] * math.log(2 * math.pi * s**2) - sq / (2 * s**2)
    kl = 0.5 * (mu**2 + sigma**2 - 1 - torch.log(sigma**2)).sum(-1)
    return recon - kl


@pytest.mark.parametrize("estimator,num", [("reparameterization", 1000), ("score_function", 4000),
                                           ("score_function_baseline", 3000)])
def test_vae_encoder_gradient_means_equal_the_exact_gradient(estimator, num):
    model, x, (W, b, s) = linear_vae()
    params = list(model.encoder.parameters())
    exact = torch.cat([g.flatten() for g in
                       torch.autograd.grad(exact_elbo(model, x, W, b, s).mean(), params)])
    torch.manual_seed(1)
    stats = vae_encoder_gradients(model, x, estimator, num)
    stderr = (stats.variance / num).sqrt()
    # each of the 24 parameters within 5 standard errors of the exact gradient
    assert ((stats.mean - exact).abs() < 5 * stderr + 1e-9).all(), (stats.mean - exact) / stderr
    assert all(p.requires_grad for p in model.decoder.parameters())  # restored


@pytest.mark.parametrize("estimator,num,repeats", [("reparameterization", 100, 30),
                                                   ("score_function", 200, 40)])
def test_vae_stderrs_match_the_spread_over_seeds(estimator, num, repeats):
    model, x, _ = linear_vae()
    stats = []
    for seed in range(repeats):
        torch.manual_seed(100 + seed)
        stats.append(vae_encoder_gradients(model, x, estimator, num))
    means = torch.stack([s.mean for s in stats])  # [R, 24]
    variances = torch.stack([s.variance for s in stats])

    def rms(t):
        return float(t.pow(2).mean().sqrt())

    # per parameter, pooled over the 24 (correlated) parameters: spread over seeds vs reported
    # stderr (the std of 30-40 values is itself uncertain by ~15%: other seeds give 0.86-1.17)
    assert rms(means.std(0)) / rms(torch.stack([s.mean_stderr for s in stats])) == pytest.approx(
        1, abs=0.25)
    assert (rms(variances.std(0)) / rms(torch.stack([s.variance_stderr for s in stats]))
            == pytest.approx(1, abs=0.25))
    # the average over parameters (the printed variance): its spread vs its reported stderr
    # (root mean square: a single score-function report's stderr is skewed at S = 200, its mean
    # is 20-40% below the spread; the reported variance of the estimate is not)
    averages = torch.tensor([float(s.variance.mean()) for s in stats])
    reported = torch.tensor([s.average_variance_stderr for s in stats])
    assert float(averages.std()) / rms(reported) == pytest.approx(1, abs=0.25)
    summary = stats[0].summary()
    assert summary["variance_stderr"] == stats[0].average_variance_stderr
    assert summary["mean_stderr"] == pytest.approx(float(stats[0].mean_stderr.mean()))


def test_vae_score_function_variance_is_larger():
    model, x, _ = linear_vae()
    torch.manual_seed(2)
    path = vae_encoder_gradients(model, x, "reparameterization", 500).variance.mean()
    score = vae_encoder_gradients(model, x, "score_function", 500).variance.mean()
    assert score > 5 * path  # about 10x on this small linear model; thousands on MNIST


@pytest.mark.parametrize("estimator", ["reparameterization", "score", "score-baseline"])
def test_training_loss_reports_the_true_elbo_under_every_estimator(estimator):
    model, x, (W, b, s) = linear_vae()
    num = 20_000
    torch.manual_seed(3)
    loss, terms = training_loss(model, x, num_samples=num, gradient_estimator=estimator)
    torch.testing.assert_close(loss, -terms.elbo.mean())
    # Monte Carlo ELBO of 20k draws vs the closed form, within 5 standard errors (those of
    # log p(x|z) under q, measured on separate draws)
    with torch.no_grad():
        log_px_z = model.decoder(model.encoder(x).sample((num,))).log_prob(x)  # [K, B]
    stderr = log_px_z.std(0) / math.sqrt(num)
    assert ((terms.elbo - exact_elbo(model, x, W, b, s)).abs() < 5 * stderr).all()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.encoder.parameters())


def test_score_baseline_needs_two_samples_and_unknown_estimator_is_refused():
    model, x, _ = linear_vae()
    with pytest.raises(ConfigError, match="num-samples 2"):
        training_loss(model, x, gradient_estimator="score-baseline")
    with pytest.raises(ConfigError, match="valid: reparameterization, score, score-baseline"):
        training_loss(model, x, gradient_estimator="reinforce")
