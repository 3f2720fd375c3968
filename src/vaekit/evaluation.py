"""Evaluation of a trained model on a data split, one path for every model family: the ELBO
and its terms, the importance-sampled log-likelihood (:mod:`vaekit.importance`), bits per
dimension where the likelihood is discrete, and the latent diagnostics (also per stochastic
layer). A conditional model is evaluated given its condition ``y`` (rows beside x's): each
batch is the model given its rows (:func:`vaekit.batched.bound_to`). A family adds what is its
own on top (:meth:`vaekit.model.VAE.evaluation_extras`: M2's classification error)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .batched import batch_seed, bound_to, map_batches, model_device, progress_bar, rows, seeded  # noqa: F401
from .importance import (  # noqa: F401
    BITS_PER_DIM_ABSENT,
    DECODER_ROWS,
    DRAW_BLOCK,
    PROPOSALS,
    ImportanceEstimate,
    chunk_sizes,
    decoder_rows,
    importance_estimate,
    log_likelihood,
    log_likelihood_prior_sampling,
    log_likelihood_summary,
)
from .objectives import elbo_terms, kl_per_dim
from .posteriors import posterior_mean


@torch.no_grad()
def evaluate_elbo(model, x: torch.Tensor, y: torch.Tensor | None = None, *,
                  batch_size: int = 1000, num_samples: int = 1, seed: int = 0,
                  distributed: bool = False) -> dict:
    """Mean over examples of ELBO(x), E_q[log p(x|z)] and KL(q(z|x) || p(z)), in nats per
    example, plus ``num_examples``. ``x``: ``[N, *data_shape]`` (already binarized if the model
    was trained on binarized data); ``y``: the condition of a conditional model, rows beside
    x's (each batch is then the model given its rows, ``model.given(y_b)``: a bound on
    log p(x | y)). ``distributed``: spread the batches over the ranks of the process group
    (every rank must call it; all get the same result)."""
    was_training = model.training
    model.eval()

    def terms(xb: torch.Tensor, yb: torch.Tensor | None = None) -> torch.Tensor:  # [b, 3]
        t = elbo_terms(bound_to(model, yb), xb, num_samples)
        return torch.stack([t.elbo, t.reconstruction, t.kl], -1).double()

    values = map_batches(terms, x, batch_size=batch_size, seed=seed, device=model_device(model),
                         distributed=distributed, y=y)
    model.train(was_training)
    n = max(len(x), 1)
    sums = values.sum(0) if len(values) else torch.zeros(3, dtype=torch.float64)
    return {"elbo": float(sums[0] / n), "reconstruction": float(sums[1] / n),
            "kl": float(sums[2] / n), "num_examples": len(x)}


@dataclass
class LatentSummary:
    """Posterior means of a data split and the mean KL of each latent dimension."""

    means: torch.Tensor  # [N, L]
    kl_per_dim: torch.Tensor | None  # [L], None when q and p do not factorise over dimensions


@torch.no_grad()
def latent_summary(model, x: torch.Tensor, batch_size: int = 1000,
                   layer: int | None = None, labels: torch.Tensor | None = None
                   ) -> LatentSummary:
    """E_q[z|x] for every example and KL_j = mean_x KL(q(z_j|x) || p(z_j)) for each dimension j
    (the per-dimension KLs sum to the KL term when both distributions are diagonal). With
    several stochastic layers, the means of layer ``layer`` (None: the top; 1 = next to x) and
    no per-dimension KL (the layers' KLs are in :func:`latent_diagnostics`). With ``labels``
    (the condition y of a conditional model), E_q[z | x, y] and KL(q(z_j|x,y) || p(z_j|y))."""
    device = model_device(model)
    where = model.layer_slice(layer)
    means, kl_sum, factorised = [], torch.zeros(model.latent_dim, dtype=torch.float64), True
    for start in range(0, len(x), batch_size):
        bound = bound_to(model, rows(labels, start, start + batch_size))
        q_z = bound.encoder(x[start : start + batch_size].to(device))
        means.append(posterior_mean(q_z)[..., where].cpu())
        per_dim = kl_per_dim(q_z, bound.prior())  # [B, L] or None
        if per_dim is None:
            factorised = False
        else:
            kl_sum += per_dim.sum(0).double().cpu()
    kl = (kl_sum / max(len(x), 1)).float() if factorised else None
    return LatentSummary(torch.cat(means), kl)


# -- latent diagnostics -----------------------------------------------------------------------

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016: unit u is active when Var_x E_q[z_u] > 0.01


@torch.inference_mode()
def latent_diagnostics(model, x: torch.Tensor, y: torch.Tensor | None = None, *,
                       batch_size: int = 1000, seed: int = 0,
                       threshold: float = ACTIVE_UNIT_THRESHOLD,
                       num_mi_queries: int = 1000) -> dict:
    """Diagnostics of how the model uses its latent space, over the examples ``x [N, ...]``
    (given their condition ``y`` for a conditional model: q(z|x,y) against p(z|y)):

    - ``kl_per_dim`` [L]: E_x KL(q(z_u|x) || p(z_u)) per latent dimension (nats; None unless
      posterior and prior are factorised Gaussians);
    - ``posterior_mean_variance`` [L]: A_u = Var_x E_q[z_u] (unbiased variance over examples);
      ``active_units`` = #{u : A_u > threshold} (Burda et al. 2016);
    - with several stochastic layers, ``kl_per_layer`` (:func:`kl_per_layer`, one draw per
      example) and ``active_units_per_layer``, bottom first (the IWAE paper's "16+5");
    - ``mutual_information``: I(x; z) = E_x KL(q(z|x) || p(z)) - KL(q(z) || p(z))
      = E_x E_q(z|x)[log q(z|x) - log q(z)], with the aggregate posterior q(z) approximated by
      the mixture of all N evaluated posteriors, q(z) ~= (1/N) sum_m q(z|x_m) (x_n included),
      and the outer expectation by one z_n ~ q(z|x_n) for each of ``num_mi_queries`` randomly
      chosen examples (every pair costs one log_prob: N x N would be slow). The estimate is at
      most log N: a value near log N means the codes nearly identify individual examples.
      None for a posterior whose density is known only at its own samples (planar flows)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    posteriors, means, kl_dims, kl_layers = [], [], [], []
    layered, bound = False, None
    with seeded(seed, device):
        for start in range(0, len(x), batch_size):
            given = bound_to(model, rows(y, start, start + batch_size))
            # p(z) once for a model without y (a VampPrior's costs an encoder pass), per batch
            # for a conditional one
            if given is not bound:
                bound, p_z = given, given.prior()
            q_z = bound.encoder(x[start : start + batch_size].to(device))
            posteriors.append(q_z)
            means.append(posterior_mean(q_z))
            per_dim = kl_per_dim(q_z, p_z)
            if per_dim is not None:
                kl_dims.append(per_dim.sum(0))
            layered = hasattr(p_z, "log_prob_layers")
            if layered:
                kl_layers.append(kl_per_layer(q_z, p_z).sum(-1))
        mutual_information = None
        if getattr(model.encoder, "has_inverse", True):  # q(z|x_m) at other examples' z
            queries = torch.randperm(len(x))[:num_mi_queries].sort().values
            q_queries = bound_to(model, None if y is None else y[queries]).encoder(
                x[queries].to(device))
            z = q_queries.sample()  # [n, L]
            log_q_own = q_queries.log_prob(z)  # [n]
            # log q(z_n) = logsumexp_m log q(z_n|x_m) - log N, in blocks of queries x posteriors
            log_q_mixture = []
            for start in range(0, len(z), 100):
                zb = z[start : start + 100].unsqueeze(1)  # [n', 1, L] vs a batch [M'] -> [n', M']
                per_batch = [torch.logsumexp(q.log_prob(zb), 1) for q in posteriors]
                log_q_mixture.append(torch.logsumexp(torch.stack(per_batch), 0) - math.log(len(x)))
            mutual_information = float((log_q_own - torch.cat(log_q_mixture)).double().mean())
    model.train(was_training)
    mean_variance = torch.cat(means).double().var(0)  # [L]
    layers = {}
    if layered:
        active = (mean_variance > threshold).split(model.latent_dims)
        layers = {"kl_per_layer": (torch.stack(kl_layers).sum(0).double() / len(x)).tolist(),
                  "active_units_per_layer": [int(a.sum()) for a in active]}
    return {
        "kl_per_dim": (torch.stack(kl_dims).sum(0).double() / len(x)).tolist() if kl_dims else None,
        "posterior_mean_variance": mean_variance.tolist(),
        "active_units": int((mean_variance > threshold).sum()),
        "mutual_information": mutual_information,
        **layers,
    }


def kl_per_layer(q_z, p_z, num_samples: int = 1) -> torch.Tensor:
    """The KL of each stochastic layer, ``[num_layers, B]`` bottom first, as the Monte Carlo
    average over ``num_samples`` draws z ~ q(z|x) of KL_l = log q(z_l | parent) -
    log p(z_l | z_{l+1}) (the top layer's against the prior p(z_L)). The layers' KLs sum to the
    Monte Carlo KL log q(z|x) - log p(z) of the same draws."""
    z = q_z.sample((num_samples,))  # [S, B, L]
    log_q, log_p = q_z.log_prob_layers(z), p_z.log_prob_layers(z)
    return torch.stack([lq - lp for lq, lp in zip(log_q, log_p)]).mean(1)


# -- everything `vaekit evaluate` reports -----------------------------------------------------

# Default K of `vaekit evaluate`: seconds for the 10k MNIST test set on a 2-core CPU, and on a
# trained MNIST model within about 1 nat of the K = 5000 paper protocol (see README).
DEFAULT_NUM_SAMPLES = 100


def evaluate_model(model, x: torch.Tensor, y: torch.Tensor | None = None, *,
                   num_samples: int = DEFAULT_NUM_SAMPLES, batch_size: int = 1000,
                   is_image: bool = False, seed: int = 0, progress: bool = False,
                   distributed: bool = False) -> dict:
    """Everything ``vaekit evaluate`` reports, for every model family: the ELBO and its terms
    (:func:`evaluate_elbo`), the importance-sampled log p(x) with K = ``num_samples`` (mean,
    standard error, bits/dim for images under a discrete likelihood, mean ESS, seconds; skipped
    when ``num_samples`` is 0), the latent diagnostics (:func:`latent_diagnostics`), then the
    family's own extras (:meth:`vaekit.model.VAE.evaluation_extras`). ``y``: the condition of
    a conditional model (the bounds and log p(x) are then given y).

    ``distributed``: the ELBO and the log p(x) estimate are spread over the ranks of the process
    group in batches (:func:`map_batches`, so the result does not depend on the number of
    ranks); every rank must call it and all get the same result."""
    result = evaluate_elbo(model, x, y, batch_size=batch_size, seed=seed,
                           distributed=distributed)
    if num_samples > 0:
        start = time.perf_counter()
        if distributed:
            def per_example(xb, yb=None):  # [B, 2]: log p(x) estimate and ESS
                e = importance_estimate(model, xb, num_samples, yb, seed=seed)
                return torch.stack([e.log_likelihood, e.ess], -1)

            both = map_batches(per_example, x, batch_size=max(1, min(batch_size, 100)), seed=seed,
                               device=model_device(model), distributed=True, y=y)
            log_px, ess = both[:, 0], both[:, 1]
        else:
            estimate = importance_estimate(model, x, num_samples, y, seed=seed, progress=progress)
            log_px, ess = estimate.log_likelihood, estimate.ess
        result.update(log_likelihood_summary(log_px, model.data_shape, is_image,
                                             discrete=getattr(model.decoder, "discrete", False)))
        result["num_samples"] = num_samples
        result["ess_mean"] = float(ess.mean())
        result["log_likelihood_seconds"] = time.perf_counter() - start
    result.update(latent_diagnostics(model, x, y, batch_size=batch_size, seed=seed))
    extras = getattr(model, "evaluation_extras", None)
    return extras(result, x, y, batch_size=batch_size, seed=seed) if extras else result
