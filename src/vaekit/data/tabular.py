"""Mixed-type tables as vaekit sees them: a :class:`TableSchema` turns a pandas DataFrame (or a
2-D array) into float rows for the table likelihood (:mod:`vaekit.tables`: numeric values,
0/1, counts, category codes, NaN for missing entries) and back.

Column types come from the DataFrame's dtypes (bool -> binary; category, object and string ->
categorical; numbers -> numeric) unless declared: ``{"age": "numeric", "city": "categorical"}``
or, as on the command line, ``"age=numeric,city=categorical"``. Counts (Poisson) and binary
columns of numbers are only ever declared."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

DECLARABLE_TYPES = ("numeric", "binary", "count", "categorical")


def parse_column_types(spec: str | Mapping | None) -> dict:
    """``"age=numeric,city=categorical"`` or a mapping -> ``{column: type}``; checks the types."""
    if spec is None or spec == "auto":
        return {}
    if isinstance(spec, str):
        pairs = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            name, sep, kind = item.rpartition("=")
            if not sep or not name:
                raise DataError(f"column types: '{item}' is not NAME=TYPE (e.g. "
                                "age=numeric,city=categorical)")
            pairs[name.strip()] = kind.strip()
        spec = pairs
    if not isinstance(spec, Mapping):
        raise DataError("column types must be a mapping {column: type} or a string "
                        "'age=numeric,city=categorical'")
    for name, kind in spec.items():
        if kind not in DECLARABLE_TYPES:
            raise DataError(f"column '{name}': unknown column type '{kind}' (valid: "
                            f"{', '.join(DECLARABLE_TYPES)})")
    return dict(spec)


def _is_categorical_dtype(dtype) -> bool:
    import pandas as pd

    return (isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype))


def _levels(values) -> list:
    """The sorted distinct observed values of a column (categories of a pandas Categorical in
    their own order)."""
    import pandas as pd

    if isinstance(values.dtype, pd.CategoricalDtype):
        return list(values.cat.categories)
    observed = values.dropna().unique().tolist()
    try:
        return sorted(observed)
    except TypeError:  # mixed types: keep them apart by their text
        return sorted(observed, key=str)


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class TableSchema:
    """The columns of a table: names, types (``numeric``, ``binary``, ``count``,
    ``categorical``) and, for binary and categorical columns, their levels (what code k
    means; None for a binary column of 0/1 numbers)."""

    names: list[str]
    kinds: list[str]
    levels: list[list | None]
    frame: bool  # fitted on a DataFrame: decode to one

    @property
    def column_specs(self) -> tuple[str, ...]:
        """The column types of the config (``model.columns``)."""
        return tuple(f"categorical:{len(lv)}" if k == "categorical" else k
                     for k, lv in zip(self.kinds, self.levels))

    @property
    def is_numeric(self) -> bool:
        return all(k == "numeric" for k in self.kinds)

    @classmethod
    def infer(cls, table, column_types: str | Mapping | None = None) -> TableSchema:
        """The schema of ``table`` (DataFrame or 2-D array), types from dtypes unless declared
        in ``column_types`` (names, or column indices for an array)."""
        import pandas as pd

        declared = parse_column_types(column_types)
        frame = isinstance(table, pd.DataFrame)
        df = table if frame else pd.DataFrame(np.asarray(table))
        names = [str(c) for c in df.columns]
        by_name = {str(k): v for k, v in declared.items()}
        unknown = [k for k in by_name if k not in names]
        if unknown:
            raise DataError(f"column types name unknown columns: {', '.join(unknown)} (the "
                            f"table's columns: {', '.join(names)})")
        kinds, levels = [], []
        for name, column in zip(names, (df[c] for c in df.columns)):
            kind = by_name.get(name)
            if kind is None:
                if pd.api.types.is_bool_dtype(column.dtype):
                    kind = "binary"
                elif _is_categorical_dtype(column.dtype):
                    kind = "categorical"
                else:
                    kind = "numeric"
            lv = None
            if kind == "categorical" or (kind == "binary" and not _is_numeric_01(column)):
                lv = _levels(column)
                if kind == "binary" and len(lv) > 2:
                    raise DataError(f"column '{name}' is declared binary but holds "
                                    f"{len(lv)} distinct values")
                if not lv:
                    raise DataError(f"column '{name}' has no observed values to learn its "
                                    "categories from")
            kinds.append(kind)
            levels.append(lv)
        return cls(names, kinds, levels, frame)

    def encode(self, table) -> np.ndarray:
        """``[N, D]`` float32 rows for the table likelihood: NaN for missing entries and for
        categories not seen when the schema was made."""
        import pandas as pd

        df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(np.asarray(table))
        if df.shape[1] != len(self.names):
            raise DataError(f"the table has {df.shape[1]} columns, expected {len(self.names)}")
        out = np.empty(df.shape, dtype=np.float32)
        for j, (kind, lv) in enumerate(zip(self.kinds, self.levels)):
            column = df.iloc[:, j]
            if lv is not None:
                known = column.isin(lv)  # an unseen category is a missing entry
                codes = pd.Categorical(column.where(known, None), categories=lv).codes
                codes = codes.astype(np.float32)
                codes[codes < 0] = np.nan
                out[:, j] = codes
                continue
            try:
                values = pd.to_numeric(column, errors="raise").to_numpy(dtype=np.float64,
                                                                         na_value=np.nan)
            except (ValueError, TypeError):
                raise DataError(f"column '{self.names[j]}' ({kind}) holds values that are not "
                                "numbers; declare it categorical") from None
            if np.isinf(values).any():
                raise DataError(f"column '{self.names[j]}' holds infinite values")
            if kind == "binary" and not np.isin(values[~np.isnan(values)], (0, 1)).all():
                raise DataError(f"column '{self.names[j]}' is binary but holds values other "
                                "than 0 and 1")
            if kind == "count":
                v = values[~np.isnan(values)]
                if ((v < 0) | (v != np.round(v))).any():
                    raise DataError(f"column '{self.names[j]}' is a count but holds values "
                                    "that are not 0, 1, 2, ...")
            out[:, j] = values
        return out

    def decode(self, rows: np.ndarray):
        """Rows of codes ``[N, D]`` -> a DataFrame with the table's levels (when the schema
        was made from one) or a float array."""
        import pandas as pd

        rows = np.asarray(rows, dtype=np.float64)
        if not self.frame and all(lv is None or all(isinstance(v, (int, float, np.number))
                                                    for v in lv) for lv in self.levels):
            out = rows.copy()
            for j, lv in enumerate(self.levels):
                if lv is not None:
                    out[:, j] = _take(np.asarray(lv, dtype=np.float64), rows[:, j])
            return out
        columns = {}
        for j, (name, lv) in enumerate(zip(self.names, self.levels)):
            if lv is None:
                columns[name] = rows[:, j]
            else:
                columns[name] = pd.Categorical.from_codes(
                    np.where(np.isnan(rows[:, j]), -1, rows[:, j]).astype(int), categories=lv)
        return pd.DataFrame(columns)

    def to_json(self) -> dict:
        return {"names": self.names, "kinds": self.kinds, "frame": self.frame,
                "levels": [None if lv is None else [_jsonable(v) for v in lv]
                           for lv in self.levels]}

    @classmethod
    def from_json(cls, value: dict) -> TableSchema:
        return cls(list(value["names"]), list(value["kinds"]), list(value["levels"]),
                   bool(value["frame"]))


def _take(levels: np.ndarray, codes: np.ndarray) -> np.ndarray:
    out = np.full(codes.shape, np.nan)
    ok = ~np.isnan(codes)
    out[ok] = levels[codes[ok].astype(int)]
    return out


def _is_numeric_01(column) -> bool:
    import pandas as pd

    if pd.api.types.is_bool_dtype(column.dtype):
        return False  # bool columns keep their levels False/True
    if not pd.api.types.is_numeric_dtype(column.dtype):
        return False
    v = column.dropna().to_numpy()
    return bool(np.isin(v, (0, 1)).all())


def read_table(path: str | Path, column_types: str | Mapping | None = None,
               label_columns: Sequence[str] = ()) -> tuple[Any, TableSchema, Any]:
    """A CSV table read with pandas: ``(frame, schema, labels)``, the label column (named in
    ``label_columns``, case-insensitive) taken out when present."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{path.name}: cannot read it as CSV ({error})") from None
    if frame.empty:
        raise DataError(f"{path.name}: the file holds no rows")
    labels = None
    found = [c for c in frame.columns if str(c).lower() in label_columns]
    if len(found) > 1:
        raise DataError(f"{path.name}: several label columns ({', '.join(found)}); keep only one")
    if found:
        labels = frame.pop(found[0])
    return frame, TableSchema.infer(frame, column_types), labels


