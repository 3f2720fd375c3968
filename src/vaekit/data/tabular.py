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
LABEL_COLUMNS = ("label", "class", "target")  # a column of these names (any case) holds labels


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
    path = Path(path)
    frame = _read_csv_frame(path)
    labels = _pop_label_column(frame, label_columns, path.name)
    return frame, TableSchema.infer(frame, column_types), labels


def _read_csv_frame(path: Path):
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{path.name}: cannot read it as CSV ({error})") from None
    if frame.empty:
        raise DataError(f"{path.name}: the file holds no rows")
    return frame


def _pop_label_column(frame, label_columns: Sequence[str], where: str):
    found = [c for c in frame.columns if str(c).lower() in label_columns]
    if len(found) > 1:
        raise DataError(f"{where}: several label columns ({', '.join(found)}); keep only one")
    return frame.pop(found[0]) if found else None


def take_condition_columns(frame, names: Sequence[str], where: str,
                           lines: Sequence[int] | None = None) -> tuple[Any, np.ndarray]:
    """The columns ``names`` of a DataFrame taken out (``--condition-columns``): ``(the rest of
    the frame, their values [N, C] float64)``. Refuses, naming the column, an unknown name
    (listing the table's columns), a column that is not numeric, empty cells and infinite
    values. ``lines``: the file line of each row, for messages (default: below one header)."""
    import pandas as pd

    columns = [str(c) for c in frame.columns]
    lines = list(range(2, 2 + len(frame))) if lines is None else list(lines)
    values = np.empty((len(frame), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        if name not in columns:
            raise DataError(f"{where}: no column '{name}' to condition on (--condition-columns); "
                            f"its columns are {', '.join(columns)}")
        if columns.count(name) > 1:
            raise DataError(f"{where}: several columns are named '{name}'; rename them")
        column = frame[frame.columns[columns.index(name)]]
        text = column.astype(str).str.strip() if column.dtype == object else None
        empty = column.isna().to_numpy() if text is None else \
            (column.isna() | (text == "")).to_numpy()
        if empty.any():
            count, line = int(empty.sum()), lines[int(np.flatnonzero(empty)[0])]
            raise DataError(f"{where}: condition column '{name}' has {count} empty "
                            f"cell{'s' if count > 1 else ''} (the first on line {line}); fill "
                            "them or drop those rows")
        numbers = pd.to_numeric(column, errors="coerce")
        not_numbers = np.ones(len(column), bool) if pd.api.types.is_bool_dtype(column.dtype) \
            else numbers.isna().to_numpy()
        if not_numbers.any():
            i = int(np.flatnonzero(not_numbers)[0])
            raise DataError(f"{where}: condition column '{name}' is not numeric (line "
                            f"{lines[i]}: {str(column.iloc[i])!r}); --condition-columns takes "
                            "numeric covariates")
        values[:, j] = numbers.to_numpy(dtype=np.float64)
        if not np.isfinite(values[:, j]).all():
            raise DataError(f"{where}: condition column '{name}' holds infinite values")
    rest = frame.drop(columns=[frame.columns[columns.index(n)] for n in names])
    if rest.shape[1] == 0:
        raise DataError(f"{where}: every column is a condition column; x needs columns too")
    return rest, values


def load_table_csv(path: Path, column_types: str | Mapping | None, *, val_fraction: float,
                   split_seed: int, condition_columns: Sequence[str] | None = None):
    """A CSV as a mixed-type table: a :class:`~vaekit.data.dataset.Dataset` of encoded rows
    (category codes, NaN for missing cells) with its schema in ``table``, split into train /
    validation / test with ``split_seed`` like every user file; the ``condition_columns``
    taken out first (their values in ``Dataset.conditions``), then a ``label``/``class``/
    ``target`` column becomes the labels (its values the class names)."""
    import torch

    from .arrays import held_out_size, split_indices
    from .dataset import Dataset

    frame, conditions = _read_csv_frame(path), None
    if condition_columns:
        declared = [n for n in parse_column_types(column_types) if str(n) in condition_columns]
        if declared:
            raise DataError(f"column '{declared[0]}' is a condition column (--condition-columns), "
                            "not a column of x; drop it from --column-types")
        frame, conditions = take_condition_columns(frame, condition_columns, path.name)
    labels = _pop_label_column(frame, LABEL_COLUMNS, path.name)
    schema = TableSchema.infer(frame, column_types)
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
    dataset = Dataset(path.name, x[0], x[1], x[2], y[0], y[1], y[2], value_kind="real",
                      is_image=False, class_names=class_names, table=schema)
    if conditions is not None:
        dataset.condition_columns = tuple(condition_columns)
        dataset.conditions = {split: torch.from_numpy(conditions[idx])
                              for split, idx in zip(("train", "val", "test"), parts)}
    return dataset
