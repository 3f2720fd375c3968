"""Disentanglement metrics against known answers: codes that copy the factors (score 1 or
near it), codes of pure noise (0 or chance), exact values where the discretization is lossless,
closed forms (Gaussian total correlation, R^2, entropies by scipy), and the minibatch estimators
of q(z) against brute-force enumeration of every minibatch."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import entropy, norm, pearsonr
from sklearn.ensemble import GradientBoostingClassifier
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from vaekit.disentanglement import (
    active_units,
    dci,
    disentanglement_completeness,
    gaussian_total_correlation,
    mig,
    minibatch_log_densities,
    sap,
    sap_score_matrix,
    total_correlation_mss,
    total_correlation_mws,
)
from vaekit.disentanglement_scores import betavae_score, factorvae_score, model_encoder
from vaekit.errors import DataError
from vaekit.evaluation import ACTIVE_UNIT_THRESHOLD
from vaekit.posteriors import GaussianPosterior

SIZES = (4, 5, 3)  # values per factor


def grid(sizes=SIZES, repeats: int = 1) -> np.ndarray:
    """Every combination of factor values, ``repeats`` times: the factors are exactly
    independent in these rows, so the plug-in mutual information between two of them is 0."""
    rows = np.array(list(itertools.product(*map(range, sizes))))
    return np.tile(rows, (repeats, 1))


def random_factors(num: int, sizes=SIZES, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(size, size=num) for size in sizes], axis=1)


# -- MIG --------------------------------------------------------------------------------------

def test_mig_is_exactly_one_when_each_factor_is_copied_losslessly_to_its_own_code():
    factors = grid(repeats=3)
    assert mig(factors.astype(float), factors) == pytest.approx(1.0, abs=1e-12)
    # bins of equal width over each code's range: an affine map of a code changes nothing
    assert mig(3.0 * factors - 7.0, factors) == pytest.approx(1.0, abs=1e-12)


def test_mig_of_copied_factors_plus_a_noise_code_is_close_to_one():
    factors = grid(repeats=100)  # 6000 rows
    noise = np.random.default_rng(0).normal(size=(len(factors), 1))
    score = mig(np.hstack([factors, noise]), factors)
    assert 0.97 < score < 1.0


def test_mig_of_noise_codes_is_near_zero():
    factors = random_factors(10000)
    codes = np.random.default_rng(1).normal(size=(10000, 4))
    assert 0.0 <= mig(codes, factors) < 0.05


def test_mig_is_one_half_when_a_second_code_also_reads_one_of_two_factors():
    # code 0 = f0; code 1 = f0 + 4 f1 takes 20 values, read losslessly by 20 bins: for f0 both
    # codes hold all of H(f0) (gap 0), for f1 only code 1 does (gap H(f1)): MIG = (0 + 1) / 2
    factors = grid((4, 5), repeats=10)
    codes = np.stack([factors[:, 0], factors[:, 0] + 4 * factors[:, 1]], axis=1).astype(float)
    assert mig(codes, factors) == pytest.approx(0.5, abs=1e-12)


def test_mig_rejects_a_constant_factor_and_mismatched_rows():
    factors = grid()
    factors[:, 1] = 2
    with pytest.raises(DataError, match=r"factor\(s\) \[1\]"):
        mig(factors.astype(float), factors)
    with pytest.raises(DataError, match="same N"):
        mig(np.zeros((5, 2)), np.zeros((6, 2)))


# -- SAP --------------------------------------------------------------------------------------

def test_sap_of_an_axis_aligned_code_is_high_and_of_noise_near_zero():
    factors = random_factors(1000, sizes=(2, 3), seed=2)
    rng = np.random.default_rng(3)
    aligned = factors + 0.05 * rng.normal(size=factors.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LinearSVC's convergence warnings on noise
        scores = sap_score_matrix(aligned, factors)
        assert np.diag(scores).min() > 0.7  # each factor read from its own code
        assert sap(aligned, factors) > 0.5
        # noise: the two best accuracies differ only by sampling error (1000 test rows)
        noise_factors = random_factors(5000, sizes=(2, 3), seed=4)
        assert abs(sap(rng.normal(size=(5000, 3)), noise_factors)) < 0.05


def test_sap_with_continuous_factors_is_the_gap_between_the_two_best_squared_correlations():
    rng = np.random.default_rng(4)
    factors = rng.normal(size=(500, 2))
    codes = np.stack([factors[:, 0] + 0.5 * rng.normal(size=500),
                      factors[:, 0] - factors[:, 1] + rng.normal(size=500),
                      rng.normal(size=500)], axis=1)
    r2 = np.array([[pearsonr(codes[:, dim], factors[:, k])[0] ** 2 for k in range(2)]
                   for dim in range(3)])
    best = np.sort(r2, axis=0)
    expected = np.mean(best[-1] - best[-2])
    assert sap(codes, factors, continuous_factors=True) == pytest.approx(expected, rel=1e-10)


# -- DCI --------------------------------------------------------------------------------------

def test_disentanglement_and_completeness_of_importance_matrices_with_known_answers():
    assert disentanglement_completeness(np.eye(3)) == pytest.approx((1.0, 1.0), abs=1e-8)
    assert disentanglement_completeness(np.ones((3, 4))) == pytest.approx((0.0, 0.0), abs=1e-8)
    # two codes that both serve factor 0: each code is pure (D = 1), but factor 0 is spread
    # evenly over two codes (1 - H_2 = 0) and factor 1 has no importance (weight 0): C = 0
    d, c = disentanglement_completeness(np.array([[1.0, 0.0], [1.0, 0.0]]))
    assert (d, c) == pytest.approx((1.0, 0.0), abs=1e-8)


def test_disentanglement_and_completeness_match_scipy_entropies():
    importance = np.random.default_rng(5).random((4, 3))
    rho = importance / importance.sum()
    per_code = 1 - entropy(importance.T, base=3)  # scipy normalizes each column
    per_factor = 1 - entropy(importance, base=4)
    d, c = disentanglement_completeness(importance)
    assert d == pytest.approx(per_code @ rho.sum(1), abs=1e-8)
    assert c == pytest.approx(per_factor @ rho.sum(0), abs=1e-8)


def test_dci_of_an_axis_aligned_code_is_near_one_and_of_a_rotated_code_clearly_lower():
    factors = random_factors(800, seed=6)
    rng = np.random.default_rng(7)
    noise = 0.05 * rng.normal(size=factors.shape)
    estimator = GradientBoostingClassifier(n_estimators=20)  # small: the test stays quick
    aligned = dci(factors + noise, factors, estimator=estimator)
    assert aligned["disentanglement"] > 0.9 and aligned["completeness"] > 0.9
    assert aligned["informativeness"] > 0.95
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]  # every code mixes every factor
    rotated = dci(factors @ rotation + noise, factors, estimator=estimator)
    assert rotated["disentanglement"] < aligned["disentanglement"] - 0.3
    assert rotated["informativeness"] > 0.9  # the information is all there, only mixed


# -- active units -----------------------------------------------------------------------------

def test_active_units_counts_codes_whose_variance_exceeds_the_threshold():
    rng = np.random.default_rng(8)
    codes = rng.normal(size=(2000, 4)) * np.array([1.0, 0.2, 0.05, 0.0])  # variances 1, .04, .0025
    assert ACTIVE_UNIT_THRESHOLD == 0.01
    assert active_units(codes) == 2
    assert active_units(torch.from_numpy(codes), threshold=0.001) == 3


# -- BetaVAE and FactorVAE scores -------------------------------------------------------------

def synthetic_generator(sizes=(3, 4, 5, 6), noise: float = 0.01, seed: int = 0):
    """sample_factors and observe for independent uniform factors; an observation is the factor
    vector plus a little Gaussian noise."""
    noise_rng = np.random.default_rng(seed + 100)

    def sample_factors(n, rng):
        return np.stack([rng.integers(size, size=n) for size in sizes], axis=1)

    def observe(factors):
        return factors + noise * noise_rng.normal(size=factors.shape)

    return sample_factors, observe


def noise_encoder(seed: int = 0):
    rng = np.random.default_rng(seed)
    return lambda x: rng.normal(size=(len(x), 4))


SCORES = {"betavae": betavae_score, "factorvae": factorvae_score}
OPTIONS = {"batch_size": 32, "num_train": 400, "num_eval": 400, "chunk_size": 1000}


@pytest.mark.parametrize("name", SCORES)
def test_a_score_is_near_one_when_the_codes_are_the_factors(name):
    sample_factors, observe = synthetic_generator()
    extra = {"num_variance_estimate": 1000} if name == "factorvae" else {}
    assert SCORES[name](sample_factors, observe, lambda x: x, **OPTIONS, **extra) > 0.98


@pytest.mark.parametrize("name", SCORES)
def test_a_score_is_at_chance_when_the_codes_are_noise(name):
    sample_factors, observe = synthetic_generator()
    extra = {"num_variance_estimate": 1000} if name == "factorvae" else {}
    score = SCORES[name](sample_factors, observe, noise_encoder(), **OPTIONS, **extra)
    assert abs(score - 1 / 4) < 0.08  # chance with K = 4 factors; +-3.5 standard errors


def test_factorvae_score_ignores_a_code_that_never_varies():
    sample_factors, observe = synthetic_generator()
    constant_too = lambda x: np.hstack([x, np.zeros((len(x), 1))])
    score = factorvae_score(sample_factors, observe, constant_too, num_variance_estimate=1000,
                            **OPTIONS)
    assert score > 0.98


def test_factorvae_score_divides_each_code_by_its_global_scale():
    # code 0 stretched 300 times: held fixed, factor 0 leaves it a variance of (300 0.01)^2 = 9,
    # more than the free codes' raw variances (1.25 to 2.9); only relative to its global
    # variance (300^2 2/3) is it the smallest
    sample_factors, observe = synthetic_generator()
    stretched = lambda x: x * np.array([300.0, 1.0, 1.0, 1.0])
    score = factorvae_score(sample_factors, observe, stretched, num_variance_estimate=1000,
                            **OPTIONS)
    assert score > 0.98


def test_scores_are_reproducible_from_the_seed():
    sample_factors, observe = synthetic_generator(noise=0.0)
    first = betavae_score(sample_factors, observe, noise_encoder(), seed=3, **OPTIONS)
    again = betavae_score(sample_factors, observe, noise_encoder(), seed=3, **OPTIONS)
    assert first == again


def test_model_encoder_returns_the_posterior_means_in_batches_and_restores_the_mode():
    torch.manual_seed(0)
    model = nn.Module()
    model.encoder = GaussianPosterior(nn.Linear(4, 6), latent_dim=3)
    model.train()
    x = np.random.default_rng(9).normal(size=(10, 4)).astype(np.float32)
    codes = model_encoder(model, batch_size=3)(x)
    expected = model.encoder.net(torch.from_numpy(x))[:, :3].detach().double().numpy()
    assert codes.shape == (10, 3) and codes.dtype == np.float64
    np.testing.assert_allclose(codes, expected, rtol=1e-6)
    assert model.training


# -- total correlation ------------------------------------------------------------------------

def test_gaussian_total_correlation_is_the_kl_to_the_product_of_marginals():
    a = torch.tensor([[1.0, 0.8, 0.1], [0.0, 0.6, -0.5], [0.2, 0.0, 0.9]], dtype=torch.float64)
    cov = a.T @ a
    kl = kl_divergence(MultivariateNormal(torch.zeros(3, dtype=torch.float64), cov),
                       MultivariateNormal(torch.zeros(3, dtype=torch.float64),
                                          torch.diag(torch.diag(cov))))
    assert gaussian_total_correlation(cov) == pytest.approx(float(kl), rel=1e-10)
    assert gaussian_total_correlation(np.diag([1.0, 4.0])) == pytest.approx(0.0, abs=1e-12)


def posteriors(num: int, a: torch.Tensor, scale: float, seed: int):
    """A batch of posteriors q(z|x_n) = N(x_n A, scale^2 I), x_n ~ N(0, I), and z_n ~ q(z|x_n):
    the aggregate posterior tends to N(0, A^T A + scale^2 I) as num grows."""
    generator = torch.Generator().manual_seed(seed)
    loc = torch.randn(num, a.shape[0], generator=generator, dtype=a.dtype) @ a
    scale = torch.full_like(loc, scale)
    return loc + scale * torch.randn(loc.shape, generator=generator, dtype=a.dtype), loc, scale


def test_total_correlation_mss_approaches_the_gaussian_total_correlation():
    # the estimate is consistent, not unbiased: with M = N = 1500 it lands 0.02 +- 0.02 nats
    # above the Gaussian value (mean and standard deviation over 8 seeds)
    scale = 0.2
    correlated = torch.tensor([[1.0, 0.8], [0.0, 0.6]], dtype=torch.float64)
    exact = gaussian_total_correlation((correlated.T @ correlated).numpy() + scale**2 * np.eye(2))
    assert exact > 0.4
    estimate = total_correlation_mss(*posteriors(1500, correlated, scale, seed=0), 1500)
    assert float(estimate) == pytest.approx(exact, abs=0.06)
    independent = torch.diag(torch.tensor([1.0, 0.5], dtype=torch.float64))
    estimate = total_correlation_mss(*posteriors(1500, independent, scale, seed=1), 1500)
    assert abs(float(estimate)) < 0.03


def test_stratified_estimates_of_q_z_are_unbiased_over_every_minibatch():
    # N = 5 posteriors; every ordered minibatch of 3 distinct examples that contains example 0,
    # with z at its position: the mean of the estimates of q(z) and of each q(z_l) over them
    # is the exact mixture (1/N) sum_n q(z|x_n), and its marginals
    generator = torch.Generator().manual_seed(2)
    num, size = 5, 3
    loc = torch.randn(num, 2, generator=generator, dtype=torch.float64)
    scale = 0.5 + torch.rand(num, 2, generator=generator, dtype=torch.float64)
    z = torch.tensor([0.3, -0.4], dtype=torch.float64)
    q_joint, q_marginals = [], []
    for batch in itertools.permutations(range(num), size):
        if 0 not in batch:
            continue
        index = list(batch)
        at = index.index(0)
        zb = loc[index].clone()
        zb[at] = z
        log_qz, log_qz_marginals = minibatch_log_densities(zb, loc[index], scale[index], num,
                                                           stratified=True)
        q_joint.append(log_qz[at].exp())
        q_marginals.append(log_qz_marginals[at].exp())
    per_example = norm.pdf(z.numpy(), loc.numpy(), scale.numpy())  # [N, L]
    assert float(torch.stack(q_joint).mean()) == pytest.approx(
        per_example.prod(1).mean(), rel=1e-10)
    np.testing.assert_allclose(torch.stack(q_marginals).mean(0).numpy(),
                               per_example.mean(0), rtol=1e-10)


def test_total_correlation_mws_is_the_batch_mixture_tc_plus_the_weights_offset():
    # by brute force in numpy: the plug-in TC of (1/M) sum_j q(z|x_j) over the batch, plus
    # (L - 1) log N from the weights 1/(N M)
    a = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]], dtype=torch.float64)
    z, loc, scale = posteriors(50, a, 0.3, seed=3)
    z_, loc_, scale_ = z.numpy(), loc.numpy(), scale.numpy()
    log_q = norm.logpdf(z_[:, None, :], loc_[None], scale_[None])  # [M, M, L]
    log_qz = logsumexp(log_q.sum(-1), axis=1) - math.log(50)
    log_marginals = logsumexp(log_q, axis=1) - math.log(50)
    plug_in = np.mean(log_qz - log_marginals.sum(-1))
    estimate = total_correlation_mws(z, loc, scale, dataset_size=10000)
    assert float(estimate) == pytest.approx(plug_in + 2 * math.log(10000), rel=1e-10)


@pytest.mark.parametrize("estimator", [total_correlation_mws, total_correlation_mss])
def test_total_correlation_estimates_have_finite_gradients_even_for_narrow_posteriors(estimator):
    a = torch.tensor([[1.0, 0.8], [0.0, 0.6]])
    z, loc, scale = posteriors(64, a, 1e-3, seed=4)  # far-apart posteriors: log q ~ -1e5
    loc.requires_grad_(True)
    log_scale = scale.log().requires_grad_(True)
    eps = (z - loc).detach() / scale
    tc = estimator(loc + log_scale.exp() * eps, loc, log_scale.exp(), 1000)
    tc.backward()
    assert torch.isfinite(tc)
    assert torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad).all()
    assert loc.grad.abs().sum() > 0
