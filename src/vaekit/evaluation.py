"""Evaluation of a trained model on a data split: ELBO and its terms (this module), with the
importance-sampled log-likelihood and latent diagnostics built on the same objectives."""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .errors import ConfigError
from .model import posterior_mean
from .objectives import elbo_terms, kl_per_dim


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None):
    """Runs the block with the global RNG seeded to ``seed`` and restores the previous state
    afterwards, so evaluation is reproducible and does not perturb a training run's RNG."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither, such
    as a hand-built model whose tensors are constants)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def batch_seed(seed: int, batch: int) -> int:
    return seed * 1_000_003 + batch


@torch.no_grad()
def map_batches(fn, x: torch.Tensor, *, batch_size: int, seed: int, device: torch.device,
                distributed: bool = False) -> torch.Tensor:
    """Per-example values ``fn(x_b)`` over ``x [N, ...]`` in batches of ``batch_size``, each
    batch b run under its own RNG seed (``seed``, b); returns ``[N, ...]`` in the order of ``x``
    (on the CPU). With ``distributed`` (and a process group up) rank r computes batches
    r, r + W, ... and the results are gathered on every rank: because each batch's noise
    depends only on (seed, b), the values equal those of a single process. Generic over the
    estimate: the ELBO here, importance-sampled log-likelihoods the same way."""
    from .distributed import gather_batches, my_batches

    num_batches = -(-len(x) // batch_size)
    local = {}
    for b in my_batches(num_batches, shard=distributed):
        with seeded(batch_seed(seed, b), device):
            local[b] = fn(x[b * batch_size : (b + 1) * batch_size].to(device)).cpu()
    values = gather_batches(local, num_batches) if distributed else [local[b] for b in local]
    return torch.cat(values) if values else torch.zeros(0)


@torch.no_grad()
def evaluate_elbo(model, x: torch.Tensor, *, batch_size: int = 1000, num_samples: int = 1,
                  seed: int = 0, distributed: bool = False) -> dict:
    """Mean over examples of ELBO(x), E_q[log p(x|z)] and KL(q(z|x) || p(z)), in nats per
    example, plus ``num_examples``. ``x``: ``[N, *data_shape]`` (already binarized if the model
    was trained on binarized data). ``distributed``: spread the batches over the ranks of the
    process group (every rank must call it; all get the same result)."""
    was_training = model.training
    model.eval()

    def terms(xb: torch.Tensor) -> torch.Tensor:  # [b, 3]
        t = elbo_terms(model, xb, num_samples)
        return torch.stack([t.elbo, t.reconstruction, t.kl], -1).double()

    values = map_batches(terms, x, batch_size=batch_size, seed=seed, device=model_device(model),
                         distributed=distributed)
    model.train(was_training)
    n = max(len(x), 1)
    sums = values.sum(0) if len(values) else torch.zeros(3, dtype=torch.float64)
    return {"elbo": float(sums[0] / n), "reconstruction": float(sums[1] / n),
            "kl": float(sums[2] / n), "num_examples": len(x)}


# -- importance-sampled log-likelihood --------------------------------------------------------

# Rows z of one decoder call (samples x examples): the decoder's temporaries are
# DECODER_ROWS x D floats (6 MB at D = 784). Measured with benchmarks/eval_loglik.py (K = 5000,
# 784-400-20 MLP, shared 2-core CPU, images/s relative to a plain batched reference): at one
# thread 1024 rows 1.27x, 2048 1.21x, 4096 0.99x, 5000 0.97x; at two threads on a heavily loaded
# machine the order was noisy (2048 0.42x, 8192 0.56x, the reference's layout 5000 rows 1.0x).
# Peak extra memory 21 MB at 2048 rows against 64 MB for the reference.
DECODER_ROWS = 2048

# Samples of z drawn per RNG call: fixed, so the draws (and the estimate) do not depend on the
# decoder chunk size; small next to a chunk of decoder outputs (L numbers per sample, not D).
DRAW_BLOCK = 8192

# proposal name -> the distribution z_k is drawn from, batch [B], event [L]
PROPOSALS = {
    "posterior": lambda model, x: model.encoder(x),  # q(z|x): importance sampling
    "prior": lambda model, x: model.prior().expand((len(x),)),  # p(z): the naive estimator
}


class ImportanceEstimate(NamedTuple):
    """Per-example results of importance sampling, each ``[N]`` (float64)."""

    log_likelihood: torch.Tensor  # log (1/K) sum_k w_k, an estimate of log p(x)
    ess: torch.Tensor  # effective sample size (sum_k w_k)^2 / sum_k w_k^2, between 1 and K


def decoder_rows(model) -> int:
    """Rows z per decoder call: :data:`DECODER_ROWS`, divided by the numbers per data dimension
    of a wide likelihood (30 for a 10-component mixture, 16 + 256 for a 256-way categorical),
    so a call's temporaries stay about the size of a Bernoulli decoder's."""
    decoder = model.decoder
    per_dim = getattr(decoder, "params_per_dim", None)
    if per_dim is None:
        return DECODER_ROWS
    width = per_dim(decoder.num_bins, decoder.num_components)
    if getattr(decoder, "head", None) is not None:
        width += decoder.num_bins
    return max(1, DECODER_ROWS // width)


def chunk_sizes(num_samples: int, num_examples: int, chunk_size: int | None,
                batch_size: int | None, rows: int = DECODER_ROWS) -> tuple[int, int]:
    """``(chunk_size, batch_size)``: samples per decoder call and examples per batch. Unset
    values fill one decoder call with about ``rows`` (:data:`DECODER_ROWS`) rows: many examples
    with few samples each at small K, one example with ``rows`` samples per call at large K."""
    DECODER_ROWS = rows  # noqa: N806 (the module constant, or fewer rows for a wide decoder)
    if batch_size is None:
        batch_size = max(1, DECODER_ROWS // num_samples) if chunk_size is None else \
            max(1, DECODER_ROWS // min(chunk_size, num_samples))
    batch_size = max(1, min(batch_size, num_examples))
    if chunk_size is None:  # equal chunks: no small last call, buffers of one size
        num_chunks = math.ceil(num_samples / max(1, DECODER_ROWS // batch_size))
        chunk_size = math.ceil(num_samples / num_chunks)
    return min(chunk_size, num_samples, DRAW_BLOCK), batch_size


@torch.inference_mode()
def importance_estimate(
    model, x: torch.Tensor, num_samples: int = 1000, *, proposal: str = "posterior",
    chunk_size: int | None = None, batch_size: int | None = None, seed: int = 0,
    progress: bool = False,
) -> ImportanceEstimate:
    """log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / r(z_k),  z_k ~ r, for each example, with
    r = q(z|x) (``proposal="posterior"``, Burda et al. 2016) or r = p(z) (``"prior"``, the
    naive estimator whose weights are p(x|z_k)); plus the effective sample size of the weights.

    Batched over examples (``batch_size`` at a time) and samples: z is drawn in blocks of
    :data:`DRAW_BLOCK` samples ``[S, B, L]`` and the decoder runs on ``chunk_size`` of them at a
    time, so memory is bounded by ``DRAW_BLOCK x B x L + chunk_size x B x D`` whatever K is;
    the per-chunk logsumexps are combined by one final logsumexp. The draws do not depend on
    ``chunk_size`` (at most DRAW_BLOCK), so chunked and unchunked estimates agree to rounding.
    By Jensen the estimate is below log p(x) on average, approaching it as K grows.

    ``x``: ``[N, *data_shape]``; returns :class:`ImportanceEstimate` of ``[N]`` tensors."""
    if num_samples < 1:
        raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
    if proposal not in PROPOSALS:
        raise ConfigError(f"unknown proposal '{proposal}' (valid: {', '.join(PROPOSALS)})")
    from .objectives import weight_terms

    was_training = model.training
    model.eval()
    device = model_device(model)
    chunk_size, batch_size = chunk_sizes(num_samples, len(x), chunk_size, batch_size,
                                         decoder_rows(model))
    log_px, ess = [], []
    bar = _progress_bar(len(x), f"log p(x), K={num_samples}", progress)
    with seeded(seed, device):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            r_z = PROPOSALS[proposal](model, xb)
            lse, lse_sq = [], []  # per chunk: logsumexp_k log w_k and logsumexp_k 2 log w_k
            for block in range(0, num_samples, DRAW_BLOCK):
                z = r_z.sample((min(DRAW_BLOCK, num_samples - block),))  # [S, B, L]
                log_rz = r_z.log_prob(z)  # [S, B], on the drawn tensor itself (see weight_terms)
                for k in range(0, len(z), chunk_size):
                    chunk = slice(k, k + chunk_size)
                    log_w = weight_terms(model, xb, r_z, z[chunk], log_rz[chunk]).log_w  # [C, B]
                    lse.append(torch.logsumexp(log_w, 0))
                    lse_sq.append(torch.logsumexp(2 * log_w, 0))
            log_sum_w = torch.logsumexp(torch.stack(lse).double(), 0)  # [B]
            log_sum_w_sq = torch.logsumexp(torch.stack(lse_sq).double(), 0)
            log_px.append((log_sum_w - math.log(num_samples)).cpu())
            ess.append(torch.exp(2 * log_sum_w - log_sum_w_sq).cpu())
            bar.update(len(xb))
    bar.close()
    model.train(was_training)
    return ImportanceEstimate(torch.cat(log_px), torch.cat(ess))


def log_likelihood(model, x: torch.Tensor, num_samples: int = 1000, *,
                   chunk_size: int | None = None, batch_size: int | None = None, seed: int = 0,
                   progress: bool = False) -> torch.Tensor:
    """log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), per example:
    ``[N]`` float64 nats (Burda et al. 2016; K = 5000 is the usual protocol). See
    :func:`importance_estimate` for batching and memory."""
    return importance_estimate(model, x, num_samples, chunk_size=chunk_size,
                               batch_size=batch_size, seed=seed, progress=progress).log_likelihood


def log_likelihood_prior_sampling(model, x: torch.Tensor, num_samples: int = 1000, *,
                                  chunk_size: int | None = None, batch_size: int | None = None,
                                  seed: int = 0) -> torch.Tensor:
    """The naive estimator log p(x) ~= log (1/K) sum_k p(x|z_k), z_k ~ p(z): ``[N]``. Unbiased
    in p(x) but useless in practice when the posterior is peaked: almost no prior draw lands
    where p(x|z) is large, so the estimate is dominated by rare draws (huge variance)."""
    return importance_estimate(model, x, num_samples, proposal="prior", chunk_size=chunk_size,
                               batch_size=batch_size, seed=seed).log_likelihood


# Why a run's evaluation has no bits_per_dim: its likelihood is a density of continuous values
BITS_PER_DIM_ABSENT = (
    "the likelihood is a density of continuous values, so log p(x) is not a log-probability "
    "of the data and -log p(x) / (D ln 2) would not be bits of it (it can be negative); "
    "train with a discrete likelihood (bernoulli on binary data, discretized-logistic, "
    "discretized-logistic-mixture or categorical on grey levels) for bits/dim")


def log_likelihood_summary(log_px: torch.Tensor, data_shape=None, is_image: bool = False,
                           discrete: bool = False) -> dict:
    """Mean of per-example log p(x) estimates with its standard error std / sqrt(N) across
    examples, in nats per example; for images under a ``discrete`` likelihood (log p(x) a
    log-probability of the data's levels) also bits per dimension,
    bits/dim = -mean log p(x) / (D ln 2) with D = prod(data_shape); for images under a
    continuous density, ``bits_per_dim_absent`` says why there is none."""
    log_px = log_px.double()
    n = len(log_px)
    out = {"log_likelihood": float(log_px.mean()),
           "log_likelihood_stderr": float(log_px.std() / math.sqrt(n)) if n > 1 else float("nan")}
    if is_image and data_shape is not None:
        if discrete:
            out["bits_per_dim"] = -out["log_likelihood"] / (math.prod(data_shape) * math.log(2))
        else:
            out["bits_per_dim_absent"] = BITS_PER_DIM_ABSENT
    return out


class _NoBar:
    """What a disabled progress bar does: nothing (and tqdm is not imported for it, which in a
    notebook without ipywidgets would warn)."""

    def update(self, _n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    # disable=None: shown only on a terminal, so logs and pipes stay clean
    return tqdm(total=total, desc=desc, unit="ex", disable=None, leave=False,
                dynamic_ncols=True, file=sys.stderr)


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
    (a conditional model), E_q[z | x, y] and KL(q(z_j|x,y) || p(z_j|y)) given them."""
    device = model_device(model)
    where = model.layer_slice(layer)
    means, kl_sum, factorised = [], torch.zeros(model.latent_dim, dtype=torch.float64), True
    for start in range(0, len(x), batch_size):
        batch = slice(start, start + batch_size)
        bound = model if labels is None else model.given(labels[batch])
        q_z = bound.encoder(x[batch].to(device))
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
def latent_diagnostics(model, x: torch.Tensor, *, batch_size: int = 1000, seed: int = 0,
                       threshold: float = ACTIVE_UNIT_THRESHOLD,
                       num_mi_queries: int = 1000) -> dict:
    """Diagnostics of how the model uses its latent space, over the examples ``x [N, ...]``:

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
    p_z = model.prior()
    layered = hasattr(p_z, "log_prob_layers")
    with seeded(seed, device):
        for start in range(0, len(x), batch_size):
            q_z = model.encoder(x[start : start + batch_size].to(device))
            posteriors.append(q_z)
            means.append(posterior_mean(q_z))
            per_dim = kl_per_dim(q_z, p_z)
            if per_dim is not None:
                kl_dims.append(per_dim.sum(0))
            if layered:
                kl_layers.append(kl_per_layer(q_z, p_z).sum(-1))
        mutual_information = None
        if getattr(model.encoder, "has_inverse", True):  # q(z|x_m) at other examples' z
            queries = torch.randperm(len(x))[:num_mi_queries].sort().values
            q_queries = model.encoder(x[queries].to(device))
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


def evaluate_model(model, x: torch.Tensor, *, num_samples: int = DEFAULT_NUM_SAMPLES,
                   batch_size: int = 1000, is_image: bool = False, seed: int = 0,
                   progress: bool = False, distributed: bool = False) -> dict:
    """The ELBO and its terms (:func:`evaluate_elbo`), the importance-sampled log p(x) with K =
    ``num_samples`` (mean, standard error, bits/dim for images, mean ESS, seconds; skipped
    when ``num_samples`` is 0) and the latent diagnostics (:func:`latent_diagnostics`).

    ``distributed``: the ELBO and the log p(x) estimate are spread over the ranks of the process
    group in batches (:func:`map_batches`, so the result does not depend on the number of
    ranks); every rank must call it and all get the same result."""
    result = evaluate_elbo(model, x, batch_size=batch_size, seed=seed, distributed=distributed)
    if num_samples > 0:
        start = time.perf_counter()
        if distributed:
            def per_example(xb):  # [B, 2]: log p(x) estimate and ESS
                e = importance_estimate(model, xb, num_samples, seed=seed)
                return torch.stack([e.log_likelihood, e.ess], -1)

            both = map_batches(per_example, x, batch_size=max(1, min(batch_size, 100)), seed=seed,
                               device=model_device(model), distributed=True)
            log_px, ess = both[:, 0], both[:, 1]
        else:
            estimate = importance_estimate(model, x, num_samples, seed=seed, progress=progress)
            log_px, ess = estimate.log_likelihood, estimate.ess
        result.update(log_likelihood_summary(log_px, model.data_shape, is_image,
                                             discrete=getattr(model.decoder, "discrete", False)))
        result["num_samples"] = num_samples
        result["ess_mean"] = float(ess.mean())
        result["log_likelihood_seconds"] = time.perf_counter() - start
    result.update(latent_diagnostics(model, x, batch_size=batch_size, seed=seed))
    return result
