"""The user's own data: .npy, .npz, .csv and folders of images (class sub-folders become
labels). Nothing is ever unpickled (``allow_pickle=False``)."""

from __future__ import annotations

import csv
import struct
import tokenize
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import DataError
from .arrays import dataset_from_arrays
from .dataset import Dataset
from .tabular import LABEL_COLUMNS, take_condition_columns


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


def read_npz(path: Path) -> dict[str, np.ndarray]:
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
    return dataset_from_arrays(path.name, {"train": _read_npy(path)}, {},
                                val_fraction=val_fraction, split_seed=split_seed)


def _load_npz(path: Path, *, val_fraction: float, split_seed: int) -> Dataset:
    contents = read_npz(path)
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
    dataset = dataset_from_arrays(path.name, arrays, labels,
                                  val_fraction=val_fraction, split_seed=split_seed)
    if "train_scale" in keys:
        dataset = with_train_scale(dataset, contents["train_scale"], path.name,
                                   has_splits=set(arrays) == {"train", "val", "test"})
    return dataset


def with_train_scale(dataset: Dataset, scale: np.ndarray, name: str, *, has_splits: bool
                     ) -> Dataset:
    """``dataset`` whose training examples are Gaussians N(train, scale^2) (the .npz key
    ``train_scale``): one non-negative, finite scale per value of ``train``, 2-D features, with
    the validation and test splits given (they are evaluated at their means)."""
    if not has_splits:
        raise DataError(f"{name}: 'train_scale' needs the splits train, val (or valid) and test "
                        "in the archive, so that it is not split off with the training examples")
    if dataset.train.dim() != 2 or tuple(scale.shape) != tuple(dataset.train.shape):
        raise DataError(f"{name}: 'train_scale' must have the shape of 'train', a 2-D array of "
                        f"features (found {tuple(scale.shape)} for {tuple(dataset.train.shape)})")
    scale = np.asarray(scale, dtype=np.float64)
    if not (np.isfinite(scale).all() and (scale >= 0).all()):
        raise DataError(f"{name}: 'train_scale' holds negative or non-finite values; it is the "
                        "standard deviation of each training value")
    return replace(dataset, train_scale=torch.from_numpy(scale.astype(np.float32)))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _load_csv(path: Path, *, val_fraction: float, split_seed: int,
              condition_columns: tuple[str, ...] | None = None) -> Dataset:
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

    conditions = None
    if condition_columns:  # taken out before the cells are read as numbers
        import pandas as pd

        if header is None:
            raise DataError(f"{path.name}: --condition-columns names columns of a header row, "
                            "and the file has none")
        frame, conditions = take_condition_columns(
            pd.DataFrame([row for _, row in rows], columns=header, dtype=object),
            condition_columns, path.name, [line for line, _ in rows])
        header = [str(c) for c in frame.columns]
        rows = [(line, row) for (line, _), row in zip(rows, frame.to_numpy().tolist())]

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
    return dataset_from_arrays(path.name, {"train": table}, labels,
                                val_fraction=val_fraction, split_seed=split_seed,
                                conditions=conditions, condition_columns=condition_columns)


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
    return dataset_from_arrays(directory.name, {"train": x}, labels, val_fraction=val_fraction,
                                split_seed=split_seed, uint8_scale=255.0,
                                class_names=class_names)


FILE_LOADERS: dict[str, Callable[..., Dataset]] = {
    ".npy": _load_npy,
    ".npz": _load_npz,
    ".csv": _load_csv,
}


def load_path(path: Path, *, val_fraction: float, split_seed: int,
              condition_columns: tuple[str, ...] | None = None) -> Dataset:
    if condition_columns and (path.is_dir() or path.suffix.lower() != ".csv"):
        what = "a folder of images" if path.is_dir() else f"'{path.name}'"
        raise DataError(f"--condition-columns takes columns of a .csv table, not {what}")
    if condition_columns:
        return _load_csv(path, val_fraction=val_fraction, split_seed=split_seed,
                         condition_columns=condition_columns)
    if path.is_dir():
        return _load_image_folder(path, val_fraction=val_fraction, split_seed=split_seed)
    loader = FILE_LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DataError(f"{path.name}: unsupported file type '{path.suffix}'; use "
                        f"{', '.join(FILE_LOADERS)} or a folder of PNG/JPEG images")
    return loader(path, val_fraction=val_fraction, split_seed=split_seed)
