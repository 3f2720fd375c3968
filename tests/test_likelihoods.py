import math

import pytest
import torch
from torch import nn

from vaekit.errors import DataError
from vaekit.likelihoods import (BernoulliLikelihood, ContinuousBernoulliLikelihood,
                                GaussianLikelihood)


def test_gaussian_log_prob_matches_the_formula_with_a_learned_per_dim_scale():
    lik = GaussianLikelihood(nn.Identity(), (3,), "learned-per-dim", init_scale=0.7, min_scale=0.01)
    torch.testing.assert_close(lik.scale(), torch.full((3,), 0.7))
    mu, x = torch.randn(5, 3), torch.randn(5, 3)
    expected = (-0.5 * ((x - mu) / 0.7) ** 2 - math.log(0.7) - 0.5 * math.log(2 * math.pi)).sum(-1)
    torch.testing.assert_close(lik(mu).log_prob(x), expected)


def test_gaussian_scale_never_falls_below_its_floor():
    lik = GaussianLikelihood(nn.Identity(), (2,), "learned-global", min_scale=0.05)
    with torch.no_grad():
        lik.raw_scale.fill_(-1e4)
    assert float(lik.scale().detach()) == pytest.approx(0.05)
    assert torch.isfinite(lik(torch.zeros(1, 2)).log_prob(torch.full((1, 2), 1e3))).all()


def test_standardized_gaussian_is_the_density_of_x_in_its_own_units():
    # x = m + s * u with u ~ N(mu, sigma^2)  =>  log p(x) = log N(u; mu, sigma^2) - sum log s
    lik = GaussianLikelihood(nn.Identity(), (2,), "fixed", init_scale=0.5)
    m, s = torch.tensor([100.0, -3.0]), torch.tensor([50.0, 0.1])
    lik.data_loc.copy_(m)
    lik.data_scale.copy_(s)
    mu, x = torch.randn(4, 2), m + s * torch.randn(4, 2)
    u = (x - m) / s
    expected = torch.distributions.Normal(mu, 0.5).log_prob(u).sum(-1) - torch.log(s).sum()
    torch.testing.assert_close(lik(mu).log_prob(x), expected)


def test_continuous_bernoulli_normalises_on_the_unit_interval():
    lik = ContinuousBernoulliLikelihood(nn.Identity(), (1,))
    grid = torch.linspace(0, 1, 20001).unsqueeze(-1)
    for logit in [-4.0, 0.3, 5.0]:
        density = lik(torch.tensor([[logit]])).log_prob(grid.unsqueeze(1)).exp().squeeze()
        assert torch.trapezoid(density, grid.squeeze()) == pytest.approx(1.0, abs=1e-3)


def test_support_checks():
    BernoulliLikelihood.check_support(torch.tensor([0.0, 1.0]))
    with pytest.raises(DataError, match="binarize"):
        BernoulliLikelihood.check_support(torch.tensor([0.0, 0.5]))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        ContinuousBernoulliLikelihood.check_support(torch.tensor([-0.1, 0.5]))
    with pytest.raises(DataError, match="NaN"):
        GaussianLikelihood.check_support(torch.tensor([float("nan")]))


def test_bernoulli_probabilities_of_all_binary_images_sum_to_one():
    lik = BernoulliLikelihood(nn.Identity(), (2, 2))
    logits = torch.tensor([[[-3.0, 0.5], [2.0, 40.0]]], dtype=torch.float64)  # one 2x2 image
    images = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=torch.float64)] * 4
                                  ).view(16, 2, 2)
    log_p = lik(logits).log_prob(images)  # x broadcast against the logits' batch
    assert log_p.shape == (16,)
    assert float(torch.logsumexp(log_p, 0)) == pytest.approx(0.0, abs=1e-12)
    expected = (images * torch.sigmoid(logits) + (1 - images) * torch.sigmoid(-logits)).log()
    torch.testing.assert_close(log_p, expected.sum((-1, -2)))


@pytest.mark.parametrize("logits_shape, x_shape", [
    ((80, 3, 1, 4, 4), (3, 1, 4, 4)),  # many samples per x (the log p(x) case: a contraction)
    ((5, 3, 1, 4, 4), (3, 1, 4, 4)),  # a few samples per x (IWAE training)
    ((3, 1, 4, 4), (3, 1, 4, 4)),  # one sample per example (the training case)
    ((1, 3, 1, 4, 4), (3, 1, 4, 4)),
    ((3, 1, 4, 4), (2, 3, 1, 4, 4)),  # x with more leading axes than the logits
])
def test_bernoulli_log_prob_and_its_gradient_match_torch_distributions(logits_shape, x_shape):
    lik = BernoulliLikelihood(nn.Identity(), (1, 4, 4))
    logits = (6 * torch.randn(logits_shape)).requires_grad_()
    x = (torch.rand(x_shape) < 0.3).float()
    ours = lik(logits).log_prob(x)
    theirs = torch.distributions.Independent(torch.distributions.Bernoulli(logits=logits), 3
                                             ).log_prob(x)
    torch.testing.assert_close(ours, theirs)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), logits)
    torch.testing.assert_close(g_ours, g_theirs)


def test_bernoulli_log_prob_is_finite_and_exact_for_extreme_logits():
    lik = BernoulliLikelihood(nn.Identity(), (4,))
    logits = torch.tensor([[1e4, -1e4, 1e4, -1e4]])
    torch.testing.assert_close(lik(logits).log_prob(torch.tensor([[1.0, 0.0, 1.0, 0.0]])),
                               torch.tensor([0.0]))
    torch.testing.assert_close(lik(logits).log_prob(torch.tensor([[0.0, 1.0, 1.0, 0.0]])),
                               torch.tensor([-2e4]))


def test_bernoulli_log_prob_stays_float32_under_autocast():
    lik = BernoulliLikelihood(nn.Identity(), (784,))
    logits, x = 4 * torch.randn(100, 2, 784), (torch.rand(2, 784) < 0.3).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = lik(logits).log_prob(x)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, lik(logits).log_prob(x))
