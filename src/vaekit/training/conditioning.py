"""The condition y a conditional or semi-supervised model trains on, for the training loop:
the class labels (the refusal when the data has none, the number of classes into the resolved
config) or the covariates of ``--condition-columns`` (standardized with the training split's
mean and std, which go into the resolved config), y batches aligned with the loop's x batches,
the labelled subset of a semi-supervised run (``labelled.json`` in the run directory) and the
loss and validation of such models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch

from ..conditional import (conditional_training_loss, evaluate_conditional, labels_or_refuse,
                           num_classes_of, standardize_covariates)
from ..config import RunConfig, merge
from ..data import SPLITS, Dataset, TensorBatches
from ..errors import ConfigError, DataError
from ..semisupervised import (UNLABELLED, default_classification_weight,
                              evaluate_semi_supervised, labelled_subset, semi_supervised_loss)
from ..storage import atomic_write_bytes

LABELLED = "labelled.json"  # the labelled training examples of a semi-supervised run


class Conditioning:
    """y for the loop: ``Conditioning(config, dataset)`` refuses data without labels and fills
    ``model.num_classes``, or with ``data.condition_columns`` standardizes the covariates and
    fills ``model.condition_dim``, ``data.condition_mean`` and ``data.condition_std`` (``.config``
    is the completed config). ``.y[split]``: what the model is conditioned on in each split,
    labels ``[N]`` or standardized covariates ``[N, C]``."""

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        what = "--semi-supervised" if config.model.semi_supervised else "--conditional"
        if config.train.compile:
            raise ConfigError(f"{what} does not support --compile yet")
        self.semi_supervised = config.model.semi_supervised
        self.labelled = None
        self.classification_weight = None
        self.num_classes = None
        self.batches: TensorBatches | None = None
        self.labelled_batches: TensorBatches | None = None
        if config.data.condition_columns:
            self.config, self.y = standardized_covariates(config, dataset)
            self.true_train_y = self.train_y = self.y["train"]
            return
        labels = labels_or_refuse(dataset.train_labels, what)
        num_classes = num_classes_of(dataset.class_names, dataset.train_labels,
                                     dataset.val_labels, dataset.test_labels)
        if config.model.num_classes not in (None, num_classes):
            raise ConfigError(f"model.num_classes is {config.model.num_classes} but the data set "
                              f"has {num_classes} classes")
        train_labels = labels.long()
        weight = None
        if self.semi_supervised:
            tc = config.train
            self.labelled = labelled_subset(train_labels, tc.labels_per_class, num_classes,
                                            tc.seed)
            masked = torch.full_like(train_labels, UNLABELLED)
            masked[self.labelled] = train_labels[self.labelled]
            train_labels = masked
            weight = tc.classification_weight
            if weight is None:
                weight = default_classification_weight(len(labels), len(self.labelled))
        self.classification_weight = weight
        self.config = merge(config, {"model": {"num_classes": num_classes}})
        self.num_classes = num_classes
        self.y = {split: dataset.split(split)[1] for split in SPLITS}
        self.true_train_y = labels.long()
        self.train_y = train_labels  # (semi-supervised: UNLABELLED but for the labelled subset)

    @property
    def loss_fn(self):
        if self.semi_supervised:
            return partial(semi_supervised_loss, classification_weight=self.classification_weight)
        return conditional_training_loss

    def joined(self, model, x: torch.Tensor) -> torch.Tensor:
        """[x, y] of the training examples (what VampPrior pseudo-inputs start from)."""
        y = model.condition(self.true_train_y).to(x.device)
        return model.join(x, y)

    def batch_like(self, batches: TensorBatches, device: torch.device) -> None:
        """y batches with the permutation of ``batches`` (same seed and length); for a
        semi-supervised run also batches of the labelled examples."""
        self.batches = TensorBatches(self.train_y.to(device), batches.batch_size,
                                     seed=batches.seed, rank=batches.rank,
                                     world_size=batches.world_size)
        self.x = batches.x
        if self.labelled is not None:
            self.labelled_batches = TensorBatches(
                self.labelled.to(device), min(len(self.labelled), batches.batch_size),
                seed=batches.seed + 1, rank=batches.rank, world_size=batches.world_size)

    def iterate(self, epoch: int, start: int, stop: int) -> Iterator[torch.Tensor]:
        return self.batches.iterate(epoch, start, stop)

    def with_labelled(self, x: torch.Tensor, y: torch.Tensor, step: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch ``(x, y)``; semi-supervised: followed by batch ``step`` of the endless
        sequence of labelled batches (a function of the step, so resuming is exact)."""
        if self.labelled_batches is None:
            return x, y
        per_epoch = len(self.labelled_batches)
        index = next(self.labelled_batches.iterate(step // per_epoch, step % per_epoch,
                                                   step % per_epoch + 1))
        return (torch.cat([x, self.x.index_select(0, index)]),
                torch.cat([y, self.true_train_y.to(y.device).index_select(0, index)]))

    def evaluate(self, model, x: torch.Tensor, y: torch.Tensor | None, *,
                 batch_size: int) -> dict:
        """The conditional ELBO of ``x`` given ``y`` (labels or covariates, as in ``.y``)."""
        if self.num_classes is None:
            return evaluate_conditional(model, x, y, batch_size=batch_size)
        labels = labels_or_refuse(y, "evaluating a conditional model")
        if self.semi_supervised:
            return evaluate_semi_supervised(model, x, labels.long(), batch_size=batch_size)
        return evaluate_conditional(model, x, labels.long(), batch_size=batch_size)

    def write(self, run_dir: Path) -> None:
        """``labelled.json`` of a semi-supervised run: which training examples had labels."""
        if self.labelled is None:
            return
        record = {"split": "train", "labels_per_class": len(self.labelled) // self.num_classes,
                  "seed": self.config.train.seed, "classification_weight": self.classification_weight,
                  "indices": self.labelled.tolist(),
                  "labels": self.true_train_y[self.labelled].tolist()}
        atomic_write_bytes(Path(run_dir) / LABELLED, (json.dumps(record) + "\n").encode())


def standardized_covariates(config: RunConfig, dataset: Dataset
                            ) -> tuple[RunConfig, dict[str, torch.Tensor]]:
    """The covariates y of ``--condition-columns`` for every split, (value - mean) / std with
    the training split's mean and standard deviation (those of the config when it has them: a
    resumed run), and the config completed with them and ``model.condition_dim``. A column
    that is constant over the training split is refused: it cannot be standardized."""
    names = config.data.condition_columns
    if dataset.conditions is None or tuple(dataset.condition_columns or ()) != tuple(names):
        raise DataError(f"--condition-columns {','.join(names)}: the data set '{dataset.name}' "
                        "was loaded without those columns; pass a .csv and load it with them")
    mean, std = config.data.condition_mean, config.data.condition_std
    if mean is None:
        train = dataset.conditions["train"]  # [N, C] float64
        mean, std = train.mean(0), train.std(0)  # unbiased, as the standardization of x
        constant = [n for n, s in zip(names, std.tolist()) if not s > 0]
        if constant:
            raise DataError(f"condition column '{constant[0]}' is constant over the training "
                            "split (std 0), so it cannot be standardized and tells the examples "
                            "nothing; drop it from --condition-columns")
        mean, std = tuple(mean.tolist()), tuple(std.tolist())
    config = merge(config, {"data": {"condition_mean": mean, "condition_std": std},
                            "model": {"condition_dim": len(names)}})
    y = {split: standardize_covariates(dataset.conditions[split], mean, std) for split in SPLITS}
    return config, y
