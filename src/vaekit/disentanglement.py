"""Disentanglement metrics of codes against the ground-truth factors that generated the data:
the mutual information gap (:func:`mig`), the SAP score (:func:`sap`), DCI (:func:`dci`), the
number of active units (:func:`active_units`), and the total correlation of the aggregate
posterior q(z), of a Gaussian in closed form (:func:`gaussian_total_correlation`) and of a
minibatch of posteriors by minibatch weighted or stratified sampling
(:func:`total_correlation_mws`, :func:`total_correlation_mss`).

Codes are ``[N, L]`` (posterior means, one row per example), factors ``[N, K]`` integers (the
index of each factor's value). The definitions follow disentanglement_lib (Locatello et al.
2019, ``evaluation/metrics/*.py``); each function names the file it follows. The scores that
sample observations from a generator of factors (BetaVAE, FactorVAE) are in
:mod:`vaekit.disentanglement_scores`."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.distributions import Normal

from .errors import DataError
from .evaluation import ACTIVE_UNIT_THRESHOLD

TRAIN_FRACTION = 0.8  # the split of (codes, factors) when no test arrays are given


def to_numpy(array) -> np.ndarray:
    """A numpy array of ``array`` (a numpy array, a list, or a tensor on any device)."""
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _codes_and_factors(codes, factors) -> tuple[np.ndarray, np.ndarray]:
    codes, factors = to_numpy(codes).astype(np.float64), to_numpy(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise DataError(f"codes must be [N, L] and factors [N, K] with the same N; got codes "
                        f"{list(codes.shape)} and factors {list(factors.shape)}")
    return codes, factors


def _check_factors_vary(factors: np.ndarray) -> None:
    constant = [k for k in range(factors.shape[1]) if len(np.unique(factors[:, k])) < 2]
    if constant:
        raise DataError(f"factor(s) {constant} take a single value in these examples: a metric "
                        "needs every factor to vary (leave the constant ones out)")


def _train_test(codes, factors, codes_test, factors_test):
    """The given train and test arrays, or the first 80% and the last 20% of (codes, factors)."""
    codes, factors = _codes_and_factors(codes, factors)
    if (codes_test is None) != (factors_test is None):
        raise DataError("give both codes_test and factors_test, or neither")
    if codes_test is None:
        cut = int(TRAIN_FRACTION * len(codes))
        return codes[:cut], factors[:cut], codes[cut:], factors[cut:]
    codes_test, factors_test = _codes_and_factors(codes_test, factors_test)
    return codes, factors, codes_test, factors_test


# -- mutual information gap ---------------------------------------------------------------

def histogram_discretize(codes, num_bins: int = 20) -> np.ndarray:
    """Each code dimension binned into ``num_bins`` equal-width bins over its range: bin index
    1..num_bins from ``np.digitize`` on the ``np.histogram`` edges without the last one.
    ``codes [N, L] -> [N, L]`` integers. Follows ``_histogram_discretize`` in
    disentanglement_lib ``evaluation/metrics/utils.py``."""
    codes = to_numpy(codes)
    binned = np.empty(codes.shape, dtype=np.int64)
    for dim in range(codes.shape[1]):
        edges = np.histogram(codes[:, dim], num_bins)[1]
        binned[:, dim] = np.digitize(codes[:, dim], edges[:-1])
    return binned


def mutual_information_matrix(binned_codes, factors) -> np.ndarray:
    """m[l, k] = I(code_l; factor_k) in nats, the plug-in estimate from the joint histogram
    (``sklearn.metrics.mutual_info_score``), codes already discrete. ``[N, L], [N, K] -> [L, K]``.
    Follows ``discrete_mutual_info`` in disentanglement_lib ``evaluation/metrics/utils.py``."""
    from sklearn.metrics import mutual_info_score

    binned_codes, factors = to_numpy(binned_codes), to_numpy(factors)
    return np.array([[mutual_info_score(factors[:, k], binned_codes[:, dim])
                      for k in range(factors.shape[1])] for dim in range(binned_codes.shape[1])])


def mig(codes, factors, num_bins: int = 20) -> float:
    """MIG = (1/K) sum_k (m[l_1(k), k] - m[l_2(k), k]) / H(factor_k), where m[l, k] =
    I(code_l; factor_k) after binning each code into ``num_bins`` equal-width bins and l_1(k),
    l_2(k) are the codes with the largest and second largest information about factor k.

    ``codes [N, L]`` (L >= 2), ``factors [N, K]`` integers; H(factor_k) is the plug-in entropy
    (nats). 1 when each factor is read losslessly from one code and no other code knows
    anything of it; 0 when the best two codes know equally much. Chen et al. 2018; follows
    disentanglement_lib ``evaluation/metrics/mig.py`` (``discrete_mig``)."""
    codes, factors = _codes_and_factors(codes, factors)
    _check_factors_vary(factors)
    if codes.shape[1] < 2:
        raise DataError("MIG compares the two most informative codes: it needs L >= 2")
    m = mutual_information_matrix(histogram_discretize(codes, num_bins), factors)  # [L, K]
    entropy = np.diag(mutual_information_matrix(factors, factors))  # [K]: I(f; f) = H(f)
    top = np.sort(m, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / entropy))


# -- SAP --------------------------------------------------------------------------------------

def sap_score_matrix(codes, factors, codes_test=None, factors_test=None, *,
                     continuous_factors: bool = False) -> np.ndarray:
    """S[l, k]: how well code l alone predicts factor k. ``[N, L], [N, K] -> [L, K]``.

    Discrete factors: the test accuracy of ``LinearSVC(C=0.01, class_weight="balanced")``
    trained on code l alone (train and test arrays as in :func:`sap`). Continuous factors:
    R^2 = Cov(code_l, f_k)^2 / (Var code_l Var f_k) over all of ``codes`` (0 for a constant
    code). Follows ``_compute_score_matrix`` in disentanglement_lib
    ``evaluation/metrics/sap_score.py``."""
    if continuous_factors:
        codes, factors = _codes_and_factors(codes, factors)
        factors = factors.astype(np.float64)
        scores = np.zeros((codes.shape[1], factors.shape[1]))
        for dim in range(codes.shape[1]):
            for k in range(factors.shape[1]):
                cov = np.cov(codes[:, dim], factors[:, k], ddof=1)
                if cov[0, 0] > 1e-12:
                    scores[dim, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
        return scores
    from sklearn.svm import LinearSVC

    codes, factors, codes_test, factors_test = _train_test(codes, factors, codes_test,
                                                           factors_test)
    _check_factors_vary(factors)
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for dim in range(codes.shape[1]):
        for k in range(factors.shape[1]):
            svm = LinearSVC(C=0.01, class_weight="balanced")
            svm.fit(codes[:, dim : dim + 1], factors[:, k])
            predicted = svm.predict(codes_test[:, dim : dim + 1])
            scores[dim, k] = np.mean(predicted == factors_test[:, k])
    return scores


def sap(codes, factors, codes_test=None, factors_test=None, *,
        continuous_factors: bool = False) -> float:
    """SAP = (1/K) sum_k (S[l_1(k), k] - S[l_2(k), k]): the gap between the two codes that
    predict factor k best, with S from :func:`sap_score_matrix`.

    ``codes [N, L]`` (L >= 2), ``factors [N, K]``. For discrete factors the classifiers train
    on ``(codes, factors)`` and are scored on ``(codes_test, factors_test)``; without those,
    on the first 80% and the last 20% of the rows. Kumar et al. 2018; follows
    disentanglement_lib ``evaluation/metrics/sap_score.py``."""
    scores = sap_score_matrix(codes, factors, codes_test, factors_test,
                              continuous_factors=continuous_factors)
    if scores.shape[0] < 2:
        raise DataError("SAP compares the two most predictive codes: it needs L >= 2")
    top = np.sort(scores, axis=0)[::-1]
    return float(np.mean(top[0] - top[1]))


# -- DCI --------------------------------------------------------------------------------------

def _one_minus_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """1 - H(p / sum p) in log base ``base``, per column of p (the columns need not sum to 1)."""
    p = p / p.sum(0, keepdims=True)
    entropy = -(p * np.log(p)).sum(0) / math.log(base)
    return 1.0 - entropy


def disentanglement_completeness(importance) -> tuple[float, float]:
    """(D, C) of an importance matrix R ``[L, K]`` (R[l, k] >= 0: how much code l matters to
    predict factor k), with rho = R / sum R and H_b the entropy in log base b:

        D = sum_l (sum_k rho[l, k]) (1 - H_K(R[l, :] / sum_k R[l, k]))
        C = sum_k (sum_l rho[l, k]) (1 - H_L(R[:, k] / sum_l R[l, k]))

    so both are importance-weighted averages (completeness too, weighted by each factor's
    share of the total importance, as disentanglement_lib does). 1e-11 is added to R before
    the entropies, so an all-zero row or column counts as uniform (score 0). Eastwood &
    Williams 2018; follows ``disentanglement`` and ``completeness`` in disentanglement_lib
    ``evaluation/metrics/dci.py``."""
    importance = to_numpy(importance).astype(np.float64)
    num_codes, num_factors = importance.shape
    if num_codes < 2 or num_factors < 2:
        raise DataError("DCI needs at least 2 codes and 2 factors (entropies in log base L, K)")
    per_code = _one_minus_entropy(importance.T + 1e-11, num_factors)  # [L]
    per_factor = _one_minus_entropy(importance + 1e-11, num_codes)  # [K]
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    rho = weights / weights.sum()
    return float(per_code @ rho.sum(1)), float(per_factor @ rho.sum(0))


def dci(codes, factors, codes_test=None, factors_test=None, *, estimator=None) -> dict:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018).

    One classifier per factor predicts factor k from all codes; R[l, k] = |importance of code l|
    (``feature_importances_``), ``disentanglement`` and ``completeness`` from R by
    :func:`disentanglement_completeness`, ``informativeness`` = the classifiers' mean accuracy
    on ``(codes_test, factors_test)`` (without those: trained on the first 80% of the rows,
    tested on the last 20%). ``estimator``: the classifier, cloned for each factor
    (default ``GradientBoostingClassifier()``; any with ``feature_importances_``).

    ``codes [N, L]``, ``factors [N, K]`` -> ``{"disentanglement", "completeness",
    "informativeness"}``. Follows disentanglement_lib ``evaluation/metrics/dci.py``
    (``informativeness`` is its ``informativeness_test``)."""
    from sklearn.base import clone
    from sklearn.ensemble import GradientBoostingClassifier

    codes, factors, codes_test, factors_test = _train_test(codes, factors, codes_test,
                                                           factors_test)
    _check_factors_vary(factors)
    prototype = GradientBoostingClassifier() if estimator is None else estimator
    importance = np.zeros((codes.shape[1], factors.shape[1]))  # [L, K]
    accuracy = []
    for k in range(factors.shape[1]):
        classifier = clone(prototype).fit(codes, factors[:, k])
        importance[:, k] = np.abs(classifier.feature_importances_)
        accuracy.append(np.mean(classifier.predict(codes_test) == factors_test[:, k]))
    disentanglement, completeness = disentanglement_completeness(importance)
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness": float(np.mean(accuracy))}


