"""The benchmark data sets of the IWAE (Burda et al. 2016) and VampPrior (Tomczak & Welling 2018)
papers, from plain files in ``--data-dir`` (never downloaded): Omniglot at 28x28 made from the
official 105x105 images, Caltech 101 Silhouettes (28x28, binary) and the Frey faces (28x20 grey).

**Checksums.** Each source file has a known size and md5 (:data:`OMNIGLOT_FILES`,
:data:`CALTECH_FILE`, :data:`FREY_FILE`). A file of exactly the official size must have the
official md5, else it is a corrupt copy and refused. A file of another size is not the official
file (a truncated copy, or a small file of the same layout that tests and users may build): its
md5 is not checked, and what is in it is -- keys, shapes, dtypes and values -- so a truncated or
wrong file still fails with one line saying what is missing. (The MNIST loader's rule, md5 for
the official ``.gz`` names only, has no counterpart here: these files have one name each.)

Every problem raises :class:`~vaekit.errors.DataError` with a one-line message."""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .arrays import held_out_size, split_indices
from .dataset import Dataset
from .downloads import dataset_dir
from .files import _NPY_READ_ERRORS
from .idx import read_bytes


@dataclass(frozen=True)
class KnownFile:
    """A source file as published: its name, size in bytes and md5."""

    name: str
    size: int
    md5: str

    def describe(self) -> str:
        return f"the official {self.name} has {self.size} bytes, md5 {self.md5}"


def read_known_file(data_set: str, directory: Path, known: KnownFile) -> bytes:
    """The bytes of ``directory / known.name``; md5-checked when the file has the official size
    (see the module docstring). Raises DataError when it is missing or a corrupt official copy."""
    path = directory / known.name
    if not path.is_file():
        raise DataError(f"{data_set}: {known.name} not found in {directory}; it is not downloaded "
                        "automatically: pass --data-dir to the folder holding it (docs/data.md "
                        "says where it comes from)")
    data = read_bytes(path)
    if len(data) == known.size:
        actual = hashlib.md5(data).hexdigest()
        if actual != known.md5:
            raise DataError(f"{path}: md5 {actual} but {known.describe()} (a corrupt copy; copy "
                            "the file again)")
    return data


def _bad_file(data_set: str, known: KnownFile, data: bytes, what: str) -> DataError:
    return DataError(f"{data_set}: {known.name} {what} ({len(data)} bytes; {known.describe()})")


def _npz_arrays(data_set: str, known: KnownFile, data: bytes,
                keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of an .npz archive given as bytes (never unpickled)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                found = ", ".join(archive.files) or "none"
                raise _bad_file(data_set, known, data, f"has no array '{missing[0]}' (found: "
                                f"{found})")
            return {key: archive[key] for key in keys}
    except _NPY_READ_ERRORS as error:  # an .npy array renamed fails `with` (TypeError)
        raise _bad_file(data_set, known, data, f"is not a readable .npz archive ({error})") \
            from error


def _as_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W] -> float32 [N, 1, H, W] in [0, 1]."""
    return torch.from_numpy(images[:, None].astype(np.float32)).div_(255)


# ------------------------------------------------------------------------------------------
# Area-averaging downsampling (Omniglot 105x105 -> 28x28)

def _integer_overlaps(n_in: int, n_out: int) -> tuple[np.ndarray, int]:
    """``(W, d)``: ``W[i, j]`` is the length of the overlap of output pixel i, covering
    [i n_in / n_out, (i + 1) n_in / n_out), with input pixel j, covering [j, j + 1), in units of
    g / n_out (g = gcd): whole numbers, since every pixel edge is then a whole number. Every row
    sums to d = n_in / g, and ``W / d`` averages an input row over each output pixel's area."""
    g = math.gcd(n_in, n_out)
    a, b = n_out // g, n_in // g  # input pixel j: [j a, (j + 1) a); output i: [i b, (i + 1) b)
    j, i = np.arange(n_in), np.arange(n_out)[:, None]
    overlap = np.minimum((j + 1) * a, (i + 1) * b) - np.maximum(j * a, i * b)
    return np.clip(overlap, 0, None).astype(np.int64), b


def overlap_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The separable area-averaging matrix ``A [n_out, n_in]`` (float64): ``A[i, j]`` is the
    fraction of output pixel i's width covered by input pixel j, so every row sums to 1, every
    column to n_out / n_in, and ``A @ image @ A.T`` is each output pixel's exact area average."""
    weights, denominator = _integer_overlaps(n_in, n_out)
    return weights / denominator


