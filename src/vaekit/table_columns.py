"""The columns of a mixed-type table as the models see them: each column's type
(:class:`Column`: ``numeric``, ``binary``, ``count`` or ``categorical:K``), where the columns of
each type and their decoder outputs sit in a row (``_Layout``), the observed-entry mask of a
row with NaN for missing entries, and the per-column standardization learned from the training
rows that both the table likelihood (:mod:`vaekit.tables`) and the encoder's input
(:mod:`vaekit.table_encoding`) use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


COLUMN_TYPES = ("numeric", "binary", "count", "categorical")


@dataclass(frozen=True)
class Column:
    """One column's type; ``num_categories`` K for a categorical column."""

    kind: str
    num_categories: int = 0

    @property
    def num_params(self) -> int:
        """How many decoder outputs parameterise the column's distribution."""
        return self.num_categories if self.kind == "categorical" else 1

    @property
    def encoding_dim(self) -> int:
        """How many encoder inputs the column's value takes (plus its missing indicator)."""
        return self.num_categories if self.kind == "categorical" else 1

    def __str__(self) -> str:
        return f"categorical:{self.num_categories}" if self.kind == "categorical" else self.kind

    @classmethod
    def parse(cls, text: str) -> Column:
        """``numeric``, ``binary``, ``count`` or ``categorical:K`` (K >= 2)."""
        kind, _, count = text.partition(":")
        if kind not in COLUMN_TYPES:
            raise ValueError(f"unknown column type '{text}' (valid: numeric, binary, count, "
                             "categorical:K)")
        if kind == "categorical":
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"column type '{text}': write categorical:K with K the number "
                                 "of categories, e.g. categorical:3")
            return cls(kind, int(count))
        if count:
            raise ValueError(f"column type '{text}': only categorical takes ':K'")
        return cls(kind)


def parse_columns(specs: Sequence[str]) -> tuple[Column, ...]:
    return tuple(Column.parse(s) for s in specs)


def _index(positions: list[int]) -> slice | torch.Tensor:
    """A slice when the positions are consecutive (a view, no gather: a table of one type, or
    images as tables), else an index tensor."""
    if positions and positions == list(range(positions[0], positions[0] + len(positions))):
        return slice(positions[0], positions[0] + len(positions))
    return torch.tensor(positions, dtype=torch.long)


class _Layout:
    """Indices (slices or tensors) of the columns of each type and of their decoder outputs."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = tuple(columns)
        offsets = [0]
        for c in self.columns:
            offsets.append(offsets[-1] + c.num_params)
        self.num_params = offsets[-1]
        self.by_kind = {}
        for kind in ("numeric", "binary", "count"):
            cols = [j for j, c in enumerate(self.columns) if c.kind == kind]
            self.by_kind[kind] = (_index(cols), _index([offsets[j] for j in cols]), len(cols))
        # (column, first logit, K) of each categorical column
        self.categorical = [(j, offsets[j], c.num_categories)
                            for j, c in enumerate(self.columns) if c.kind == "categorical"]


def _observed(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The observed-entry mask and x with missing entries (NaN) replaced by 0."""
    observed = ~torch.isnan(x)
    return observed, torch.where(observed, x, torch.zeros_like(x))


class _ColumnScaling(nn.Module):
    """Buffers ``loc``, ``scale`` ``[D]``: the observed mean and standard deviation of each
    numeric and count column of the training data (0 and 1 for the other columns)."""

    def __init__(self, columns: Sequence[Column]) -> None:
        super().__init__()
        self.columns = tuple(columns)
        self.register_buffer("loc", torch.zeros(len(self.columns)))
        self.register_buffer("scale", torch.ones(len(self.columns)))

    @torch.no_grad()
    def fit_scaling(self, x: torch.Tensor) -> None:
        """Sets ``loc``/``scale`` from the training rows ``x [N, D]`` (observed entries only; a
        column with fewer than two observed values or no spread keeps scale 1)."""
        observed, filled = _observed(x.double())
        count = observed.sum(0)
        mean = filled.sum(0) / count.clamp_min(1)
        var = (torch.where(observed, filled - mean, torch.zeros_like(filled)) ** 2).sum(0) \
            / (count - 1).clamp_min(1)
        std = var.sqrt()
        scaled = torch.tensor([c.kind in ("numeric", "count") for c in self.columns],
                              device=x.device)
        self.loc.copy_(torch.where(scaled, mean, torch.zeros_like(mean)).float())
        self.scale.copy_(torch.where(scaled & (count > 1) & (std > 1e-6), std,
                                     torch.ones_like(std)).float())
