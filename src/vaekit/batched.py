"""Batched, seeded evaluation: how every estimate of :mod:`vaekit.evaluation` and
:mod:`vaekit.importance` walks a data split. Each batch runs under its own RNG seed (so results
do not depend on the batching across ranks) and on the model given the batch's condition
(:func:`bound_to`), which is how one evaluation path serves every model family."""

from __future__ import annotations

import contextlib
import itertools
import sys

import torch


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


def rows(y: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
    """Rows ``start:stop`` of a condition ``y`` (None, for a model without one, stays None):
    how every batched loop here slices y beside x."""
    return None if y is None else y[start:stop]


def bound_to(model, y: torch.Tensor | None):
    """The model given the condition ``y`` of a batch (:meth:`vaekit.model.VAE.given`): a
    conditional model's q(z|x,y), p(x|z,y), p(z|y); the model itself when there is no y. Every
    estimate here runs on what this returns, so one path serves every model family."""
    return model if y is None else model.given(y)


@torch.no_grad()
def map_batches(fn, x: torch.Tensor, *, batch_size: int, seed: int, device: torch.device,
                distributed: bool = False, y: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example values ``fn(x_b)`` over ``x [N, ...]`` in batches of ``batch_size``, each
    batch b run under its own RNG seed (``seed``, b); returns ``[N, ...]`` in the order of ``x``
    (on the CPU). With a condition ``y`` (labels ``[N]`` or covariates ``[N, C]``, rows beside
    x's) the call is ``fn(x_b, y_b)``. With ``distributed`` (and a process group up) rank r
    computes batches r, r + W, ... and the results are gathered on every rank: because each
    batch's noise depends only on (seed, b), the values equal those of a single process.
    Generic over the estimate: the ELBO here, importance-sampled log-likelihoods the same
    way."""
    from .distributed import gather_batches, my_batches

    num_batches = -(-len(x) // batch_size)
    local = {}
    for b in my_batches(num_batches, shard=distributed):
        part = slice(b * batch_size, (b + 1) * batch_size)
        given = () if y is None else (y[part],)
        with seeded(batch_seed(seed, b), device):
            local[b] = fn(x[part].to(device), *given).cpu()
    values = gather_batches(local, num_batches) if distributed else [local[b] for b in local]
    return torch.cat(values) if values else torch.zeros(0)


class _NoBar:
    """What a disabled progress bar does: nothing (and tqdm is not imported for it, which in a
    notebook without ipywidgets would warn)."""

    def update(self, _n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    # disable=None: shown only on a terminal, so logs and pipes stay clean
    return tqdm(total=total, desc=desc, unit="ex", disable=None, leave=False,
                dynamic_ncols=True, file=sys.stderr)


