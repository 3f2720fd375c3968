"""The importance-sampled log p(x) of :meth:`vaekit.sklearn.VariationalAutoencoder.score_samples`,
each row's estimate a function of that row alone.

scikit-learn expects a row to score the same alone, in any batch and in any order. The
library's estimator (:func:`vaekit.evaluation.log_likelihood`) draws z_k ~ q(z|x) for a whole
batch from one random stream, so a row's draws depend on its position. Here every row uses the
same K standard normal draws eps_k (common random numbers, fixed by the estimator's seed): for a
Gaussian posterior z_k = loc(x) + scale(x) eps_k, for a full covariance loc(x) + L(x) eps_k, for
a flow the same base draw pushed through the row's own transforms. The weights are those of the
library (:func:`vaekit.objectives.weight_terms`), so each row's estimate has the distribution of
:func:`~vaekit.evaluation.log_likelihood`'s: unbiased in p(x), below log p(x) on average, with
the same variance; only the rows' errors are correlated (which makes differences between rows,
such as anomaly rankings, less noisy). A posterior not built on Gaussian noise (several
stochastic layers) gets the library's estimate row by row, each row seeded by a hash of its
values.

The estimate runs on a float64 copy of the model: in float32 a row's encoder output differs in
its last bit between a batch of one and a batch of many (matrix products take other kernels),
which moves log p(x) by ~1e-7, as much as scikit-learn's checks allow; in float64 the same
rounding is ~1e-16."""

from __future__ import annotations

import copy
import hashlib
import math

import numpy as np
import torch
from torch.distributions import (Distribution, Independent, MultivariateNormal, Normal,
                                 TransformedDistribution)

from .batched import model_device
from .importance import chunk_sizes, decoder_rows, log_likelihood
from .objectives import weight_terms


def common_noise(seed: int, num_samples: int, latent_dim: int) -> torch.Tensor:
    """eps_k ~ N(0, I) for k = 1..K, the same for every row: ``[K, L]`` float64, drawn by a CPU
    generator seeded with ``seed`` (so the same on every device, and the global RNG untouched)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(num_samples, latent_dim, generator=generator, dtype=torch.float64)


def draws_from_noise(q_z: Distribution, eps: torch.Tensor) -> torch.Tensor | None:
    """The draws of ``q_z`` (batch ``[B]``, event ``[L]``) made from the standard normal noise
    ``eps [K, 1, L]`` shared by all rows: ``z [K, B, L]``, distributed as ``q_z.rsample((K,))``
    row by row; None when ``q_z`` is not a Gaussian's noise reparameterised (then the caller
    falls back to seeding each row).

    Written out rather than ``rsample``: rsample draws its own noise for every row of the
    batch, and the point here is one noise for all of them."""
    if isinstance(q_z, Independent) and isinstance(q_z.base_dist, Normal) \
            and q_z.reinterpreted_batch_ndims == 1:
        return q_z.base_dist.loc + q_z.base_dist.scale * eps
    if isinstance(q_z, MultivariateNormal):
        return q_z.loc + (q_z.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
    if isinstance(q_z, TransformedDistribution):
        # as TransformedDistribution.rsample: the base draw through each transform in turn,
        # so a flow that knows its density only at its own samples (planar) caches these
        z = draws_from_noise(q_z.base_dist, eps)
        if z is not None:
            for transform in q_z.transforms:
                z = transform(z)
        return z
    return None


def row_seed(seed: int, row: torch.Tensor) -> int:
    """A seed for one row from ``seed`` and the row's values (NaN, a missing entry, as one
    value whatever its bit pattern; -0.0 as 0.0)."""
    values = row.detach().cpu().double()
    missing = torch.isnan(values)
    values = torch.where(missing, torch.zeros_like(values), values) + 0.0
    digest = hashlib.blake2b(np.int64(seed).tobytes(), digest_size=8)
    digest.update(values.numpy().tobytes())
    digest.update(missing.numpy().tobytes())
    return int.from_bytes(digest.digest(), "little") >> 1  # below 2^63: a torch seed


@torch.inference_mode()
def row_log_likelihood(model, x: torch.Tensor, num_samples: int, seed: int) -> torch.Tensor:
    """log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) for each row of ``x [N, ...]``,
    z_k from the common noise (module docstring), batched over rows and samples like
    :func:`vaekit.evaluation.importance_estimate` (bounded memory whatever K is): ``[N]``
    float64 nats, each a function of its row, ``num_samples`` and ``seed`` only."""
    model = copy.deepcopy(model).double().eval()  # see the module docstring
    device = model_device(model)
    x = x.double() if x.is_floating_point() else x
    chunk_size, batch_size = chunk_sizes(num_samples, len(x), None, None, decoder_rows(model))
    noise, log_px = None, []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        q_z = model.encoder(xb)
        if noise is None:
            noise = common_noise(seed, num_samples, q_z.event_shape[-1]).to(device)[:, None]
        z = draws_from_noise(q_z, noise)  # noise [K, 1, L] -> z [K, B, L]
        if z is None:
            log_px += [log_likelihood(model, row[None], num_samples, seed=row_seed(seed, row))
                       for row in xb]
            continue
        log_qz = q_z.log_prob(z)  # [K, B], on the drawn tensor itself (see weight_terms)
        lse = [torch.logsumexp(weight_terms(model, xb, q_z, z[k : k + chunk_size],
                                            log_qz[k : k + chunk_size]).log_w, 0)
               for k in range(0, num_samples, chunk_size)]  # per chunk of samples: [B]
        log_sum_w = torch.logsumexp(torch.stack(lse).double(), 0)
        log_px.append((log_sum_w - math.log(num_samples)).cpu())
    return torch.cat(log_px) if log_px else torch.zeros(0, dtype=torch.float64)
