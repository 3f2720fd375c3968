"""Data sets: the registered benchmarks (digits, MNIST, Fashion-MNIST, binarized MNIST) and the
user's own data (.npy, .npz, .csv, a folder of images), loaded into memory as float32 tensors
with a train / validation / test split, plus the fixed binarization used for evaluation sets.

Every problem the user can fix (a missing or corrupt file, a bad value, an unknown name) raises
:class:`~vaekit.errors.DataError` with a one-line message saying what is wrong and what to do.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import http.client
import os
import struct
import tempfile
import tokenize
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import DataError

VALUE_KINDS = ("binary", "unit", "real")  # {0, 1}; grey levels in [0, 1]; unbounded


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


def binarize_fixed(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Static binarization: one draw x_b ~ Bernoulli(x) with a fixed seed, so that validation and
    test sets are the same binary data every time (Salakhutdinov & Murray 2008).

    ``x``: grey levels in [0, 1], any shape; returns a tensor of 0/1 of the same shape and dtype.
    Uses ``rand < x``: torch.bernoulli is several times slower on CPU."""
    dtype = x.dtype if x.is_floating_point() else torch.float32
    generator = torch.Generator(device=x.device).manual_seed(seed)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=dtype)
    return (u < x).to(dtype)


# ------------------------------------------------------------------------------------------
# Where the registered data sets live

def cache_dir(name: str) -> Path:
    """The default folder of a registered data set: ``$VAEKIT_DATA_DIR/<name>`` when that variable
    is set, else ``~/.cache/vaekit/<name>`` (one sub-folder per data set because MNIST and
    Fashion-MNIST use the same file names)."""
    root = os.environ.get("VAEKIT_DATA_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "vaekit"
    return base / name


def _dataset_dir(name: str, data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else cache_dir(name)


# ------------------------------------------------------------------------------------------
# Splits and value conversion shared by every source

def _check_val_fraction(val_fraction: float) -> None:
    if not 0 < val_fraction < 0.5:
        raise DataError(f"val_fraction must be between 0 and 0.5 (exclusive), got {val_fraction}")


def _split_indices(n: int, num_held_out: list[int], seed: int) -> list[np.ndarray]:
    """A seeded random partition of range(n): the held-out parts have the given sizes, the first
    returned part (train) gets the rest. Each part is sorted, so examples keep their file order."""
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([n - sum(num_held_out), *num_held_out])[:-1]
    return [np.sort(part) for part in np.split(perm, bounds)]


def _held_out_size(n: int, fraction: float, num_parts: int) -> int:
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


SPLITS = ("train", "val", "test")


def _dataset_from_arrays(
    name: str,
    arrays: dict[str, np.ndarray],
    labels: dict[str, np.ndarray | None],
    *,
    val_fraction: float,
    split_seed: int,
    uint8_scale: float | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """Validates user arrays (``arrays['train']`` required; 'val'/'test' optional and split off
    train with a seeded permutation when absent) and converts them to a :class:`Dataset`.

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
    if missing:
        x, y = floats["train"], checked_labels["train"]
        if len(x) < len(missing) + 1:
            raise DataError(f"{name} has {len(x)} examples; at least {len(missing) + 1} are "
                            f"needed to split off {' and '.join(missing)} examples")
        size = _held_out_size(len(x), val_fraction, len(missing))
        parts = _split_indices(len(x), [size] * len(missing), split_seed)
        for split, idx in zip(["train", *missing], parts):
            floats[split] = x[idx]
            checked_labels[split] = None if y is None else y[idx]

    value_kind = _infer_value_kind([floats[split] for split in SPLITS])
    tensors = {split: torch.from_numpy(np.ascontiguousarray(floats[split])) for split in SPLITS}
    label_tensors = {split: None if checked_labels[split] is None
                     else torch.from_numpy(checked_labels[split]) for split in SPLITS}
    return Dataset(
        name=name, train=tensors["train"], val=tensors["val"], test=tensors["test"],
        train_labels=label_tensors["train"], val_labels=label_tensors["val"],
        test_labels=label_tensors["test"], value_kind=value_kind, is_image=is_image,
        class_names=class_names,
    )


# ------------------------------------------------------------------------------------------
# digits (scikit-learn)

def _load_digits(data_dir: Path | None, *, val_fraction: float, split_seed: int,
                 download: bool) -> Dataset:
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)  # [1797, 64] values 0..16, embedded
    x = (images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = labels.astype(np.int64)
    size = _held_out_size(len(x), val_fraction, 2)
    train, val, test = _split_indices(len(x), [size, size], split_seed)
    return Dataset(
        name="digits",
        train=torch.from_numpy(x[train]), val=torch.from_numpy(x[val]),
        test=torch.from_numpy(x[test]),
        train_labels=torch.from_numpy(y[train]), val_labels=torch.from_numpy(y[val]),
        test_labels=torch.from_numpy(y[test]),
        value_kind="unit", is_image=True, class_names=tuple(str(i) for i in range(10)),
    )


# ------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def parse_idx(data: bytes, name: str, expected_magic: int | None = None) -> np.ndarray:
    """Decodes uncompressed IDX bytes (LeCun's format: a big-endian magic number 0x000008NN,
    where NN is the number of dimensions, NN big-endian uint32 sizes, then uint8 values) into a
    uint8 array of that shape. ``name`` names the file in error messages."""
    if len(data) < 4:
        raise DataError(f"{name}: only {len(data)} bytes, too short for an IDX header "
                        "(re-download it or delete it so vaekit downloads it again)")
    (magic,) = struct.unpack(">I", data[:4])
    num_dims = magic & 0xFF
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{name}: IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
                        "(wrong or corrupt file; re-download it)")
    if magic >> 8 != 0x08 or num_dims == 0:
        raise DataError(f"{name}: IDX magic number 0x{magic:08x} is not that of an unsigned-byte "
                        "IDX file (wrong or corrupt file; re-download it)")
    header_size = 4 + 4 * num_dims
    if len(data) < header_size:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, {header_size} needed; "
                        "re-download it)")
    dims = struct.unpack(f">{num_dims}I", data[4:header_size])
    expected_size = int(np.prod(dims, dtype=object))
    actual_size = len(data) - header_size
    if actual_size != expected_size:
        shape = "x".join(map(str, dims))
        raise DataError(f"{name}: the IDX header says {shape} = {expected_size} values but the "
                        f"file holds {actual_size} (truncated or corrupt; re-download it)")
    if expected_size == 0:
        raise DataError(f"{name}: the IDX file holds no examples (shape {dims}); re-download it")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Reads an IDX file (gzip-compressed when its name ends in .gz) into a uint8 array; see
    :func:`parse_idx`."""
    path = Path(path)
    return parse_idx(_decompressed(_read_bytes(path), path), path.name, expected_magic)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read it ({error.strerror or error}); check the path "
                        "and its permissions") from error


def _decompressed(data: bytes, path: Path) -> bytes:
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path.name}: not a gzip file or truncated ({error}); re-download it or "
                        "delete it so vaekit downloads it again") from error


