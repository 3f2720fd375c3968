"""Minibatches sliced from in-memory tensors: no DataLoader, no per-example Python work.

Shuffling uses a generator seeded by (seed, epoch), so the order of any epoch is known without
stored state, which makes resuming mid-run exact. With ``world_size > 1`` each rank takes a
disjoint, equally sized shard of the epoch's permutation (the semantics of
``torch.utils.data.DistributedSampler``: the permutation is padded by wrapping around to a
multiple of ``world_size``), interleaved so that the union of the ranks' t-th batches is
exactly the t-th global batch of a single process with batch ``batch_size * world_size``."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


class TensorBatches:
    """Iterates ``x[idx]`` over shuffled index slices, and with ``y`` (the condition of a
    conditional model: labels ``[N]`` or covariates ``[N, C]``) the pairs ``(x[idx], y[idx])``
    (:meth:`pairs`): the condition travels with its examples."""

    def __init__(
        self,
        x: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        y: torch.Tensor | None = None,
    ) -> None:
        if y is not None and len(y) != len(x):
            raise ValueError(f"y has {len(y)} rows for {len(x)} examples")
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0

    @property
    def shard_size(self) -> int:
        return math.ceil(len(self.x) / self.world_size)

    def __len__(self) -> int:
        if self.drop_last:
            return self.shard_size // self.batch_size
        return math.ceil(self.shard_size / self.batch_size)

    def indices(self, epoch: int) -> torch.Tensor:
        """This rank's example indices for ``epoch``, in order."""
        n = len(self.x)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        total = self.shard_size * self.world_size
        if total > n:  # pad by wrapping, as DistributedSampler does
            order = torch.cat([order, order[: total - n]])
        return order[self.rank :: self.world_size].to(self.x.device)

    def iterate(self, epoch: int, start_batch: int = 0, stop_batch: int | None = None
                ) -> Iterator[torch.Tensor]:
        """Batches ``start_batch`` (for resuming) up to ``stop_batch`` (default: the last) of
        ``epoch``."""
        for x, _ in self.pairs(epoch, start_batch, stop_batch):
            yield x

    def pairs(self, epoch: int, start_batch: int = 0, stop_batch: int | None = None
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """As :meth:`iterate`, each batch with its rows of ``y`` (None without a y)."""
        idx = self.indices(epoch)
        for b in range(start_batch, len(self) if stop_batch is None else stop_batch):
            rows = idx[b * self.batch_size : (b + 1) * self.batch_size]
            yield (self.x.index_select(0, rows),
                   None if self.y is None else self.y.index_select(0, rows.to(self.y.device)))

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.iterate(self.epoch)
