"""Evaluation of a trained model on a data split: ELBO and its terms (this module), with the
importance-sampled log-likelihood and latent diagnostics built on the same objectives."""

from __future__ import annotations

import contextlib

import torch

from .objectives import elbo_terms


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None):
    """Runs the block with the global RNG seeded to ``seed`` and restores the previous state
    afterwards, so evaluation is reproducible and does not perturb a training run's RNG."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


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
