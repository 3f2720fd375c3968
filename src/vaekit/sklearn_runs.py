"""A fitted :class:`vaekit.sklearn.VariationalAutoencoder` as a vaekit run directory: the
resolved config, the model's weights as safetensors, the training history, and
``estimator.json`` (the estimator's parameters, the table's schema, the seed of its estimates
and the features it was fitted on). Nothing is pickled: :func:`vaekit.load` and
``vaekit evaluate`` read the directory like any run's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import merge, save_config
from .data.tabular import TableSchema

ESTIMATOR_FILE = "estimator.json"  # the estimator's parameters and table schema in a run directory


def save_estimator(estimator, path) -> Path:
    """Writes the fitted ``estimator`` as the run directory ``path``; returns the directory."""
    from .run import CONFIG, METRICS, WEIGHTS, DataInfo, save_weights, write_json

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    value_kind = "real" if estimator._is_table else "unit"
    config, schema = estimator.config_, estimator.schema_
    if schema.frame and estimator._is_table and \
            not any(set(",=") & set(n) for n in schema.names):
        # every column's type, so `vaekit evaluate RUN --data table.csv` reads a CSV of the
        # same columns as this table
        types = ",".join(f"{n}={k}" for n, k in zip(schema.names, schema.kinds))
        config = merge(config, {"data": {"column_types": types}})
    save_config(config, path / CONFIG)
    save_weights(path / WEIGHTS, estimator.model_, config,
                 DataInfo("sklearn", estimator.model_.data_shape, value_kind, False, None,
                          tuple(schema.names) if schema.frame else None))
    params = estimator.get_params()
    params["hidden"] = list(estimator.config_.model.hidden)
    write_json(path / ESTIMATOR_FILE, {
        "params": params, "schema": schema.to_json(), "seed": estimator.seed_,
        "n_features_in": estimator.n_features_in_,
        "feature_names_in": (list(map(str, estimator.feature_names_in_))
                             if hasattr(estimator, "feature_names_in_") else None)})
    (path / METRICS).write_text("".join(
        json.dumps({"epoch": i + 1, **h}) + "\n" for i, h in enumerate(estimator.history_)))
    return path


def load_estimator(cls, path, device: str = "cpu"):
    """The fitted estimator of class ``cls`` that :func:`save_estimator` wrote in ``path``, its
    model on ``device``; ValueError for a directory it did not write."""
    from .run import load as load_run

    path = Path(path)
    try:
        stored = json.loads((path / ESTIMATOR_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a directory written by VariationalAutoencoder.save "
                         f"({err})") from None
    run = load_run(path, device=device)
    params = dict(stored["params"])
    params["hidden"] = tuple(params["hidden"])
    estimator = cls(**params)
    estimator.model_, estimator.config_ = run.model, run.config
    estimator.schema_ = TableSchema.from_json(stored["schema"])
    estimator.seed_ = int(stored["seed"])
    estimator.history_ = run.history
    estimator.n_features_in_ = int(stored["n_features_in"])
    if stored.get("feature_names_in") is not None:
        estimator.feature_names_in_ = np.asarray(stored["feature_names_in"], dtype=object)
    return estimator