@dataclass(frozen=True)
class IdxSource:
    """Where a data set in MNIST's IDX layout is published, and the md5 of each .gz file."""

    mirrors: tuple[str, ...]  # base URLs, tried in turn
    md5: dict[str, str]  # file name (.gz) -> published md5
    class_names: tuple[str, ...]


IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

IDX_SOURCES = {
    "mnist": IdxSource(
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        class_names=tuple(str(i) for i in range(10)),
    ),
    "fashion-mnist": IdxSource(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
    ),
}


def _check_md5(data: bytes, path: Path, expected: str) -> None:
    # hashing is ~40 ms per 10 MB, small next to gunzip, so the result is not cached
    actual = hashlib.md5(data).hexdigest()
    if actual != expected:
        raise DataError(f"{path}: md5 {actual} but the published md5 is {expected} (corrupt or not "
                        "the official file; delete it so vaekit downloads it again)")


def _open_url(url: str):
    """Opens a URL for reading (a seam for tests, which serve files without the network)."""
    return urllib.request.urlopen(url, timeout=60)


def _download(file_name: str, directory: Path, mirrors: tuple[str, ...], md5: str) -> str | None:
    """Fetches ``file_name`` from the first mirror that serves it with the right md5, into a
    temporary file in ``directory`` renamed into place at the end (so an interrupted download
    never leaves a partial file under the real name). Returns None, or why every mirror failed."""
    failures = []
    for base in mirrors:
        url = base + file_name
        temp = None
        try:
            with _open_url(url) as response, tempfile.NamedTemporaryFile(
                    dir=directory, prefix=f".{file_name}.", suffix=".part", delete=False) as temp:
                digest = hashlib.md5()
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    temp.write(chunk)
            if digest.hexdigest() != md5:
                failures.append(f"{url}: md5 {digest.hexdigest()}, expected {md5}")
                continue
            os.replace(temp.name, directory / file_name)
            temp = None
            return None
        except (OSError, ValueError, http.client.HTTPException) as error:
            failures.append(f"{url}: {error}")
        finally:
            if temp is not None and os.path.exists(temp.name):
                os.unlink(temp.name)
    return "; ".join(failures)


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def _fetch_missing(name: str, directory: Path, missing: list[str], download: bool) -> None:
    source = IDX_SOURCES[name]
    names = ", ".join(f"{stem}.gz" for stem in missing)
    if not download:
        raise DataError(f"{name}: {names} not found in {directory}; pass --data-dir to the folder "
                        "holding them, or allow downloading")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{name}: {names} not found and {directory} cannot be created "
                        f"({error.strerror or error}); pass --data-dir to a writable folder or "
                        "to one holding the files") from error
    failures = []
    for stem in missing:
        file_name = f"{stem}.gz"
        failure = _download(file_name, directory, source.mirrors, source.md5[file_name])
        if failure:
            failures.append(failure)
    if failures:
        raise DataError(f"{name}: {names} missing from {directory} and the download failed "
                        f"({'; '.join(failures)}); download them by hand and pass --data-dir "
                        "to their folder")


