"""What a run is made of before it trains: its data set, its config resolved from the data set
with the condition y its model family needs (:mod:`vaekit.training.conditioning`), and the
model's statistics of the training data (standardization, a table's column scaling, a
VampPrior's starting pseudo-inputs)."""

from __future__ import annotations

import torch

from ..config import RunConfig, merge, resolve
from ..data import Dataset, dataset_defaults, load_dataset
from ..families import FAMILIES
from ..run import DataInfo
from .conditioning import CONDITIONS, Condition
from .launch import describe_batch


def load_run_dataset(config: RunConfig) -> Dataset:
    """The data set of ``config.data``, split as the run splits it."""
    data = config.data
    return load_dataset(data.name, data.data_dir, val_fraction=data.val_fraction,
                        split_seed=data.split_seed, download=data.download,
                        column_types=data.column_types, condition_columns=data.condition_columns)


def resolved_run(config: RunConfig, dataset: Dataset) -> tuple[RunConfig, Condition]:
    """``config`` with every ``auto`` filled from ``dataset`` (a table's column types, the
    likelihood, sizes, epochs: :func:`vaekit.config.resolve`) and completed by the condition its
    model family needs (the number of classes, the covariates' statistics), and that condition
    (:data:`vaekit.training.conditioning.CONDITIONS`)."""
    table = dataset.table
    if table is not None and config.model.columns is None:  # the table's column types
        config = merge(config, {"model": {"columns": list(table.column_specs)}})
    config = resolve(config, defaults=dataset_defaults(dataset.name),
                     value_kind=dataset.value_kind, levels=dataset.levels,
                     name=f"'{dataset.name}'")
    kind = FAMILIES[config.model.family_name].condition_kind_of(config.model, config.data)
    condition = CONDITIONS[kind](config, dataset)
    return condition.config, condition


def fit_to_training_data(model, train_x: torch.Tensor, cfg, condition: Condition) -> None:
    """The model's statistics of the training examples ``train_x`` (on the model's device):
    the per-dimension standardization (``cfg.standardize``), a table's column scaling and, with
    ``cfg.vamp_init_from_data``, a VampPrior's pseudo-inputs (a conditional model's hold
    [x, y]); then what the model family's loss needs of the run
    (:meth:`vaekit.model.VAE.prepare_training`: the train config's options, the split's size)."""
    if cfg.standardize:
        loc, scale = train_x.mean(0), train_x.std(0)
        # constant columns keep their values: scale 1 instead of a division by zero
        model.set_data_scaling(loc, torch.where(scale > 1e-6, scale, torch.ones_like(scale)))
    for module in model.modules():  # a table's column scaling (vaekit.tables)
        if hasattr(module, "fit_scaling"):
            module.fit_scaling(train_x)
    prior = getattr(model.prior, "top", model.prior)  # several layers: the top
    if cfg.vamp_init_from_data and hasattr(prior, "init_from_data"):
        prior.init_from_data(condition.pseudo_input_data(model, train_x))
    model.prepare_training(train_x, condition.config.train)


def data_info(config: RunConfig, dataset: Dataset) -> DataInfo:
    """What a run's files record of its data (name, shape, value kind, class and column names)."""
    table = dataset.table
    return DataInfo(config.data.name, dataset.data_shape, dataset.value_kind, dataset.is_image,
                    dataset.class_names, tuple(table.names) if table is not None else None)


def describe_run(config: RunConfig, dataset: Dataset, device: torch.device, world_size: int, *,
                 resumed: bool) -> list[str]:
    """The lines a run logs as it starts: the data and model (not when it resumes), the batch,
    learning rate and precision."""
    tc, lines = config.train, []
    if not resumed:
        lines.append(f"training on {dataset.name} {tuple(dataset.data_shape)}: "
                     f"{len(dataset.train)} train / {len(dataset.val)} val / {len(dataset.test)} "
                     f"test, likelihood {config.model.likelihood}, binarize "
                     f"{config.data.binarize}, device {device}")
    lines.append(describe_batch(tc.batch_size, world_size, tc.lr)
                 + (f", precision {tc.precision}" if tc.precision != "fp32" else "")
                 + (", compiled" if tc.compile else ""))
    return lines
