"""Importance-sampled log-likelihood and latent diagnostics against closed forms: the exact
marginal p(x) = N(b, W W^T + s^2 I) and posterior of a linear-Gaussian model, the closed-form
mutual information of that model, and Gaussian KL per dimension."""

import math

import pytest
import torch
from torch import nn

from linear_gaussian import ExactPosterior, RoughPosterior, make_problem, vae
from vaekit.errors import ConfigError
from vaekit.evaluation import (evaluate_elbo, importance_estimate, latent_diagnostics,
                               log_likelihood, log_likelihood_prior_sampling,
                               log_likelihood_summary)
from vaekit.model import VAE
from vaekit.posteriors import GaussianPosterior
from vaekit.priors import StandardNormalPrior


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # make_problem draws its 16 examples from the global generator


@pytest.mark.parametrize("K", [1, 7, 100])
def test_exact_posterior_gives_exact_log_px_for_every_k(K):
    W, b, s, decoder, exact, marginal, x = make_problem()
    model = vae(exact, decoder, 2, 5)
    estimate = importance_estimate(model, x, K, chunk_size=3)
    # q = p(z|x): every weight p(x, z_k) / p(z_k|x) equals p(x), so the estimate is exact
    torch.testing.assert_close(estimate.log_likelihood, marginal.log_prob(x), rtol=0, atol=1e-9)
    torch.testing.assert_close(estimate.ess, torch.full_like(estimate.ess, K), rtol=1e-9, atol=0)


def test_rough_posterior_estimate_converges_to_exact():
    W, b, s, decoder, exact, marginal, x = make_problem()
    model = vae(RoughPosterior(exact), decoder, 2, 5)
    log_px = marginal.log_prob(x)
    errors = {K: (log_likelihood(model, x, K, seed=1) - log_px).abs().max() for K in (1, 10, 10_000)}
    assert errors[1] > 1.0  # the rough proposal is far off with one sample ...
    assert errors[10_000] < 0.1, errors  # ... and within 0.1 nats of exact at K = 10^4 (seed 1)
    assert errors[10_000] < errors[10] < errors[1]


def test_elbo_below_iwae_below_log_px_on_average():
    W, b, s, decoder, exact, marginal, x = make_problem()
    model = vae(RoughPosterior(exact), decoder, 2, 5)
    log_px = marginal.log_prob(x).mean()
    elbo = evaluate_elbo(model, x, num_samples=20_000)["elbo"]  # analytic KL, MC reconstruction
    # 200 independent IWAE_10 estimates per example: mean and its standard error
    replicates = log_likelihood(model, x.repeat(200, 1), 10).reshape(200, len(x)).mean(1)
    iwae, stderr = replicates.mean(), replicates.std() / math.sqrt(len(replicates))
    assert elbo + 0.1 < iwae - 4 * stderr, (elbo, iwae)
    assert iwae + 4 * stderr < log_px, (iwae, log_px)


def test_naive_prior_estimator_has_far_larger_variance_on_peaked_posterior():
    # s = 0.1: p(z|x) has a standard deviation of a few hundredths while p(z) = N(0, I)
    W, b, s, decoder, exact, marginal, x = make_problem(s=0.1)
    near = vae(RoughPosterior(exact, shift=0.01, inflate=1.3), decoder, 2, 5)
    naive = [log_likelihood_prior_sampling(near, x, 100, seed=r) for r in range(20)]
    sampled = [log_likelihood(near, x, 100, seed=r) for r in range(20)]
    naive_var = torch.stack(naive).var(0).mean()
    is_var = torch.stack(sampled).var(0).mean()
    assert naive_var > 100 * is_var, (naive_var, is_var)
    # and the importance-sampled estimate is close to exact while the naive one is not
    log_px = marginal.log_prob(x)
    assert (torch.stack(sampled).mean(0) - log_px).abs().max() < 0.05
    assert (torch.stack(naive).mean(0) - log_px).abs().max() > 5


@pytest.mark.parametrize("chunk_size", [1, 3, 16, 50])
def test_chunked_equals_unchunked(chunk_size):
    W, b, s, decoder, exact, marginal, x = make_problem()
    model = vae(RoughPosterior(exact), decoder, 2, 5)
    whole = importance_estimate(model, x, 50, chunk_size=50, batch_size=4)
    chunked = importance_estimate(model, x, 50, chunk_size=chunk_size, batch_size=4)
    torch.testing.assert_close(chunked.log_likelihood, whole.log_likelihood, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked.ess, whole.ess, rtol=1e-10, atol=0)