def area_downsample(images: np.ndarray, size: int, *, complement: bool = False,
                    chunk: int = 1024) -> np.ndarray:
    """Square images ``[N, n, n]`` (bool or numbers) -> ``[N, size, size]`` float32 averages over
    each output pixel's area, ``A @ image @ A.T`` (:func:`overlap_matrix`): mass is conserved, the
    mean of every image stays the same. ``complement``: the averages of ``1 - images`` (the ink of
    a background mask) without building that array. Computed with whole-number weights (two
    matrix products per chunk), so 0/1 input gives exact multiples of 1 / d^2 (d = n / gcd(n,
    size): 1/225 for 105 -> 28)."""
    n = images.shape[-1]
    weights, denominator = _integer_overlaps(n, size)
    w_t = np.ascontiguousarray(weights.T, dtype=np.float32)  # [n, size]
    out = np.empty((len(images), size, size), np.float32)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk]
        rows = block.reshape(-1, n).astype(np.float32) @ w_t  # [B n, size]: along each row
        columns = rows.reshape(len(block), n, size).transpose(0, 2, 1).reshape(-1, n) @ w_t
        out[start:start + chunk] = columns.reshape(len(block), size, size).transpose(0, 2, 1)
    total = np.float32(denominator * denominator)  # the sum of the weights of an output pixel
    if complement:
        np.subtract(total, out, out=out)
    out /= total
    return out


# ------------------------------------------------------------------------------------------
# Omniglot (Lake, Salakhutdinov & Tenenbaum 2015)

OMNIGLOT_FILES = {
    "background": KnownFile("images_background.npz", 3340794, "042c0a3e1688c4f4dc9d7213db63ee80"),
    "evaluation": KnownFile("images_evaluation.npz", 2415269, "a6277b6770b9241c6906fa797456e652"),
    "alphabets": KnownFile("alphabets.tsv", 1683, "a28b027275539d83fa8c3f8d3e706729"),
}
OMNIGLOT_SIZE = 28  # 105 = 28 * 3.75
OMNIGLOT_DRAWERS = 20  # drawings of every character
OMNIGLOT_TRAIN_PER_CHARACTER = 15  # 1,623 x 15 = 24,345 training images
OMNIGLOT_CHARACTERS = 1623
OMNIGLOT_DROPPED = 45  # 1,623 x 5 - 45 = 8,070 test images, the papers' size
OMNIGLOT_SPLIT_SEED = 0  # the fixed train/test split; --split-seed draws the validation images


