"""The disentanglement scores that intervene on the ground-truth factors: the BetaVAE score
(:func:`betavae_score`, Higgins et al. 2017) and the FactorVAE score (:func:`factorvae_score`,
Kim & Mnih 2018), as defined in disentanglement_lib (``evaluation/metrics/beta_vae.py``,
``factor_vae.py``).

Both draw factor vectors, render them and encode the observations, through three callables:

- ``sample_factors(n, rng) -> [n, K]``: n factor vectors (value indices), drawn with the numpy
  ``Generator`` rng;
- ``observe(factors [n, K]) -> x``: the observations of those factors (array or tensor);
- ``encode(x) -> [n, L]``: the codes, usually the posterior means;
  :func:`model_encoder` makes one from a vaekit model.

Plain numpy functions fit, so a score can be checked on a synthetic generator. Observations are
rendered and encoded ``chunk_size`` at a time (a batch of pairs is never split)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .batched import model_device
from .disentanglement import to_numpy
from .errors import DataError
from .posteriors import posterior_mean

SampleFactors = Callable[[int, np.random.Generator], np.ndarray]


def model_encoder(model, batch_size: int = 256) -> Callable[[object], np.ndarray]:
    """encode(x) = E_q[z|x] of a vaekit model (``posterior_mean(model.encoder(x))``), in
    batches of ``batch_size`` on the model's device, in eval mode (restored after), as float64
    numpy ``[n, L]``. Observations are converted to the default float dtype."""
    device = model_device(model)

    @torch.inference_mode()
    def encode(x) -> np.ndarray:
        x = x if isinstance(x, torch.Tensor) else torch.as_tensor(to_numpy(x))
        was_training = model.training
        model.eval()
        try:
            means = [posterior_mean(model.encoder(
                x[start : start + batch_size].to(device, torch.get_default_dtype())))
                for start in range(0, len(x), batch_size)]
        finally:
            model.train(was_training)
        return torch.cat(means).double().cpu().numpy()

    return encode


def _encoded(factors: np.ndarray, observe, encode, chunk_size: int) -> np.ndarray:
    """encode(observe(factors)) ``[n, K] -> [n, L]``, ``chunk_size`` rows per call."""
    return np.concatenate([to_numpy(encode(observe(factors[start : start + chunk_size])))
                           for start in range(0, len(factors), chunk_size)]).astype(np.float64)


def _factors(sample_factors: SampleFactors, n: int, rng: np.random.Generator) -> np.ndarray:
    factors = np.array(sample_factors(n, rng))  # a copy: the scores overwrite a column
    if factors.ndim != 2 or len(factors) != n:
        raise DataError(f"sample_factors({n}, rng) must return [{n}, K]; got "
                        f"{list(factors.shape)}")
    return factors


# -- BetaVAE ----------------------------------------------------------------------------------

def _betavae_points(sample_factors, observe, encode, num_points: int, batch_size: int,
                    rng: np.random.Generator, chunk_size: int):
    """num_points (feature, label): label k uniform, feature = (1/B) sum_b |z1_b - z2_b| over B
    pairs of factor vectors that agree on factor k. -> ``([P, L], [P])``."""
    points_per_call = max(1, chunk_size // (2 * batch_size))
    features, labels = [], []
    for start in range(0, num_points, points_per_call):
        count = min(points_per_call, num_points - start)
        size = count * batch_size
        first = _factors(sample_factors, size, rng)  # [P B, K]
        second = _factors(sample_factors, size, rng)
        fixed = rng.integers(first.shape[1], size=count)  # [P]
        rows, columns = np.arange(size), np.repeat(fixed, batch_size)
        second[rows, columns] = first[rows, columns]
        z = _encoded(np.concatenate([first, second]), observe, encode, chunk_size)  # [2 P B, L]
        features.append(np.abs(z[:size] - z[size:]).reshape(count, batch_size, -1).mean(1))
        labels.append(fixed)
    return np.concatenate(features), np.concatenate(labels)


def betavae_score(sample_factors: SampleFactors, observe, encode, *, batch_size: int = 64,
                  num_train: int = 10000, num_eval: int = 5000, seed: int = 0,
                  chunk_size: int = 4096) -> float:
    """The accuracy with which a linear classifier tells which factor was held fixed from
    mean_b |z(x1_b) - z(x2_b)|, over ``batch_size`` pairs of observations whose factors agree
    on that one factor (drawn uniformly) and are otherwise independent.

    The classifier (``sklearn.linear_model.LogisticRegression``, default options but
    ``max_iter=1000``) trains on ``num_train`` such points and is scored on ``num_eval`` fresh
    ones. 1 when each factor moves its own codes; 1/K (chance) when the codes ignore the
    factors. Higgins et al. 2017; follows disentanglement_lib
    ``evaluation/metrics/beta_vae.py`` (``eval_accuracy``).

    ``sample_factors``, ``observe``, ``encode``: as in :mod:`vaekit.disentanglement_scores`;
    ``seed`` seeds every draw."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    train_x, train_y = _betavae_points(sample_factors, observe, encode, num_train, batch_size,
                                       rng, chunk_size)
    eval_x, eval_y = _betavae_points(sample_factors, observe, encode, num_eval, batch_size, rng,
                                     chunk_size)
    classifier = LogisticRegression(max_iter=1000, random_state=seed).fit(train_x, train_y)
    return float(classifier.score(eval_x, eval_y))


