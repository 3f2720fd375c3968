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


# -- discrete likelihoods of quantized grey levels -------------------------------------------

import numpy as np  # noqa: E402
from scipy import integrate, stats  # noqa: E402

from vaekit.likelihoods import (LIKELIHOODS, CategoricalLikelihood,  # noqa: E402
                                DiscretizedLogistic, DiscretizedLogisticLikelihood,
                                DiscretizedLogisticMixtureLikelihood, is_discrete, needs_levels)

DISCRETE = [DiscretizedLogisticLikelihood, DiscretizedLogisticMixtureLikelihood,
            CategoricalLikelihood]
# locations inside, at the edge of and far outside [-1, 1]; scales from far below a bin to huge
EXTREME_LOCS = [-100.0, -1.5, -1.0, -0.3, 0.0, 0.55, 1.0, 3.0, 1e4]
EXTREME_SCALES = [1e-30, 1e-8, 1e-3, 0.05, 1.0, 1e3, 1e12, float("inf")]


def discrete_likelihood(cls, num_bins, data_shape=(1, 2, 3), components=3, seed=0):
    """The likelihood on an identity network: z is the network's output [B, P*C, H, W]."""
    torch.manual_seed(seed)
    lik = cls(nn.Identity(), data_shape, num_bins, components).double()
    if isinstance(lik, CategoricalLikelihood):
        with torch.no_grad():
            lik.logit_bias.normal_(0, 3)
    p = cls.params_per_dim(num_bins, components)
    return lik, (p * data_shape[0], *data_shape[1:])


def all_levels(num_bins, batch_shape):
    """[n, *batch_shape] float64: level k everywhere in row k."""
    return torch.arange(num_bins, dtype=torch.float64).view(-1, *[1] * len(batch_shape)) \
        .expand(num_bins, *batch_shape)


@pytest.mark.parametrize("num_bins", [2, 17, 256])
def test_discretized_logistic_sums_to_one_for_extreme_parameters(num_bins):
    loc, scale = torch.meshgrid(torch.tensor(EXTREME_LOCS, dtype=torch.float64),
                                torch.tensor(EXTREME_SCALES, dtype=torch.float64), indexing="ij")
    d = DiscretizedLogistic(loc, scale, num_bins)
    log_p = d.log_prob(d.enumerate_support())  # [n, locs, scales]
    assert not torch.isnan(log_p).any() and (log_p <= 1e-12).all()
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.zeros_like(loc), atol=1e-12,
                               rtol=0)


@pytest.mark.parametrize("cls", DISCRETE)
@pytest.mark.parametrize("num_bins", [2, 17, 256])
def test_each_discrete_likelihood_sums_to_one_over_the_levels_of_every_pixel(cls, num_bins):
    lik, out_shape = discrete_likelihood(cls, num_bins)
    # network outputs from tame to extreme (log-scales down to the floor and far above it)
    z = torch.cat([torch.randn(2, *out_shape), 30 * torch.randn(2, *out_shape),
                   torch.full((1, *out_shape), -1e4), torch.full((1, *out_shape), 300.0)]).double()
    per_pixel = lik(z).base_dist  # batch [B, C, H, W]
    log_p = per_pixel.log_prob(all_levels(num_bins, per_pixel.batch_shape))
    assert torch.isfinite(log_p).all()
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.zeros(per_pixel.batch_shape,
                                                                      dtype=torch.float64),
                               atol=1e-10, rtol=0)


def logistic_bin_masses(loc, scale, num_bins):
    """P(k) by numerical integration of the logistic density over each bin of [-1, 1] (the edge
    bins to -inf and +inf), with scipy."""
    h = 1.0 / (num_bins - 1)
    pdf = lambda y: stats.logistic.pdf(y, loc, scale)  # noqa: E731
    masses = []
    for k in range(num_bins):
        c = -1 + 2 * h * k
        low = -np.inf if k == 0 else c - h
        high = np.inf if k == num_bins - 1 else c + h
        # split at the mode so quad sees the peak of a narrow density
        points = sorted({low, high, min(max(loc, low), high)})
        masses.append(sum(integrate.quad(pdf, a, b, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
                          for a, b in zip(points, points[1:]) if b > a))
    return np.array(masses)


@pytest.mark.parametrize("loc,scale", [(0.0, 0.3), (0.62, 0.01), (-0.9, 0.002), (1.4, 0.5),
                                       (-3.0, 2.0), (0.1, 40.0)])
@pytest.mark.parametrize("num_bins", [2, 5, 17])
def test_discretized_logistic_matches_integrating_the_logistic_density_per_bin(loc, scale,
                                                                               num_bins):
    d = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64),
                            torch.tensor(scale, dtype=torch.float64), num_bins)
    p = d.log_prob(torch.arange(num_bins, dtype=torch.float64)).exp().numpy()
    np.testing.assert_allclose(p, logistic_bin_masses(loc, scale, num_bins), rtol=1e-7,
                               atol=1e-13)


def test_discretized_logistic_mixture_is_the_weighted_sum_of_its_components():
    lik, out_shape = discrete_likelihood(DiscretizedLogisticMixtureLikelihood, 17,
                                         data_shape=(1, 1, 1), components=3)
    z = torch.tensor([[0.3, -1.0, 2.0, -0.5, 0.2, 0.9, -2.0, -4.0, 0.5]], dtype=torch.float64)
    weights = torch.softmax(z[0, :3], 0)
    from vaekit.likelihoods import bounded_log_scale

    scales = bounded_log_scale(z[0, 6:9]).exp()
    x = torch.arange(17, dtype=torch.float64)
    expected = sum(weights[j] * torch.from_numpy(logistic_bin_masses(float(z[0, 3 + j]),
                                                                     float(scales[j]), 17))
                   for j in range(3))
    got = lik(z.view(1, 9, 1, 1)).log_prob(x.view(17, 1, 1, 1, 1)).exp().squeeze()
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-12)