def _omniglot_alphabets(data: bytes, known: KnownFile, num_background: int,
                        num_characters: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """The alphabet index of each character (0-based, in file order) and the alphabet names,
    from ``alphabets.tsv`` (first_char_id, last_char_id, set, alphabet per line)."""
    bad = lambda what: _bad_file("omniglot", known, data, what)  # noqa: E731
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise bad("is not UTF-8 text") from error
    if not lines or lines[0].split("\t") != ["first_char_id", "last_char_id", "set", "alphabet"]:
        raise bad("lacks the header first_char_id, last_char_id, set, alphabet")
    names, counts, expected_first = [], [], 1
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        try:
            first, last, set_name, name = int(fields[0]), int(fields[1]), fields[2], fields[3]
        except (ValueError, IndexError):
            raise bad(f"line {number} is not id, id, set, name") from None
        in_background = last <= num_background
        if (first != expected_first or last < first or not name
                or set_name != ("background" if in_background else "evaluation")
                or (first <= num_background < last)):
            raise bad(f"line {number} does not continue the character ids {expected_first}.. of "
                      f"{num_background} background and {num_characters - num_background} "
                      "evaluation characters")
        names.append(name.replace("_", " "))
        counts.append(last - first + 1)
        expected_first = last + 1
    if expected_first != num_characters + 1:
        raise bad(f"covers characters 1..{expected_first - 1}, not the {num_characters} of the "
                  "image files")
    return np.repeat(np.arange(len(names)), counts), tuple(names)


def omniglot_split(num_characters: int, seed: int = OMNIGLOT_SPLIT_SEED
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The fixed train/test split of Omniglot's images (index c * 20 + k for drawing k of
    character c): 15 of the 20 drawings of every character, drawn at random, for training and
    the other 5 for testing, less ``45 * C // 1623`` test images drawn at random (45 for all 1,623
    characters: 24,345 / 8,070, the sizes of the IWAE and VampPrior papers). Sorted indices."""
    rng = np.random.default_rng(seed)
    order = rng.permuted(np.tile(np.arange(OMNIGLOT_DRAWERS), (num_characters, 1)), axis=1)
    index = np.arange(num_characters)[:, None] * OMNIGLOT_DRAWERS + order
    train = index[:, :OMNIGLOT_TRAIN_PER_CHARACTER].ravel()
    test = index[:, OMNIGLOT_TRAIN_PER_CHARACTER:].ravel()
    dropped = rng.choice(len(test), OMNIGLOT_DROPPED * num_characters // OMNIGLOT_CHARACTERS,
                         replace=False)
    return np.sort(train), np.sort(np.delete(test, dropped))


def load_omniglot(data_dir: Path | None, *, val_fraction: float, split_seed: int,
                  download: bool) -> Dataset:
    """Omniglot at 28x28 from ``images_background.npz`` and ``images_evaluation.npz`` (105x105
    bool images, True = background) and ``alphabets.tsv`` in ``data_dir``.

    The 28x28 version of the papers (``chardata.mat``) is not available, so the images are made
    here: ink = 1, background = 0, each 28x28 pixel the exact area average of the ink under it
    (:func:`area_downsample`; grey levels k / 225, so ``levels`` = 226). Split: the fixed
    :func:`omniglot_split` (seed 0; 24,345 train / 8,070 test, the papers' sizes, 45 of the 32,460
    images left out), then ``val_fraction`` of the training images held out for validation with
    ``split_seed`` (``--val-fraction 0.05525`` holds out VampPrior's 1,345). Labels: the 50
    alphabets, background ones first. No download (``download`` is ignored)."""
    directory = dataset_dir("omniglot", data_dir)
    raw = {part: read_known_file("omniglot", directory, known)
           for part, known in OMNIGLOT_FILES.items()}
    parts, counts = [], {}
    for part in ("background", "evaluation"):
        known = OMNIGLOT_FILES[part]
        images = _npz_arrays("omniglot", known, raw[part], ("images",))["images"]
        shape = (OMNIGLOT_DRAWERS, 105, 105)
        if images.ndim != 4 or images.shape[1:] != shape or len(images) == 0:
            raise _bad_file("omniglot", known, raw[part], f"holds images of shape {images.shape}; "
                            f"expected [characters, {', '.join(map(str, shape))}]")
        if images.dtype != np.bool_:
            raise _bad_file("omniglot", known, raw[part], f"holds images of dtype {images.dtype}; "
                            "expected bool (True = background)")
        counts[part] = len(images)
        flat = images.reshape(-1, 105, 105)
        parts.append(area_downsample(flat, OMNIGLOT_SIZE, complement=True))  # of the ink
        del images, flat
    num_characters = counts["background"] + counts["evaluation"]
    alphabet_of, names = _omniglot_alphabets(raw["alphabets"], OMNIGLOT_FILES["alphabets"],
                                             counts["background"], num_characters)
    x = torch.from_numpy(np.concatenate(parts)[:, None])
    y = torch.from_numpy(np.repeat(alphabet_of, OMNIGLOT_DRAWERS))
    train, test = (torch.from_numpy(i) for i in omniglot_split(num_characters))
    num_val = held_out_size(len(train), val_fraction, 1)
    kept, val = (train[torch.from_numpy(i)] for i in
                 split_indices(len(train), [num_val], split_seed))
    return Dataset(
        name="omniglot", train=x[kept], val=x[val], test=x[test],
        train_labels=y[kept], val_labels=y[val], test_labels=y[test],
        value_kind="unit", is_image=True, class_names=names, levels=226,
    )


# ------------------------------------------------------------------------------------------
# Caltech 101 Silhouettes (Marlin, Swersky, Chen & de Freitas 2010)

CALTECH_FILE = KnownFile("caltech101_silhouettes_28_split1.mat", 872124,
                         "4483e9c14b188fd09937f9ea6f9ea777")
_MAT_READ_ERRORS = (OSError, EOFError, ValueError, TypeError, IndexError, KeyError,
                    AttributeError, NotImplementedError, UnicodeDecodeError, OverflowError,
                    MemoryError, struct.error, zlib.error)


def _class_name(cell: object) -> str | None:
    """A MATLAB cell's string (loadmat gives a 1-element array of str), else None."""
    value = np.asarray(cell).ravel()
    return str(value[0]).strip() if value.size == 1 and isinstance(value[0], str) else None


def load_caltech101_silhouettes(data_dir: Path | None, *, val_fraction: float, split_seed: int,
                                download: bool) -> Dataset:
    """Caltech 101 Silhouettes 28x28 from ``caltech101_silhouettes_28_split1.mat`` in
    ``data_dir``: the file's own split (4,100 train / 2,264 validation / 2,307 test; so
    ``val_fraction`` and ``split_seed`` are not used), rows of 784 column-major pixels turned
    upright, silhouette = 1 and background = 0 (the file stores 1 - x, as the VampPrior code
    undoes), binary. Labels 0..100 (the file's 1..101), the file's 101 class names."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    directory = dataset_dir("caltech101-silhouettes", data_dir)
    data = read_known_file("caltech101-silhouettes", directory, CALTECH_FILE)
    bad = lambda what: _bad_file("caltech101-silhouettes", CALTECH_FILE, data, what)  # noqa: E731
    try:
        contents = loadmat(io.BytesIO(data))
    except (MatReadError, *_MAT_READ_ERRORS) as error:
        raise bad(f"is not a readable MATLAB file ({error})") from error
    keys = [f"{split}_{kind}" for split in ("train", "val", "test") for kind in ("data", "labels")]
    missing = [key for key in (*keys, "classnames") if key not in contents]
    if missing:
        raise bad(f"has no variable '{missing[0]}'")
    cells = np.asarray(contents["classnames"]).ravel()
    names = tuple(_class_name(cell) for cell in cells)
    if not names or None in names:
        raise bad("has classnames that are not a cell array of strings")
    splits, labels = {}, {}
    for split in ("train", "val", "test"):
        x, y = np.asarray(contents[f"{split}_data"]), np.asarray(contents[f"{split}_labels"])
        if x.ndim != 2 or x.shape[1] != 784 or len(x) == 0 or y.shape != (len(x), 1):
            raise bad(f"has {split}_data {x.shape} and {split}_labels {y.shape}; expected [N, 784]"
                      " and [N, 1]")
        if not np.issubdtype(x.dtype, np.number) or not np.all((x == 0) | (x == 1)):
            raise bad(f"has {split}_data with values other than 0 and 1")
        if (not np.issubdtype(y.dtype, np.integer) or y.min() < 1 or y.max() > len(names)):
            raise bad(f"has {split}_labels outside 1..{len(names)}")
        upright = x.reshape(-1, 28, 28).transpose(0, 2, 1)  # column-major rows
        splits[split] = torch.from_numpy(1 - upright[:, None].astype(np.float32))
        labels[split] = torch.from_numpy(y[:, 0].astype(np.int64) - 1)
    return Dataset(
        name="caltech101-silhouettes", train=splits["train"], val=splits["val"],
        test=splits["test"], train_labels=labels["train"], val_labels=labels["val"],
        test_labels=labels["test"], value_kind="binary", is_image=True, class_names=names,
        levels=2,
    )


# ------------------------------------------------------------------------------------------
# Frey faces (Brendan Frey; Sam Roweis' data page)

FREY_FILE = KnownFile("frey_faces.npz", 996890, "8d5f1ecf259d2d1c5821d02ba41ea249")
FREY_HELD_OUT = 200  # validation and test images each, as in the VampPrior code (1565/200/200)
FREY_SIZE = 1965
FREY_SPLIT_SEED = 0


def load_frey_faces(data_dir: Path | None, *, val_fraction: float, split_seed: int,
                    download: bool) -> Dataset:
    """The 1,965 Frey faces, 28x20 grey (uint8, 256 levels), from ``frey_faces.npz`` (array
    ``images`` [N, 28, 20]) in ``data_dir``. A fixed split, the same for every ``split_seed`` and
    ``val_fraction``: a permutation seeded with 0 gives 1,565 train, 200 validation and 200 test
    faces (VampPrior's sizes; a smaller file keeps the proportions). No labels."""
    directory = dataset_dir("frey-faces", data_dir)
    data = read_known_file("frey-faces", directory, FREY_FILE)
    images = _npz_arrays("frey-faces", FREY_FILE, data, ("images",))["images"]
    if images.ndim != 3 or images.shape[1:] != (28, 20) or len(images) < 3:
        raise _bad_file("frey-faces", FREY_FILE, data, f"holds images of shape {images.shape}; "
                        "expected [N, 28, 20] with N >= 3")
    if images.dtype != np.uint8:
        raise _bad_file("frey-faces", FREY_FILE, data, f"holds images of dtype {images.dtype}; "
                        "expected uint8 grey levels 0..255")
    size = held_out_size(len(images), FREY_HELD_OUT / FREY_SIZE, 2)
    train, val, test = split_indices(len(images), [size, size], FREY_SPLIT_SEED)
    x = _as_unit(images)
    return Dataset(
        name="frey-faces", train=x[train], val=x[val], test=x[test],
        train_labels=None, val_labels=None, test_labels=None,
        value_kind="unit", is_image=True, levels=256,
    )