def _load_idx_dataset(name: str, data_dir: Path | None, *, val_fraction: float, split_seed: int,
                      download: bool) -> Dataset:
    source = IDX_SOURCES[name]
    directory = _dataset_dir(name, data_dir)
    missing = [stem for stem in IDX_FILES.values() if _find_idx_file(directory, stem) is None]
    if missing:
        _fetch_missing(name, directory, missing, download)

    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _find_idx_file(directory, stem)
        data = _read_bytes(path)
        if path.name in source.md5:
            _check_md5(data, path, source.md5[path.name])
        magic = IDX_IMAGES_MAGIC if key.endswith("images") else IDX_LABELS_MAGIC
        arrays[key] = parse_idx(_decompressed(data, path), path.name, magic)
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
    num_val = _held_out_size(len(train_images), val_fraction, 1)
    train, val = (torch.from_numpy(idx) for idx in
                  _split_indices(len(train_images), [num_val], split_seed))
    return Dataset(
        name=name, train=train_images[train], val=train_images[val],
        test=as_unit(arrays["test_images"]),
        train_labels=train_labels[train], val_labels=train_labels[val],
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        value_kind="unit", is_image=True, class_names=source.class_names,
    )


# ------------------------------------------------------------------------------------------
# binarized MNIST (Larochelle & Murray 2011)

BINARIZED_MNIST_FILE = "binarized_mnist.npz"


def _load_binarized_mnist(data_dir: Path | None, *, val_fraction: float, split_seed: int,
                          download: bool) -> Dataset:
    path = _dataset_dir("binarized-mnist", data_dir) / BINARIZED_MNIST_FILE
    if not path.is_file():
        raise DataError(f"binarized-mnist: {path} not found and it is not downloaded "
                        "automatically; convert Larochelle & Murray's binarized_mnist_*.amat files "
                        "into an .npz with uint8 arrays train/valid/test of 784 columns and pass "
                        "--data-dir to its folder")
    arrays = _read_npz(path)
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
        value_kind="binary", is_image=True,
    )


# ------------------------------------------------------------------------------------------
# User data: .npy, .npz, .csv, image folders

# what np.load raises on damaged files: numpy parses the .npy header with ast.literal_eval
# (SyntaxError, TokenError) and zipfile refuses some archives with NotImplementedError
_NPY_READ_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, SyntaxError,
                    tokenize.TokenError, NotImplementedError, zipfile.BadZipFile, zlib.error,
                    struct.error, MemoryError)


def _read_npy(path: Path) -> np.ndarray:
    try:
        a = np.load(path, allow_pickle=False)
    except _NPY_READ_ERRORS as error:
        raise DataError(f"{path.name}: not a readable .npy array ({error}); save it with "
                        "numpy.save (numeric dtype, no Python objects)") from error
    if not isinstance(a, np.ndarray):  # an .npz archive renamed to .npy
        a.close()
        raise DataError(f"{path.name}: an .npz archive, not an .npy array; rename it to .npz")
    return a


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            raise DataError(f"{path.name}: an .npy array, not an .npz archive; rename it to .npy")
        with loaded as archive:
            return {key: archive[key] for key in archive.files}
    except _NPY_READ_ERRORS as error:
        raise DataError(f"{path.name}: not a readable .npz archive ({error}); save it with "
                        "numpy.savez (numeric arrays, no Python objects)") from error


