"""The tables :class:`vaekit.sklearn.VariationalAutoencoder` reads and writes: a pandas
DataFrame (any column types, missing values) or a 2-D array as float rows ``[N, D]`` for the
model (category codes, NaN for a missing entry; :class:`~vaekit.data.tabular.TableSchema`),
with scikit-learn's checks of the number and names of features, and filled values written back
into a copy of the caller's table."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import validate_data

from .data.tabular import TableSchema
from .errors import VaekitError


def is_frame(X) -> bool:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False
    return isinstance(X, pd.DataFrame)


def validated_rows(estimator, X, *, reset: bool) -> torch.Tensor:
    """X (DataFrame or 2-D array) -> float32 rows ``[N, D]`` (NaN: missing), checking the
    number and names of features as scikit-learn does; with ``reset`` (fitting) the table's
    schema is read from X into ``estimator.schema_``. ValueError for a bad X."""
    frame = is_frame(X)
    if frame:
        validate_data(estimator, X, skip_check_array=True, reset=reset)
        if len(X) == 0:
            raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a "
                             "minimum of 1 is required.")
        table = X
    else:
        table = validate_data(estimator, X, reset=reset, dtype=np.float64,
                              ensure_all_finite="allow-nan" if estimator._is_table else True)
    try:
        if reset:
            schema = TableSchema.infer(table, estimator.column_types)
            if not estimator._is_table and not schema.is_numeric:
                raise ValueError(f"likelihood '{estimator.likelihood}' models numeric arrays; "
                                 "use likelihood='auto' for typed columns")
            estimator.schema_ = schema
        if estimator.schema_.is_numeric and not frame:
            rows = np.asarray(table, dtype=np.float32)
            if np.isinf(rows).any():
                raise ValueError("Input X contains infinity or a value too large for float32.")
        else:
            rows = estimator.schema_.encode(table)
    except VaekitError as err:
        raise ValueError(str(err)) from None
    return torch.from_numpy(np.ascontiguousarray(rows))


def fill_missing(X, rows: torch.Tensor, filled: torch.Tensor, schema: TableSchema):
    """A copy of the caller's table ``X`` whose missing entries (NaN in ``rows [N, D]``) hold
    the values of ``filled [N, D]`` decoded by ``schema`` (categories as their labels); an
    integer column of a DataFrame that receives values becomes float."""
    missing = torch.isnan(rows).numpy()
    decoded = schema.decode(filled.double().numpy())
    if is_frame(X):
        out = X.copy()
        for j, name in enumerate(X.columns):
            if missing[:, j].any():
                column = decoded.iloc[:, j] if is_frame(decoded) else decoded[:, j]
                values = np.asarray(column)[missing[:, j]]
                if out[name].dtype.kind in "biu":
                    out[name] = out[name].astype(float)
                out.loc[missing[:, j], name] = values
        return out
    out = np.array(X, dtype=np.float64, copy=True)
    decoded = np.asarray(decoded, dtype=np.float64)
    out[missing] = decoded[missing]
    return out