def test_categorical_is_the_softmax_of_its_logits():
    lik, out_shape = discrete_likelihood(CategoricalLikelihood, 5, data_shape=(1, 1, 2))
    z = torch.randn(3, *out_shape, dtype=torch.float64)
    x = torch.randint(0, 5, (3, 1, 1, 2))
    logits = lik.head(lik.params(z)) + lik.logit_bias  # [3, 1, 1, 2, 5]
    expected = torch.log_softmax(logits, -1).gather(-1, x.unsqueeze(-1)).squeeze(-1).sum((-1, -2, -3))
    torch.testing.assert_close(lik(z).log_prob(x.to(torch.uint8)), expected)


@pytest.mark.parametrize("cls", DISCRETE)
def test_discrete_likelihoods_have_finite_gradients_at_extreme_outputs(cls):
    lik, out_shape = discrete_likelihood(cls, 256)
    lik = lik.float()
    for z in [torch.randn(4, *out_shape), 1e3 * torch.randn(4, *out_shape),
              torch.full((4, *out_shape), -1e4), torch.full((4, *out_shape), 80.0)]:
        z = z.requires_grad_()
        x = torch.tensor([0, 255, 1, 128, 254, 7], dtype=torch.uint8).repeat(4).view(4, 1, 2, 3)
        log_p = lik(z).log_prob(x)
        assert torch.isfinite(log_p).all()
        log_p.sum().backward()
        assert torch.isfinite(z.grad).all()
        for p in lik.parameters():
            assert p.grad is None or torch.isfinite(p.grad).all()


@pytest.mark.parametrize("cls", DISCRETE)
def test_samples_lie_on_the_grid_with_the_model_frequencies(cls):
    num_bins = 9
    lik, out_shape = discrete_likelihood(cls, num_bins, data_shape=(1, 1, 1), seed=3)
    z = torch.randn(1, *out_shape, dtype=torch.float64)
    if cls is DiscretizedLogisticLikelihood:
        z[0, 0], z[0, 1] = 0.2, -1.0  # a location between bins, a scale of a few bins
    per_pixel = lik(z).base_dist
    probs = per_pixel.log_prob(all_levels(num_bins, per_pixel.batch_shape)).exp().flatten().detach()
    torch.manual_seed(0)
    x = lik(z).sample((40000,)).flatten()
    assert ((x == x.round()) & (x >= 0) & (x <= num_bins - 1)).all()
    counts = torch.bincount(x.long(), minlength=num_bins).double()
    expected = 40000 * probs
    keep = expected > 5  # chi-square needs expected counts of 5 or more; the rest pooled
    observed = torch.cat([counts[keep], counts[~keep].sum().view(1)])
    expected = torch.cat([expected[keep], expected[~keep].sum().view(1)])
    if expected[-1] <= 5:
        observed, expected = observed[:-1], expected[:-1]
    assert keep.sum() >= 3
    _, p_value = stats.chisquare(observed.numpy(), expected.numpy() * observed.sum().item()
                                 / expected.sum().item())
    assert p_value > 1e-3, (counts, 40000 * probs)


@pytest.mark.parametrize("cls", DISCRETE)
def test_mean_is_the_expected_level(cls):
    lik, out_shape = discrete_likelihood(cls, 17, seed=1)
    z = torch.randn(2, *out_shape, dtype=torch.float64)
    p_x = lik(z)
    per_pixel = p_x.base_dist
    levels = all_levels(17, per_pixel.batch_shape)
    expected = (levels * per_pixel.log_prob(levels).exp()).sum(0)
    torch.testing.assert_close(p_x.mean, expected)


def test_log_scale_stays_between_its_floor_and_ceiling_and_is_about_the_identity_between():
    from vaekit.likelihoods import LOG_SCALE_CEILING, LOG_SCALE_FLOOR, bounded_log_scale

    raw = torch.tensor([-1e30, -50.0, -2.0, 0.0, 2.0, 50.0, 1e30])
    log_scale = bounded_log_scale(raw)
    assert (log_scale >= LOG_SCALE_FLOOR).all() and (log_scale <= LOG_SCALE_CEILING + 1e-6).all()
    torch.testing.assert_close(log_scale[[0, -1]], torch.tensor([LOG_SCALE_FLOOR,
                                                                 LOG_SCALE_CEILING]))
    torch.testing.assert_close(log_scale[2:5], raw[2:5], atol=0.01, rtol=0)


def test_discrete_support_checks_and_registry_flags():
    lik, _ = discrete_likelihood(DiscretizedLogisticLikelihood, 17)
    lik.check_support(torch.tensor([0, 16], dtype=torch.uint8))
    with pytest.raises(DataError, match="integer"):
        lik.check_support(torch.tensor([0.5]))
    with pytest.raises(DataError, match="0..16"):
        lik.check_support(torch.tensor([17.0]))
    assert [n for n in LIKELIHOODS if needs_levels(n)] == [
        "discretized-logistic", "discretized-logistic-mixture", "categorical"]
    assert is_discrete("bernoulli") and not is_discrete("gaussian")
    assert not is_discrete("continuous-bernoulli")
