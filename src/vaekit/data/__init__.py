"""Data: the :class:`Dataset` container and registry (:mod:`.dataset`, :mod:`.registry`), the
built-in benchmarks (:mod:`.benchmarks`, :mod:`.idx`, :mod:`.downloads`), the user's own files
(:mod:`.files`, :mod:`.arrays`), batching (:mod:`.batches`) and the preparation a run applies,
binarization included (:mod:`.preparation`).

Every problem the user can fix (a missing or corrupt file, a bad value, an unknown name) raises
:class:`~vaekit.errors.DataError` with a one-line message saying what is wrong and what to do."""

from .batches import TensorBatches
from .dataset import SPLITS, VALUE_KINDS, Dataset, DatasetSpec
from .downloads import cache_dir
from .idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, parse_idx, read_idx
from .preparation import (BINARIZATION_SEEDS, BINARIZATIONS, PreparedData, binarize_fixed,
                          dynamic_binarize, prepare_data, prepare_split, quantize)
from .registry import (DATASET_NAMES, DATASETS, USER_DATA_DEFAULTS, class_names_of,
                       dataset_defaults, load_dataset)

__all__ = [
    "BINARIZATIONS", "BINARIZATION_SEEDS", "DATASETS", "DATASET_NAMES", "Dataset", "DatasetSpec",
    "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "PreparedData", "SPLITS", "TensorBatches",
    "USER_DATA_DEFAULTS", "VALUE_KINDS", "binarize_fixed", "cache_dir", "class_names_of",
    "dataset_defaults", "dynamic_binarize", "load_dataset", "parse_idx", "prepare_data",
    "prepare_split", "quantize", "read_idx",
]