# -- active units -----------------------------------------------------------------------------

def active_units(codes, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """#{l : Var_x E_q[z_l] > threshold}, the variance over examples (unbiased) of the posterior
    means ``codes [N, L]`` (Burda et al. 2016). The same rule as ``active_units`` in
    :func:`vaekit.evaluation.latent_diagnostics`, for codes already computed."""
    return int((to_numpy(codes).astype(np.float64).var(0, ddof=1) > threshold).sum())


# -- total correlation ------------------------------------------------------------------------

def gaussian_total_correlation(cov) -> float:
    """TC = KL(N(0, C) || prod_l N(0, C_ll)) = (1/2) (sum_l log C_ll - log det C) for a
    covariance ``C [L, L]``. Follows ``gaussian_total_correlation`` in disentanglement_lib
    ``evaluation/metrics/unsupervised_metrics.py``."""
    cov = to_numpy(cov).astype(np.float64)
    return float(0.5 * (np.log(np.diag(cov)).sum() - np.linalg.slogdet(cov)[1]))


def _log_stratified_weights(batch_size: int, dataset_size: int, like: torch.Tensor):
    """log w[i, j] of minibatch stratified sampling (Chen et al. 2018, appendix), for a batch of
    M = ``batch_size`` distinct examples from N = ``dataset_size``: w[i, i] = 1/N (x_i's own
    posterior), w[i, i+1 mod M] = (N - M + 1) / (N (M - 1)), and 1/(M - 1) for the M - 2 others.
    Each row sums to 1, and for a batch drawn uniformly without replacement
    sum_j w[i, j] q(z|x_j) is an unbiased estimate of q(z) = (1/N) sum_n q(z|x_n). (Chen et al.'s
    published code puts 1/N in column 0 of every row instead of on the diagonal.) -> [M, M]"""
    if batch_size < 2 or dataset_size < batch_size:
        raise DataError(f"stratified sampling needs 2 <= batch size <= dataset size; got a batch "
                        f"of {batch_size} from {dataset_size}")
    num_others, n = batch_size - 1, dataset_size
    weights = torch.full((batch_size, batch_size), 1.0 / num_others, dtype=torch.float64)
    rows = torch.arange(batch_size)
    weights[rows, rows] = 1.0 / n
    weights[rows, (rows + 1) % batch_size] = (n - num_others) / (n * num_others)
    return weights.log().to(dtype=like.dtype, device=like.device)


def minibatch_log_densities(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                            dataset_size: int, *, stratified: bool = False):
    """log q(z_i) and log q(z_i,l) of the aggregate posterior q(z) = (1/N) sum_n q(z|x_n),
    estimated from a minibatch of diagonal Gaussian posteriors q(z|x_j) = N(loc_j, scale_j^2):

        log q(z_i)   ~= logsumexp_j [log w_ij + log q(z_i|x_j)]
        log q(z_i,l) ~= logsumexp_j [log w_ij + log q(z_i,l|x_j,l)]

    with z_i ~ q(z|x_i). Minibatch weighted sampling (``stratified=False``): w_ij = 1/(N M);
    minibatch stratified sampling: the weights of :func:`_log_stratified_weights`. Chen et al.
    2018 (beta-TCVAE), Sec. 4.1 and appendix. Differentiable; one ``[M, M, L]`` table of
    log-densities, no loop over examples.

    ``z, loc, scale [M, L]``, ``dataset_size`` N -> ``(log_qz [M], log_qz_marginals [M, L])``."""
    batch_size = z.shape[0]
    log_q = Normal(loc.unsqueeze(0), scale.unsqueeze(0), validate_args=False).log_prob(
        z.unsqueeze(1))  # [M, M, L]: log q(z_i,l | x_j)
    if stratified:
        log_w = _log_stratified_weights(batch_size, dataset_size, z)  # [M, M]
    else:
        log_w = torch.full((batch_size, batch_size), -math.log(dataset_size * batch_size),
                           dtype=z.dtype, device=z.device)
    log_qz = torch.logsumexp(log_w + log_q.sum(-1), dim=1)  # [M]
    log_qz_marginals = torch.logsumexp(log_w.unsqueeze(-1) + log_q, dim=1)  # [M, L]
    return log_qz, log_qz_marginals


def total_correlation_mws(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                          dataset_size: int) -> torch.Tensor:
    """TC = KL(q(z) || prod_l q(z_l)) ~= (1/M) sum_i [log q(z_i) - sum_l log q(z_i,l)], both
    densities by minibatch weighted sampling (:func:`minibatch_log_densities`; Chen et al. 2018,
    Sec. 4.1). A scalar tensor, differentiable in z, loc and scale.

    The weights 1/(N M) sum to M/(N M) = 1/N, not 1, so the estimate is biased: it equals the
    plug-in TC of the minibatch mixture (1/M) sum_j q(z|x_j) plus the constant (L - 1) log N.
    The constant does not change gradients (the training objective of beta-TCVAE); to read the
    value as a TC, use :func:`total_correlation_mss`.

    ``z, loc, scale [M, L]`` (z_i ~ q(z|x_i)), ``dataset_size`` N."""
    log_qz, log_qz_marginals = minibatch_log_densities(z, loc, scale, dataset_size)
    return (log_qz - log_qz_marginals.sum(-1)).mean()


def total_correlation_mss(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                          dataset_size: int) -> torch.Tensor:
    """TC = KL(q(z) || prod_l q(z_l)) ~= (1/M) sum_i [log q(z_i) - sum_l log q(z_i,l)], both
    densities by minibatch stratified sampling (:func:`minibatch_log_densities`; Chen et al.
    2018, appendix): the estimates of q(z_i) and q(z_i,l) inside the logs are unbiased, so the
    estimate approaches the TC of the aggregate posterior as the batch grows. A scalar tensor,
    differentiable in z, loc and scale.

    ``z, loc, scale [M, L]`` (z_i ~ q(z|x_i)), ``dataset_size`` N >= M >= 2."""
    log_qz, log_qz_marginals = minibatch_log_densities(z, loc, scale, dataset_size,
                                                       stratified=True)
    return (log_qz - log_qz_marginals.sum(-1)).mean()
