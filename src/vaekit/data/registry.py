"""The registry of data sets (name -> loader and defaults) and the one entry point that loads
a registered data set by name or the user's data from a path."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import DataError
from .arrays import check_val_fraction
from .benchmarks import load_binarized_mnist, load_digits, load_idx_dataset
from .dataset import Dataset, DatasetSpec
from .downloads import IDX_SOURCES
from .dsprites import SHAPE_NAMES, load_dsprites
from .files import FILE_LOADERS, load_path
from .paper_sets import load_caltech101_silhouettes, load_frey_faces, load_omniglot

DIGITS = tuple(str(i) for i in range(10))
_MNIST_MODEL = {"hidden": (400,), "latent_dim": 20, "epochs": 10}

DATASETS: dict[str, DatasetSpec] = {
    # 8x8 digits have 17 grey levels (0..16): binarizing such tiny images destroys the strokes,
    # and a density of grey values gives no probability of the data, so the default is a
    # discrete likelihood over the 17 levels: of the three (docs/likelihoods.md) the
    # discretized logistic had the best test log p(x) after the 200 default epochs and is the
    # fastest; the mixture and the categorical overfit the 1437 training images. Runs saved
    # with the Gaussian default keep it (their config.json names the likelihood).
    "digits": DatasetSpec(load_digits, {"hidden": (256,), "latent_dim": 8, "epochs": 200,
                                         "likelihood": "discretized-logistic"}, DIGITS),
    "mnist": DatasetSpec(partial(load_idx_dataset, "mnist"), _MNIST_MODEL,
                         IDX_SOURCES["mnist"].class_names),
    "fashion-mnist": DatasetSpec(partial(load_idx_dataset, "fashion-mnist"), _MNIST_MODEL,
                                 IDX_SOURCES["fashion-mnist"].class_names),
    "binarized-mnist": DatasetSpec(load_binarized_mnist, _MNIST_MODEL),
    # the IWAE / VampPrior benchmarks (vaekit.data.paper_sets, docs/data.md); their class names
    # come from the files. Omniglot (28x28 grey, dynamically binarized like MNIST) and the
    # binary silhouettes take MNIST's model; the 1,965 Frey faces a small one for many epochs
    # and, like digits, a discrete likelihood over their 256 levels, so bits/dim is reported.
    "omniglot": DatasetSpec(load_omniglot, {**_MNIST_MODEL, "epochs": 20}),
    "caltech101-silhouettes": DatasetSpec(load_caltech101_silhouettes,
                                          {**_MNIST_MODEL, "epochs": 100}),
    "frey-faces": DatasetSpec(load_frey_faces, {"hidden": (200,), "latent_dim": 10, "epochs": 200,
                                                "likelihood": "discretized-logistic"}),
    # dSprites rendered here from its definition (vaekit.data.dsprites, docs/data.md): a fixed
    # 100,000 / 10,000 subset of its 737,280 binary 64x64 images, labelled by shape, and the
    # MLP of beta-VAE on dSprites (Higgins et al. 2017: 1200-1200, 10 latents)
    "dsprites": DatasetSpec(load_dsprites, {"hidden": (1200, 1200), "latent_dim": 10,
                                            "epochs": 20}, SHAPE_NAMES),
}
DATASET_NAMES = tuple(DATASETS)
# the user's own files: a middle-sized MLP
USER_DATA_DEFAULTS: dict[str, Any] = {"hidden": (256, 256), "latent_dim": 10, "epochs": 50}


def dataset_defaults(name: str) -> dict[str, Any]:
    """The model and training defaults of data set ``name`` (the user-data ones for a path)."""
    spec = DATASETS.get(name)
    return dict(spec.defaults) if spec is not None else dict(USER_DATA_DEFAULTS)


def class_names_of(name: str) -> tuple[str, ...] | None:
    """What the labels of registered data set ``name`` mean (None when not known)."""
    spec = DATASETS.get(name)
    return spec.class_names if spec is not None else None


def load_dataset(source: str, data_dir: str | Path | None = None, *, val_fraction: float = 0.1,
                 split_seed: int = 0, download: bool = True,
                 column_types: str | None = None,
                 condition_columns: tuple[str, ...] | None = None) -> Dataset:
    """Loads a registered data set by name (:data:`DATASET_NAMES`) or the user's data from a path.

    - ``digits``: scikit-learn's 1797 8x8 digits / 16, split ~80/10/10 with ``split_seed``.
    - ``mnist``, ``fashion-mnist``: the official IDX files in ``data_dir`` (else
      :func:`cache_dir`), downloaded when missing and ``download``; md5-checked; the 60k training
      file split into train/val by ``val_fraction``, the 10k file is the test set.
    - ``binarized-mnist``: ``binarized_mnist.npz`` (uint8 0/1 train/valid/test) in ``data_dir``.
    - ``omniglot``, ``caltech101-silhouettes``, ``frey-faces``: the files in ``data_dir`` (never
      downloaded), with the fixed splits of :mod:`vaekit.data.paper_sets`.
    - ``dsprites``: a fixed subset of dSprites, rendered into ``data_dir`` (else :func:`cache_dir`)
      on first use (:mod:`vaekit.data.dsprites`).
    - a path: ``.npy`` (one array), ``.npz`` (train/test[/val], x[/y] or one array), ``.csv``
      (numeric, optional header and label/class/target column) or a folder of PNG/JPEG images
      (class sub-folders become labels). Missing splits are drawn with ``split_seed``:
      ``val_fraction`` of the examples for validation and as many for test.
    - with ``column_types`` (``"auto"`` or ``"age=numeric,city=categorical"``) a ``.csv`` is a
      mixed-type table read with pandas (:func:`vaekit.data.tabular.load_table_csv`): category
      codes, NaN for missing cells, its schema in ``Dataset.table``.
    - with ``condition_columns`` (``("age", "income")``, a ``.csv`` only) those numeric columns
      are taken out of x: their values per split in ``Dataset.conditions`` (the covariates of a
      conditional model, :mod:`vaekit.training.conditioning`).

    Returns a :class:`Dataset` of float32 tensors [N, *data_shape]: images [N, C, H, W], vectors
    [N, D]. Raises :class:`DataError` for anything missing, corrupt or malformed."""
    check_val_fraction(val_fraction)
    if source in DATASETS and column_types is not None:
        raise DataError(f"--column-types applies to a .csv table, not the data set '{source}'")
    if source in DATASETS and condition_columns:
        raise DataError(f"--condition-columns takes columns of a .csv table, not the data set "
                        f"'{source}'")
    if source in DATASETS:
        directory = Path(data_dir).expanduser() if data_dir is not None else None
        return DATASETS[source].load(directory, val_fraction=val_fraction, split_seed=split_seed,
                                     download=download)
    path = Path(source).expanduser()
    if not path.exists():
        if os.sep in source or "/" in source or path.suffix:
            raise DataError(f"{source}: no such file or directory; check the path")
        raise DataError(f"unknown data set '{source}'; use one of {', '.join(DATASET_NAMES)} or a "
                        f"path to a {', '.join(FILE_LOADERS)} file or a folder of PNG/JPEG images")
    if column_types is not None:
        from .tabular import load_table_csv

        if path.suffix.lower() != ".csv":
            raise DataError(f"--column-types reads a .csv table, not '{path.name}'")
        return load_table_csv(path, column_types, val_fraction=val_fraction,
                              split_seed=split_seed, condition_columns=condition_columns)
    return load_path(path, val_fraction=val_fraction, split_seed=split_seed,
                     condition_columns=condition_columns)
