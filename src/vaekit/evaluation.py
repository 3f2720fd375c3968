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


@torch.no_grad()
def evaluate_elbo(model, x: torch.Tensor, *, batch_size: int = 1000, num_samples: int = 1,
                  seed: int = 0) -> dict:
    """Mean over examples of ELBO(x), E_q[log p(x|z)] and KL(q(z|x) || p(z)), in nats per
    example, plus ``num_examples``. ``x``: ``[N, *data_shape]`` (already binarized if the model
    was trained on binarized data)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    sums = torch.zeros(3, dtype=torch.float64)
    with seeded(seed, device):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            terms = elbo_terms(model, xb, num_samples)
            sums += torch.stack([terms.elbo.sum(), terms.reconstruction.sum(),
                                 terms.kl.sum()]).double().cpu()
    model.train(was_training)
    n = max(len(x), 1)
    return {"elbo": float(sums[0] / n), "reconstruction": float(sums[1] / n),
            "kl": float(sums[2] / n), "num_examples": len(x)}
