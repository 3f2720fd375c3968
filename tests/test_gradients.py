"""Gradient estimators against closed forms: the toy problem q = N(theta, 1), f(x) = x^2
(means and variances derived in vaekit.gradients.ToyProblem), and the encoder gradient of a
linear-Gaussian VAE whose ELBO has a closed form (so its exact gradient comes from autograd)."""

import math

import pytest
import torch
from torch import nn

from linear_gaussian import make_problem, vae
from vaekit.errors import ConfigError
from vaekit.gradients import (ESTIMATOR_NAMES, GradientStats, ToyProblem, toy_gradients,
                              toy_variance_curve, vae_encoder_gradients)
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
