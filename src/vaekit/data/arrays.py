"""From numpy arrays to a :class:`~vaekit.data.dataset.Dataset`: example and label checks,
value kinds, float32 conversion and the seeded train / validation / test split shared by every
source."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError
from .dataset import SPLITS, Dataset

# ------------------------------------------------------------------------------------------
# Splits and value conversion shared by every source

def check_val_fraction(val_fraction: float) -> None:
    if not 0 < val_fraction < 0.5:
        raise DataError(f"val_fraction must be between 0 and 0.5 (exclusive), got {val_fraction}")


def split_indices(n: int, num_held_out: list[int], seed: int) -> list[np.ndarray]:
    """A seeded random partition of range(n): the held-out parts have the given sizes, the first
    returned part (train) gets the rest. Each part is sorted, so examples keep their file order."""
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([n - sum(num_held_out), *num_held_out])[:-1]
    return [np.sort(part) for part in np.split(perm, bounds)]


def held_out_size(n: int, fraction: float, num_parts: int) -> int:
    # at least one example per held-out part, and at least one left for training
    return min(max(1, round(n * fraction)), (n - 1) // num_parts)


def _infer_value_kind(arrays: list[np.ndarray]) -> str:
    if all(np.all((a == 0) | (a == 1)) for a in arrays):
        return "binary"
    if all(np.all((a >= 0) & (a <= 1)) for a in arrays):
        return "unit"
    return "real"


def _to_float32(a: np.ndarray, where: str, uint8_scale: float) -> np.ndarray:
    """Numeric array -> float32 (uint8 divided by ``uint8_scale``), refusing NaN/inf."""
    numeric = np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)
    if not (numeric or a.dtype == np.bool_):
        raise DataError(f"{where} has dtype {a.dtype}; expected numbers (float, int, uint8, bool)")
    if a.dtype == np.uint8:
        return (a.astype(np.float32) / np.float32(uint8_scale)).astype(np.float32)
    num_bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if num_bad:
        raise DataError(f"{where} contains {num_bad} NaN/inf values; clean or impute them first")
    x = a.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{where} has values beyond the float32 range (±3.4e38); rescale them")
    return x


def _as_examples(a: np.ndarray, where: str) -> tuple[np.ndarray, bool]:
    """[N, D] tabular, [N, H, W] grey images or [N, C, H, W] / [N, H, W, C] images ->
    ``(array, is_image)`` with images as [N, C, H, W]."""
    if a.size == 0:
        raise DataError(f"{where} is empty (shape {a.shape}); it needs at least one example")
    if a.ndim == 2:
        return a, False
    if a.ndim == 3:
        return a[:, None], True
    if a.ndim == 4:
        channels = (1, 3, 4)
        if a.shape[3] in channels and a.shape[1] not in channels:
            a = np.ascontiguousarray(a.transpose(0, 3, 1, 2))  # NHWC -> NCHW
        return a, True
    raise DataError(f"{where} has shape {a.shape}; expected [N, D] vectors, [N, H, W] or "
                    "[N, C, H, W] images (reshape it, e.g. to (N, 1) for scalar data)")


def _as_labels(y: np.ndarray, num_examples: int, where: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where} has shape {y.shape}; labels must be one integer per example")
    if len(y) != num_examples:
        raise DataError(f"{where} has {len(y)} labels for {num_examples} examples; "
                        "give exactly one label per example")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{where} holds non-integer values; labels must be integers")
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise DataError(f"{where} has dtype {y.dtype}; labels must be integers")
    return y.astype(np.int64)



def dataset_from_arrays(
    name: str,
    arrays: dict[str, np.ndarray],
    labels: dict[str, np.ndarray | None],
    *,
    val_fraction: float,
    split_seed: int,
    uint8_scale: float | None = None,
    class_names: tuple[str, ...] | None = None,
    conditions: np.ndarray | None = None,
    condition_columns: tuple[str, ...] | None = None,
) -> Dataset:
    """Validates user arrays (``arrays['train']`` required; 'val'/'test' optional and split off
    train with a seeded permutation when absent) and converts them to a :class:`Dataset`.
    ``conditions [N, C]``: the values of the ``condition_columns`` of ``arrays['train']`` (a
    .csv's covariates), split with it.

    ``uint8_scale``: what uint8 arrays are divided by; None means 255, or 1 when every uint8
    value is already 0 or 1 (binary data stored as uint8)."""
    shaped: dict[str, np.ndarray] = {}
    is_image = False
    for split, a in arrays.items():
        where = name if len(arrays) == 1 else f"{name} array '{split}'"
        shaped[split], is_image = _as_examples(a, where)
    shapes = {split: a.shape[1:] for split, a in shaped.items()}
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{split} {shape}" for split, shape in shapes.items())
        raise DataError(f"{name}: the splits have different example shapes ({described}); "
                        "every split needs the same shape")
    if uint8_scale is None:
        uint8_arrays = [a for a in shaped.values() if a.dtype == np.uint8]
        uint8_scale = 1.0 if all(a.max() <= 1 for a in uint8_arrays) else 255.0
    floats = {}
    for split, a in shaped.items():
        where = name if len(arrays) == 1 else f"{name} array '{split}'"
        floats[split] = _to_float32(a, where, uint8_scale)
    checked_labels = {
        split: None if labels.get(split) is None
        else _as_labels(labels[split], len(floats[split]), f"{name} labels of '{split}'")
        for split in floats
    }

    missing = [split for split in ("val", "test") if split not in floats]
    covariates = {"train": conditions}
    if conditions is not None and missing != ["val", "test"]:
        raise ValueError("conditions come with arrays['train'] alone and are split with it")
    if missing:
        x, y = floats["train"], checked_labels["train"]
        if len(x) < len(missing) + 1:
            raise DataError(f"{name} has {len(x)} examples; at least {len(missing) + 1} are "
                            f"needed to split off {' and '.join(missing)} examples")
        size = held_out_size(len(x), val_fraction, len(missing))
        parts = split_indices(len(x), [size] * len(missing), split_seed)
        for split, idx in zip(["train", *missing], parts):
            floats[split] = x[idx]
            checked_labels[split] = None if y is None else y[idx]
            covariates[split] = None if conditions is None else conditions[idx]

    value_kind = _infer_value_kind([floats[split] for split in SPLITS])
    tensors = {split: torch.from_numpy(np.ascontiguousarray(floats[split])) for split in SPLITS}
    label_tensors = {split: None if checked_labels[split] is None
                     else torch.from_numpy(checked_labels[split]) for split in SPLITS}
    return Dataset(
        name=name, train=tensors["train"], val=tensors["val"], test=tensors["test"],
        train_labels=label_tensors["train"], val_labels=label_tensors["val"],
        test_labels=label_tensors["test"], value_kind=value_kind, is_image=is_image,
        class_names=class_names, condition_columns=condition_columns,
        conditions=None if conditions is None else
        {split: torch.from_numpy(covariates[split]) for split in SPLITS},
    )
