"""The built-in benchmarks: scikit-learn's 8x8 digits (embedded), MNIST and Fashion-MNIST from
their IDX files (downloaded and md5-checked), and Larochelle & Murray's binarized MNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .arrays import held_out_size, split_indices
from .dataset import Dataset
from .downloads import (IDX_FILES, IDX_SOURCES, check_md5, fetch_missing, find_idx_file,
                        dataset_dir)
from .files import read_npz
from .idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, decompressed, parse_idx, read_bytes

# ------------------------------------------------------------------------------------------
# digits (scikit-learn)

def load_digits(data_dir: Path | None, *, val_fraction: float, split_seed: int,
                 download: bool) -> Dataset:
    from sklearn.datasets import load_digits as sklearn_digits

    images, labels = sklearn_digits(return_X_y=True)  # [1797, 64] values 0..16, embedded
    x = (images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = labels.astype(np.int64)
    size = held_out_size(len(x), val_fraction, 2)
    train, val, test = split_indices(len(x), [size, size], split_seed)
    return Dataset(
        name="digits",
        train=torch.from_numpy(x[train]), val=torch.from_numpy(x[val]),
        test=torch.from_numpy(x[test]),
        train_labels=torch.from_numpy(y[train]), val_labels=torch.from_numpy(y[val]),
        test_labels=torch.from_numpy(y[test]),
        value_kind="unit", is_image=True, class_names=tuple(str(i) for i in range(10)),
        levels=17,
    )


# ------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST

def load_idx_dataset(name: str, data_dir: Path | None, *, val_fraction: float, split_seed: int,
                      download: bool) -> Dataset:
    source = IDX_SOURCES[name]
    directory = dataset_dir(name, data_dir)
    missing = [stem for stem in IDX_FILES.values() if find_idx_file(directory, stem) is None]
    if missing:
        fetch_missing(name, directory, missing, download)

    arrays = {}
    for key, stem in IDX_FILES.items():
        path = find_idx_file(directory, stem)
        data = read_bytes(path)
        if path.name in source.md5:
            check_md5(data, path, source.md5[path.name])
        magic = IDX_IMAGES_MAGIC if key.endswith("images") else IDX_LABELS_MAGIC
        arrays[key] = parse_idx(decompressed(data, path), path.name, magic)
    for split in ("train", "test"):
        num_images, num_labels = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if num_images != num_labels:
            images_file, labels_file = IDX_FILES[f"{split}_images"], IDX_FILES[f"{split}_labels"]
            raise DataError(f"{name}: {images_file} holds {num_images} images but {labels_file} "
                            f"holds {num_labels} labels; re-download both files")

    def as_unit(images: np.ndarray) -> torch.Tensor:  # [N, H, W] uint8 -> [N, 1, H, W] in [0, 1]
        return torch.from_numpy(images[:, None].astype(np.float32)).div_(255)

    train_images = as_unit(arrays["train_images"])
    train_labels = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    num_val = held_out_size(len(train_images), val_fraction, 1)
    train, val = (torch.from_numpy(idx) for idx in
                  split_indices(len(train_images), [num_val], split_seed))
    return Dataset(
        name=name, train=train_images[train], val=train_images[val],
        test=as_unit(arrays["test_images"]),
        train_labels=train_labels[train], val_labels=train_labels[val],
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        value_kind="unit", is_image=True, class_names=source.class_names, levels=256,
    )


# ------------------------------------------------------------------------------------------
# binarized MNIST (Larochelle & Murray 2011)

BINARIZED_MNIST_FILE = "binarized_mnist.npz"


def load_binarized_mnist(data_dir: Path | None, *, val_fraction: float, split_seed: int,
                          download: bool) -> Dataset:
    path = dataset_dir("binarized-mnist", data_dir) / BINARIZED_MNIST_FILE
    if not path.is_file():
        raise DataError(f"binarized-mnist: {path} not found and it is not downloaded "
                        "automatically; convert Larochelle & Murray's binarized_mnist_*.amat files "
                        "into an .npz with uint8 arrays train/valid/test of 784 columns and pass "
                        "--data-dir to its folder")
    arrays = read_npz(path)
    splits = {}
    for split, key in (("train", "train"), ("val", "valid"), ("test", "test")):
        if key not in arrays:
            found = ", ".join(arrays) or "none"
            raise DataError(f"{path.name}: no array '{key}' (found: {found}); it needs arrays "
                            "train, valid and test")
        a = arrays[key]
        if a.ndim != 2 or a.shape[1] != 784 or len(a) == 0:
            raise DataError(f"{path.name}: array '{key}' has shape {a.shape}; expected [N, 784]")
        if not np.all((a == 0) | (a == 1)):
            raise DataError(f"{path.name}: array '{key}' holds values other than 0 and 1; "
                            "binarized MNIST must be binary")
        splits[split] = torch.from_numpy(a.astype(np.float32).reshape(-1, 1, 28, 28))
    return Dataset(
        name="binarized-mnist", train=splits["train"], val=splits["val"], test=splits["test"],
        train_labels=None, val_labels=None, test_labels=None,
        value_kind="binary", is_image=True, levels=2,
    )
