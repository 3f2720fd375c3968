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