def test_one_logsumexp_matches_direct_formula():
    """Same draws as the estimator (seed 0, one batch, one RNG call): log-mean-exp of the log
    weights written out by hand, and ESS = (sum w)^2 / sum w^2."""
    W, b, s, decoder, exact, marginal, x = make_problem()
    model = vae(RoughPosterior(exact), decoder, 2, 5)
    estimate = importance_estimate(model, x, 40, chunk_size=7, batch_size=len(x))
    torch.manual_seed(0)
    q = model.encoder(x)
    z = q.sample((40,))
    loc = z @ W.T + b
    log_w = (torch.distributions.Normal(loc, s).log_prob(x).sum(-1)
             - 0.5 * (z**2).sum(-1) - math.log(2 * math.pi) - q.log_prob(z))
    w = torch.exp(log_w - log_w.max(0).values)
    torch.testing.assert_close(estimate.log_likelihood,
                               torch.log(torch.exp(log_w).mean(0)), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(estimate.ess, w.sum(0) ** 2 / (w**2).sum(0))


def test_summary_mean_stderr_bits_per_dim():
    summary = log_likelihood_summary(torch.tensor([-100.0, -120.0]), (1, 28, 28), is_image=True,
                                     discrete=True)
    assert summary["log_likelihood"] == pytest.approx(-110.0)
    assert summary["log_likelihood_stderr"] == pytest.approx(10.0)  # std 14.14 / sqrt(2)
    assert summary["bits_per_dim"] == pytest.approx(110.0 / (784 * math.log(2)))
    assert "bits_per_dim" not in log_likelihood_summary(torch.tensor([-1.0, -2.0]), (5,))


def test_bits_per_dim_only_of_a_discrete_likelihood_else_the_reason():
    # a continuous density of images: its log p(x) is no log-probability, so no bits/dim
    continuous = log_likelihood_summary(torch.tensor([20.0, 30.0]), (1, 8, 8), is_image=True)
    assert "bits_per_dim" not in continuous
    assert "continuous" in continuous["bits_per_dim_absent"]


class _PriorAsPosterior(nn.Module):
    """q(z|x) = N(0, I), whatever x: importance sampling from the prior (unbiased in p(x))."""

    latent_dim = 1

    def forward(self, x):
        zeros = torch.zeros(len(x), 1, dtype=torch.float64)
        return torch.distributions.Independent(torch.distributions.Normal(zeros, 1.0 + zeros), 1)


@pytest.mark.parametrize("likelihood", ["discretized-logistic", "discretized-logistic-mixture",
                                        "categorical"])
def test_bits_per_dim_is_minus_log_p_over_d_ln2_of_the_exactly_enumerated_distribution(likelihood):
    """A VAE with one latent dimension and images of 1 x 1 x 2 pixels with 4 levels: P(x) =
    int N(z; 0, 1) prod_d P(x_d | z) dz by Gauss-Hermite quadrature (200 nodes) for all 16
    images, which sum to 1; evaluate_model's bits/dim (K = 20000 samples from the prior) equals
    -mean log P(x) / (D ln 2) of those exact values."""
    import numpy as np

    from vaekit.evaluation import evaluate_model
    from vaekit.likelihoods import LIKELIHOODS

    levels, data_shape = 4, (1, 1, 2)
    cls = LIKELIHOODS[likelihood]
    outputs = cls.params_per_dim(levels, 2) * 2
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(1, outputs), nn.Unflatten(-1, (outputs // 2, 1, 2)))
    decoder = cls(net, data_shape, levels, 2).double()
    model = VAE(_PriorAsPosterior(), decoder, StandardNormalPrior(1).double(), data_shape)
    x = torch.cartesian_prod(torch.arange(levels), torch.arange(levels)).view(-1, *data_shape)
    x = x.to(torch.uint8)  # all 16 images
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)  # int f(z) N(z; 0, 1) dz
    z = torch.from_numpy(nodes).view(-1, 1)
    with torch.no_grad():
        log_p_x_z = decoder(z.unsqueeze(1)).log_prob(x)  # [nodes, 16]
    w = torch.from_numpy(weights / math.sqrt(2 * math.pi)).view(-1, 1)
    exact = torch.log((w * log_p_x_z.exp()).sum(0))  # [16]
    assert float(exact.exp().sum()) == pytest.approx(1.0, abs=1e-10)
    result = evaluate_model(model, x, num_samples=20000, is_image=True)
    exact_bits = -float(exact.mean()) / (2 * math.log(2))
    assert result["bits_per_dim"] == pytest.approx(exact_bits, rel=2e-3)
    assert result["log_likelihood"] == pytest.approx(float(exact.mean()), rel=2e-3)


def test_bad_arguments_are_config_errors():
    W, b, s, decoder, exact, marginal, x = make_problem()
    model = vae(exact, decoder, 2, 5)
    with pytest.raises(ConfigError, match="num_samples"):
        log_likelihood(model, x, 0)
    with pytest.raises(ConfigError, match="valid: posterior, prior"):
        importance_estimate(model, x, 2, proposal="wishful")


class DiagonalLinear(nn.Module):
    """loc = x * gains (per coordinate), log_var = 0: a posterior with chosen mean variances."""

    def __init__(self, gains):
        super().__init__()
        self.gains = nn.Parameter(torch.tensor(gains))

    def forward(self, x):
        return torch.cat([x * self.gains, torch.zeros_like(x)], -1)


def test_active_units_and_kl_per_dim_on_collapsed_model():
    # Var_x E_q[z_u] = gain_u^2 for x ~ N(0, I): collapsed (0), below (0.005) and above
    # (0.02) the 0.01 threshold, and clearly alive (1)
    gains = [0.0, 1.0, 0.0, 0.0707, 0.1414, 1.0]
    L = len(gains)
    model = VAE(GaussianPosterior(DiagonalLinear(gains), L), nn.Identity(),
                StandardNormalPrior(L), (L,))
    x = torch.randn(4000, L, generator=torch.Generator().manual_seed(0))
    diag = latent_diagnostics(model, x, num_mi_queries=200)
    assert diag["active_units"] == 3
    variances = torch.tensor(diag["posterior_mean_variance"])
    assert ((variances > 0.01) == torch.tensor([False, True, False, False, True, True])).all()
    # KL(N(mu, 1) || N(0, 1)) = mu^2 / 2 per dimension, averaged over the data
    expected = (0.5 * (x * torch.tensor(gains)) ** 2).mean(0).double()
    torch.testing.assert_close(torch.tensor(diag["kl_per_dim"], dtype=torch.float64), expected,
                               rtol=1e-5, atol=1e-7)
    assert diag["kl_per_dim"][0] == 0.0 and diag["kl_per_dim"][2] == 0.0


def test_mutual_information_matches_linear_gaussian_closed_form():
    # x ~ p(x) and q = p(z|x): the aggregate posterior is p(z), so
    # I(x; z) = H[z] - H[z|x] = -0.5 log det S, S the posterior covariance
    W, b, s, decoder, exact, marginal, _ = make_problem(s=1.0)
    torch.manual_seed(0)
    x = marginal.sample((1000,))
    model = vae(exact, decoder, 2, 5)
    diag = latent_diagnostics(model, x, num_mi_queries=1000)
    true_mi = float(-0.5 * torch.logdet(exact.S))
    # the finite mixture (own component included) biases the estimate down by a few hundredths
    assert diag["mutual_information"] == pytest.approx(true_mi, abs=0.1)  # seed 0, N = 1000
    assert diag["kl_per_dim"] is None  # full-covariance posterior: no per-dimension split
    assert diag["active_units"] == 2


def test_mutual_information_is_at_most_log_n():
    W, b, s, decoder, exact, marginal, _ = make_problem(s=0.01)  # nearly deterministic codes
    torch.manual_seed(0)
    x = marginal.sample((50,))
    diag = latent_diagnostics(vae(exact, decoder, 2, 5), x)
    assert math.log(50) - 0.05 < diag["mutual_information"] <= math.log(50) + 1e-9


def test_evaluation_works_on_a_model_without_parameters():
    """A hand-built model whose tensors are constants (a tutorial's linear-Gaussian model) has
    no parameter to take the device from: it evaluates on the CPU instead of failing."""
    from vaekit.evaluation import model_device

    assert model_device(torch.nn.Identity()) == torch.device("cpu")
    with_buffer = torch.nn.Module()
    with_buffer.register_buffer("w", torch.zeros(1, dtype=torch.float64))
    assert model_device(with_buffer) == torch.device("cpu")
