"""The importance-sampled log-likelihood (Burda et al. 2016), log p(x) ~= log (1/K) sum_k w_k,
w_k = p(x|z_k) p(z_k) / q(z_k|x): batched over examples and samples with bounded memory, for
any model family (a conditional model's batches are given their condition: log p(x | y)), and
its summary in nats per example and, for discrete likelihoods, bits per dimension."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .batched import bound_to, model_device, progress_bar, rows, seeded
from .errors import ConfigError

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
    model, x: torch.Tensor, num_samples: int = 1000, y: torch.Tensor | None = None, *,
    proposal: str = "posterior",
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

    ``x``: ``[N, *data_shape]``; ``y``: a conditional model's condition, rows beside x's (each
    batch is the model given its rows: estimates of log p(x | y)). Returns
    :class:`ImportanceEstimate` of ``[N]`` tensors."""
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
    bar = progress_bar(len(x), f"log p(x), K={num_samples}", progress)
    with seeded(seed, device):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            bound = bound_to(model, rows(y, start, start + batch_size))
            r_z = PROPOSALS[proposal](bound, xb)
            lse, lse_sq = [], []  # per chunk: logsumexp_k log w_k and logsumexp_k 2 log w_k
            for block in range(0, num_samples, DRAW_BLOCK):
                z = r_z.sample((min(DRAW_BLOCK, num_samples - block),))  # [S, B, L]
                log_rz = r_z.log_prob(z)  # [S, B], on the drawn tensor itself (see weight_terms)
                for k in range(0, len(z), chunk_size):
                    chunk = slice(k, k + chunk_size)
                    log_w = weight_terms(bound, xb, r_z, z[chunk], log_rz[chunk]).log_w  # [C, B]
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


def log_likelihood(model, x: torch.Tensor, num_samples: int = 1000,
                   y: torch.Tensor | None = None, *, chunk_size: int | None = None,
                   batch_size: int | None = None, seed: int = 0,
                   progress: bool = False) -> torch.Tensor:
    """log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), per example:
    ``[N]`` float64 nats (Burda et al. 2016; K = 5000 is the usual protocol). See
    :func:`importance_estimate` for batching and memory."""
    return importance_estimate(model, x, num_samples, y, chunk_size=chunk_size,
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