def load_table_csv(path: Path, column_types: str | Mapping | None, *, val_fraction: float,
                   split_seed: int):
    """A CSV as a mixed-type table: a :class:`~vaekit.data.dataset.Dataset` of encoded rows
    (category codes, NaN for missing cells) with its schema in ``table``, split into train /
    validation / test with ``split_seed`` like every user file; a ``label``/``class``/``target``
    column becomes the labels (its values the class names)."""
    import torch

    from .arrays import held_out_size, split_indices
    from .dataset import Dataset
    from .files import LABEL_COLUMNS

    frame, schema, labels = read_table(path, column_types, LABEL_COLUMNS)
    rows = schema.encode(frame)
    if len(rows) < 3:
        raise DataError(f"{path.name} has {len(rows)} rows; at least 3 are needed to split off "
                        "validation and test rows")
    class_names, codes = None, None
    if labels is not None:
        import pandas as pd

        levels = _levels(labels)
        codes = pd.Categorical(labels, categories=levels).codes.astype(np.int64)
        if (codes < 0).any():
            raise DataError(f"{path.name}: the label column has empty cells")
        class_names = tuple(str(v) for v in levels)
    size = held_out_size(len(rows), val_fraction, 2)
    parts = split_indices(len(rows), [size, size], split_seed)
    x = [torch.from_numpy(np.ascontiguousarray(rows[idx])) for idx in parts]
    y = [None if codes is None else torch.from_numpy(codes[idx]) for idx in parts]
    return Dataset(path.name, x[0], x[1], x[2], y[0], y[1], y[2], value_kind="real",
                   is_image=False, class_names=class_names, table=schema)