# -- FactorVAE --------------------------------------------------------------------------------

def _factorvae_votes(sample_factors, observe, encode, num_points: int, batch_size: int,
                     rng: np.random.Generator, chunk_size: int, scale: np.ndarray):
    """votes[k, a]: how often, of num_points batches of ``batch_size`` factor vectors sharing
    the value of factor k (k uniform), active code a had the smallest variance within the batch
    after dividing the codes by their global ``scale`` ``[A]``. -> ``[K, A]`` counts."""
    points_per_call = max(1, chunk_size // batch_size)
    votes = None
    for start in range(0, num_points, points_per_call):
        count = min(points_per_call, num_points - start)
        factors = _factors(sample_factors, count * batch_size, rng)
        num_factors = factors.shape[1]
        factors = factors.reshape(count, batch_size, num_factors)  # [P, B, K]
        fixed = rng.integers(num_factors, size=count)  # [P]
        batches = np.arange(count)
        factors[batches, :, fixed] = factors[batches, 0, fixed][:, None]
        z = _encoded(factors.reshape(-1, num_factors), observe, encode, chunk_size)
        z = z.reshape(count, batch_size, -1)[..., scale > 0] / scale[scale > 0]  # [P, B, A]
        if votes is None:
            votes = np.zeros((num_factors, z.shape[-1]), dtype=np.int64)
        np.add.at(votes, (fixed, z.var(1, ddof=1).argmin(1)), 1)
    return votes


def factorvae_score(sample_factors: SampleFactors, observe, encode, *, batch_size: int = 64,
                    num_train: int = 10000, num_eval: int = 5000,
                    num_variance_estimate: int = 10000, seed: int = 0,
                    chunk_size: int = 4096) -> float:
    """The accuracy of a majority-vote classifier that names the factor held fixed in a batch
    from the code of least variance within it.

    Each code is divided by its standard deviation over ``num_variance_estimate`` random
    observations; codes of zero variance are left out (disentanglement_lib's ``_prune_dims``
    keeps sqrt(variance) >= 0, which would divide by 0 here). A vote: factor k drawn uniformly
    and fixed to one random value across ``batch_size`` factor vectors, the others drawn
    freely; the vote is (k, the active code whose variance over the batch is smallest). The
    classifier maps each code to the factor it got most votes for in ``num_train`` votes; the
    score is its accuracy on ``num_eval`` fresh votes (0 when no code varies). 1 when each
    factor moves its own codes; about 1/K when the codes ignore the factors. Kim & Mnih 2018;
    follows disentanglement_lib ``evaluation/metrics/factor_vae.py`` (``eval_accuracy``).

    ``sample_factors``, ``observe``, ``encode``: as in :mod:`vaekit.disentanglement_scores`;
    ``seed`` seeds every draw."""
    if batch_size < 2:
        raise DataError("the FactorVAE score needs batch_size >= 2 (a variance per batch)")
    rng = np.random.default_rng(seed)
    codes = _encoded(_factors(sample_factors, num_variance_estimate, rng), observe, encode,
                     chunk_size)
    scale = codes.std(0, ddof=1)  # [L]
    if not (scale > 0).any():
        return 0.0
    train_votes = _factorvae_votes(sample_factors, observe, encode, num_train, batch_size, rng,
                                   chunk_size, scale)
    eval_votes = _factorvae_votes(sample_factors, observe, encode, num_eval, batch_size, rng,
                                  chunk_size, scale)
    predicted = train_votes.argmax(0)  # [A]: each code's majority factor
    correct = eval_votes[predicted, np.arange(eval_votes.shape[1])].sum()
    return float(correct / eval_votes.sum())