def _load_npy(path: Path, *, val_fraction: float, split_seed: int) -> Dataset:
    return _dataset_from_arrays(path.name, {"train": _read_npy(path)}, {},
                                val_fraction=val_fraction, split_seed=split_seed)


def _load_npz(path: Path, *, val_fraction: float, split_seed: int) -> Dataset:
    contents = _read_npz(path)
    keys = set(contents)
    if "train" in keys:
        arrays = {"train": contents["train"]}
        labels = {"train": contents.get("train_labels")}
        for split, names in (("val", ("val", "valid")), ("test", ("test",))):
            for key in names:
                if key in contents:
                    arrays[split] = contents[key]
                    labels[split] = contents.get(f"{key}_labels")
    elif "x" in keys:
        arrays, labels = {"train": contents["x"]}, {"train": contents.get("y")}
    elif len(keys) == 1:
        arrays, labels = {"train": next(iter(contents.values()))}, {}
    else:
        found = ", ".join(sorted(keys)) or "none"
        raise DataError(f"{path.name}: cannot tell which array is the data (found: {found}); use "
                        "keys train/test (optional val, *_labels), x (optional y), or one array")
    return _dataset_from_arrays(path.name, arrays, labels,
                                val_fraction=val_fraction, split_seed=split_seed)


LABEL_COLUMNS = ("label", "class", "target")


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _load_csv(path: Path, *, val_fraction: float, split_seed: int) -> Dataset:
    try:
        with open(path, newline="", encoding="utf-8") as file:
            rows = [(line, row) for line, row in enumerate(csv.reader(file), start=1) if row]
    except UnicodeDecodeError as error:
        raise DataError(f"{path.name}: not a UTF-8 text file ({error}); save it as plain "
                        "comma-separated UTF-8 text") from error
    except (OSError, csv.Error) as error:
        raise DataError(f"{path.name}: cannot read it as CSV ({error}); save it as plain "
                        "comma-separated text") from error
    if not rows:
        raise DataError(f"{path.name}: the file holds no rows; it needs one example per row")
    header = None
    if not all(_is_number(cell) for cell in rows[0][1]):
        header = [cell.strip() for cell in rows[0][1]]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path.name}: only a header row; it needs one example per row")
    num_columns = len(header) if header is not None else len(rows[0][1])
    for line, row in rows:
        if len(row) != num_columns:
            raise DataError(f"{path.name}: row {line} has {len(row)} columns, expected "
                            f"{num_columns}; every row needs the same number of columns")

    def column_name(j: int) -> str:
        return f"'{header[j]}'" if header is not None else str(j + 1)

    cells = [row for _, row in rows]
    try:
        table = np.array(cells, dtype=np.float64)
    except ValueError:
        for line, row in rows:  # find the first bad cell for the message
            for j, cell in enumerate(row):
                if not _is_number(cell):
                    raise DataError(f"{path.name}: row {line}, column {column_name(j)}: {cell!r} "
                                    "is not a number; every cell must be numeric") from None
        raise
    label_columns = [j for j, name in enumerate(header or []) if name.lower() in LABEL_COLUMNS]
    if len(label_columns) > 1:
        names = ", ".join(column_name(j) for j in label_columns)
        raise DataError(f"{path.name}: several label columns ({names}); keep only one")
    labels = {}
    if label_columns:
        j = label_columns[0]
        labels["train"] = table[:, j]
        table = np.delete(table, j, axis=1)
        if table.shape[1] == 0:
            raise DataError(f"{path.name}: only a label column; it needs feature columns too")
    return _dataset_from_arrays(path.name, {"train": table}, labels,
                                val_fraction=val_fraction, split_seed=split_seed)


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_GREY_MODES = ("1", "L", "LA", "La")
_COLOUR_MODES = ("P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _image_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def _read_image(path: Path) -> np.ndarray:
    """One image as uint8 [H, W] (grey) or [H, W, 3] (colour; alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in _GREY_MODES:
                image = image.convert("L")
            elif image.mode in _COLOUR_MODES:
                image = image.convert("RGB")
            else:
                raise DataError(f"{path}: image mode {image.mode} is not supported; save it as "
                                "8-bit greyscale or RGB")
            return np.asarray(image, dtype=np.uint8)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError, struct.error,
            zlib.error, MemoryError, Image.DecompressionBombError) as error:
        raise DataError(f"{path}: not a readable image ({error}); re-save it as PNG or "
                        "JPEG") from error


def _describe_image(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]} {'RGB' if image.ndim == 3 else 'greyscale'}"


def _load_image_folder(directory: Path, *, val_fraction: float, split_seed: int) -> Dataset:
    loose = _image_files(directory)
    class_dirs = sorted(p for p in directory.iterdir()
                        if p.is_dir() and not p.name.startswith(".") and _image_files(p))
    if loose and class_dirs:
        raise DataError(f"{directory}: holds both images and class sub-folders of images; put "
                        "every image in a class folder, or all of them directly in the folder")
    if not loose and not class_dirs:
        raise DataError(f"{directory}: no {'/'.join(IMAGE_EXTENSIONS)} images in it or in its "
                        "sub-folders; point to a folder of images or to a .npy/.npz/.csv file")
    if class_dirs:
        files = [(p, label) for label, d in enumerate(class_dirs) for p in _image_files(d)]
        class_names = tuple(d.name for d in class_dirs)
    else:
        files = [(p, None) for p in loose]
        class_names = None

    images = []
    first_path, first = files[0][0], None
    for path, _ in files:
        image = _read_image(path)
        if first is None:
            first = image
        elif image.shape != first.shape:
            raise DataError(f"{path}: {_describe_image(image)}, but {first_path.name} is "
                            f"{_describe_image(first)}; every image needs the same size and "
                            "colour mode")
        images.append(image)
    x = np.stack(images)  # [N, H, W] or [N, H, W, 3]
    if x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    labels = {"train": np.array([label for _, label in files])} if class_names else {}
    return _dataset_from_arrays(directory.name, {"train": x}, labels, val_fraction=val_fraction,
                                split_seed=split_seed, uint8_scale=255.0,
                                class_names=class_names)


FILE_LOADERS: dict[str, Callable[..., Dataset]] = {
    ".npy": _load_npy,
    ".npz": _load_npz,
    ".csv": _load_csv,
}


def _load_path(path: Path, *, val_fraction: float, split_seed: int) -> Dataset:
    if path.is_dir():
        return _load_image_folder(path, val_fraction=val_fraction, split_seed=split_seed)
    loader = FILE_LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DataError(f"{path.name}: unsupported file type '{path.suffix}'; use "
                        f"{', '.join(FILE_LOADERS)} or a folder of PNG/JPEG images")
    return loader(path, val_fraction=val_fraction, split_seed=split_seed)


# ------------------------------------------------------------------------------------------
# The registry and the entry point

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": _load_digits,
    "mnist": partial(_load_idx_dataset, "mnist"),
    "fashion-mnist": partial(_load_idx_dataset, "fashion-mnist"),
    "binarized-mnist": _load_binarized_mnist,
}
DATASET_NAMES = tuple(DATASETS)


def load_dataset(source: str, data_dir: str | Path | None = None, *, val_fraction: float = 0.1,
                 split_seed: int = 0, download: bool = True) -> Dataset:
    """Loads a registered data set by name (:data:`DATASET_NAMES`) or the user's data from a path.

    - ``digits``: scikit-learn's 1797 8x8 digits / 16, split ~80/10/10 with ``split_seed``.
    - ``mnist``, ``fashion-mnist``: the official IDX files in ``data_dir`` (else
      :func:`cache_dir`), downloaded when missing and ``download``; md5-checked; the 60k training
      file split into train/val by ``val_fraction``, the 10k file is the test set.
    - ``binarized-mnist``: ``binarized_mnist.npz`` (uint8 0/1 train/valid/test) in ``data_dir``.
    - a path: ``.npy`` (one array), ``.npz`` (train/test[/val], x[/y] or one array), ``.csv``
      (numeric, optional header and label/class/target column) or a folder of PNG/JPEG images
      (class sub-folders become labels). Missing splits are drawn with ``split_seed``:
      ``val_fraction`` of the examples for validation and as many for test.

    Returns a :class:`Dataset` of float32 tensors [N, *data_shape]: images [N, C, H, W], vectors
    [N, D]. Raises :class:`DataError` for anything missing, corrupt or malformed."""
    _check_val_fraction(val_fraction)
    if source in DATASETS:
        directory = Path(data_dir).expanduser() if data_dir is not None else None
        return DATASETS[source](directory, val_fraction=val_fraction, split_seed=split_seed,
                                download=download)
    path = Path(source).expanduser()
    if not path.exists():
        if os.sep in source or "/" in source or path.suffix:
            raise DataError(f"{source}: no such file or directory; check the path")
        raise DataError(f"unknown data set '{source}'; use one of {', '.join(DATASET_NAMES)} or a "
                        f"path to a {', '.join(FILE_LOADERS)} file or a folder of PNG/JPEG images")
    return _load_path(path, val_fraction=val_fraction, split_seed=split_seed)
