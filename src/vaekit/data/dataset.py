"""The in-memory data set every part of vaekit shares, and the registry of the built-in ones
with their per-data-set defaults (a new data set is one loader plus one entry here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import DataError

VALUE_KINDS = ("binary", "unit", "real")  # {0, 1}; grey levels in [0, 1]; unbounded
SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    """An in-memory data set: float32 tensors, examples along dim 0."""

    name: str
    train: torch.Tensor  # [N_train, *data_shape] float32
    val: torch.Tensor  # [N_val, *data_shape]
    test: torch.Tensor  # [N_test, *data_shape]
    train_labels: torch.Tensor | None  # int64 [N_train] or None
    val_labels: torch.Tensor | None
    test_labels: torch.Tensor | None
    value_kind: str  # "binary" (all values in {0,1}), "unit" (grey levels in [0,1]), "real"
    is_image: bool  # True when data_shape is (C, H, W)
    class_names: tuple[str, ...] | None = None  # label i is class_names[i], when known
    # number of grey levels the values k / (levels - 1) come from (17 for digits, 256 for 8-bit
    # images, 2 for binary data); None when not known
    levels: int | None = None
    table: Any = None  # a mixed-type table's TableSchema (vaekit.data.tabular), else None
    # the .csv columns taken out of x as covariates (--condition-columns), else None
    condition_columns: tuple[str, ...] | None = None
    # their raw values per split: {"train": [N_train, C] float64, "val": ..., "test": ...}
    conditions: dict[str, torch.Tensor] | None = None
    # noisy features: each training example is the Gaussian N(train[i], train_scale[i]^2), drawn
    # afresh in every batch (an encoder's q(z|x) as the data of another model: Kingma et al.
    # 2014's M1+M2); validation and test use the means. ``[N_train, D]`` float32, or None
    train_scale: torch.Tensor | None = None

    @property
    def data_shape(self) -> tuple[int, ...]:
        """The shape of one example, ``train.shape[1:]``."""
        return tuple(self.train.shape[1:])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x, labels)`` of the split ``"train"``, ``"val"`` or ``"test"``; labels may be None."""
        splits = {
            "train": (self.train, self.train_labels),
            "val": (self.val, self.val_labels),
            "test": (self.test, self.test_labels),
        }
        if name not in splits:
            raise DataError(f"unknown split '{name}'; use one of: {', '.join(splits)}")
        return splits[name]


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: how to load it and the defaults that suit it (small images want a
    small model and many epochs)."""

    load: Callable[..., Dataset]  # (data_dir, *, val_fraction, split_seed, download) -> Dataset
    defaults: dict[str, Any] = field(default_factory=dict)  # hidden, latent_dim, epochs, likelihood
    class_names: tuple[str, ...] | None = None  # what label i means
