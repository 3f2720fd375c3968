"""The labels a conditional or semi-supervised model trains on, for the training loop: the
refusal when the data has none, the number of classes (into the resolved config), label
batches aligned with the loop's x batches, the labelled subset of a semi-supervised run
(``labelled.json`` in the run directory) and the loss and validation of such models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch

from ..conditional import (conditional_training_loss, evaluate_conditional, labels_or_refuse,
                           num_classes_of, one_hot)
from ..config import RunConfig, merge
from ..data import Dataset, TensorBatches
from ..errors import ConfigError
from ..semisupervised import (UNLABELLED, default_classification_weight,
                              evaluate_semi_supervised, labelled_subset, semi_supervised_loss)
from ..storage import atomic_write_bytes

LABELLED = "labelled.json"  # the labelled training examples of a semi-supervised run


class Conditioning:
    """Labels for the loop: ``Conditioning(config, dataset)`` refuses data without labels and
    fills ``model.num_classes`` (``.config`` is the completed config)."""

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        what = "--semi-supervised" if config.model.semi_supervised else "--conditional"
        labels = labels_or_refuse(dataset.train_labels, what)
        if config.train.compile:
            raise ConfigError(f"{what} does not support --compile yet")
        num_classes = num_classes_of(dataset.class_names, dataset.train_labels,
                                     dataset.val_labels, dataset.test_labels)
        if config.model.num_classes not in (None, num_classes):
            raise ConfigError(f"model.num_classes is {config.model.num_classes} but the data set "
                              f"has {num_classes} classes")
        self.semi_supervised = config.model.semi_supervised
        self.labelled = None
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
        self.true_train_labels = labels.long()
        self.train_labels = train_labels
        self.batches: TensorBatches | None = None
        self.labelled_batches: TensorBatches | None = None

    @property
    def loss_fn(self):
        if self.semi_supervised:
            return partial(semi_supervised_loss, classification_weight=self.classification_weight)
        return conditional_training_loss

    def joined(self, model, x: torch.Tensor) -> torch.Tensor:
        """[x, y] of the training examples (what VampPrior pseudo-inputs start from)."""
        y = one_hot(self.true_train_labels, self.num_classes).to(x.device)
        return model.join(x, y)

    def batch_like(self, batches: TensorBatches, device: torch.device) -> None:
        """Label batches with the permutation of ``batches`` (same seed and length); for a
        semi-supervised run also batches of the labelled examples."""
        self.batches = TensorBatches(self.train_labels.to(device), batches.batch_size,
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
                torch.cat([y, self.true_train_labels.to(y.device).index_select(0, index)]))

    def evaluate(self, model, x: torch.Tensor, labels: torch.Tensor | None, *,
                 batch_size: int) -> dict:
        labels = labels_or_refuse(labels, "evaluating a conditional model")
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
                  "labels": self.true_train_labels[self.labelled].tolist()}
        atomic_write_bytes(Path(run_dir) / LABELLED, (json.dumps(record) + "\n").encode())
