"""What the batches of a run carry beside x: the condition y that a model family declares it
needs (:meth:`vaekit.model.VAE.condition_kind_of`), built from the data set for the training
loop. One class per kind, one registry entry each (:data:`CONDITIONS`):

- none: a model without a condition (the batches are x alone);
- ``labels``: the class labels (refused when the data has none; the number of classes goes
  into the resolved config);
- ``covariates``: the columns of ``--condition-columns``, standardized with the training
  split's mean and std (which go into the resolved config);
- ``partial-labels``: labels for a balanced labelled subset, ``UNLABELLED`` for the rest, and a
  batch of the labelled examples appended to every training batch (M2; ``labelled.json``).

The loop asks each of them the same things: ``config`` (completed), ``y`` per split,
``batches`` (x with its y, shuffled together), ``with_extra`` (what a training batch adds),
``loss_options`` (extra keywords of the family's loss), ``pseudo_input_data`` and ``write``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..conditional import labels_or_refuse, num_classes_of, standardize_covariates
from ..config import RunConfig, merge
from ..data import SPLITS, Dataset, TensorBatches
from ..errors import ConfigError, DataError
from ..semisupervised import UNLABELLED, default_classification_weight, labelled_subset
from ..storage import atomic_write_bytes

LABELLED = "labelled.json"  # the labelled training examples of a semi-supervised run


class Condition:
    """No condition: the batches are x alone (``y`` is None in every split)."""

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        self.config = config
        self.y: dict[str, torch.Tensor | None] = {split: None for split in SPLITS}
        self.train_y: torch.Tensor | None = None  # y of the training batches
        self.loss_options: dict = {}  # keywords of the family's training_loss beyond the objective's

    def batches(self, x: torch.Tensor, batch_size: int, *, seed: int, rank: int,
                world_size: int) -> TensorBatches:
        """The training batches: ``x`` (the batch source on its device) with its y."""
        y = None if self.train_y is None else self.train_y.to(x.device)
        return TensorBatches(x, batch_size, seed=seed, rank=rank, world_size=world_size, y=y)

    def with_extra(self, batches: TensorBatches, x: torch.Tensor, y: torch.Tensor | None,
                   step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch ``(x, y)`` a training step sees (the one sliced from ``batches``)."""
        return x, y

    def pseudo_input_data(self, model, x: torch.Tensor) -> torch.Tensor:
        """What a VampPrior's pseudo-inputs start from: the training examples as the encoder
        reads them."""
        return x

    def write(self, run_dir: Path) -> None:
        """Files of the run's condition (none here)."""


class _Conditioned(Condition):
    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        if config.train.compile:
            raise ConfigError(f"--{config.model.family_name} does not support --compile yet")

    def pseudo_input_data(self, model, x: torch.Tensor) -> torch.Tensor:
        """[x, y] of the training examples (a conditional model's pseudo-inputs hold both)."""
        return model.join(x, model.condition(self.y["train"]).to(x.device))


class Labels(_Conditioned):
    """The class labels: ``y[split]`` ``[N]``; ``model.num_classes`` filled in."""

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        labels = labels_or_refuse(dataset.train_labels, f"--{config.model.family_name}")
        num_classes = num_classes_of(dataset.class_names, dataset.train_labels,
                                     dataset.val_labels, dataset.test_labels)
        if config.model.num_classes not in (None, num_classes):
            raise ConfigError(f"model.num_classes is {config.model.num_classes} but the data set "
                              f"has {num_classes} classes")
        self.config = merge(config, {"model": {"num_classes": num_classes}})
        self.num_classes = num_classes
        self.y = {split: dataset.split(split)[1] for split in SPLITS}
        self.y["train"] = self.train_y = labels.long()


class Covariates(_Conditioned):
    """The covariates of ``--condition-columns``, standardized: ``y[split]`` ``[N, C]``; the
    config completed with their mean, std and ``model.condition_dim``. A column that is
    constant over the training split is refused: it cannot be standardized."""

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        names = config.data.condition_columns
        if dataset.conditions is None or tuple(dataset.condition_columns or ()) != tuple(names):
            raise DataError(f"--condition-columns {','.join(names)}: the data set "
                            f"'{dataset.name}' was loaded without those columns; pass a .csv "
                            "and load it with them")
        mean, std = config.data.condition_mean, config.data.condition_std
        if mean is None:  # (a resumed run has them in its config)
            train = dataset.conditions["train"]  # [N, C] float64
            mean, std = train.mean(0), train.std(0)  # unbiased, as the standardization of x
            constant = [n for n, s in zip(names, std.tolist()) if not s > 0]
            if constant:
                raise DataError(f"condition column '{constant[0]}' is constant over the "
                                "training split (std 0), so it cannot be standardized and tells "
                                "the examples nothing; drop it from --condition-columns")
            mean, std = tuple(mean.tolist()), tuple(std.tolist())
        self.config = merge(config, {"data": {"condition_mean": mean, "condition_std": std},
                                     "model": {"condition_dim": len(names)}})
        self.y = {split: standardize_covariates(dataset.conditions[split], mean, std)
                  for split in SPLITS}
        self.train_y = self.y["train"]


class PartialLabels(Labels):
    """Labels for ``train.labels_per_class`` examples of each class (a balanced subset drawn
    with the run's seed), ``UNLABELLED`` for the others; every training batch is followed by a
    batch of the labelled examples (M2, Kingma et al. 2014)."""

    def __init__(self, config: RunConfig, dataset: Dataset) -> None:
        super().__init__(config, dataset)
        tc, labels = self.config.train, self.y["train"]
        self.labelled = labelled_subset(labels, tc.labels_per_class, self.num_classes, tc.seed)
        self.train_y = torch.full_like(labels, UNLABELLED)
        self.train_y[self.labelled] = labels[self.labelled]
        weight = tc.classification_weight
        if weight is None:
            weight = default_classification_weight(len(labels), len(self.labelled))
        self.loss_options = {"classification_weight": weight}
        self.labelled_batches: TensorBatches | None = None

    def batches(self, x: torch.Tensor, batch_size: int, *, seed: int, rank: int,
                world_size: int) -> TensorBatches:
        self.labelled_batches = TensorBatches(
            self.labelled.to(x.device), min(len(self.labelled), batch_size), seed=seed + 1,
            rank=rank, world_size=world_size)
        return super().batches(x, batch_size, seed=seed, rank=rank, world_size=world_size)

    def with_extra(self, batches: TensorBatches, x: torch.Tensor, y: torch.Tensor | None,
                   step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch followed by batch ``step`` of the endless sequence of labelled batches (a
        function of the step, so resuming is exact)."""
        per_epoch = len(self.labelled_batches)
        index = next(self.labelled_batches.iterate(step // per_epoch, step % per_epoch,
                                                   step % per_epoch + 1))
        true_y = self.y["train"].to(y.device).index_select(0, index)
        return torch.cat([x, batches.x.index_select(0, index)]), torch.cat([y, true_y])

    def write(self, run_dir: Path) -> None:
        """``labelled.json``: which training examples had labels."""
        record = {"split": "train", "labels_per_class": len(self.labelled) // self.num_classes,
                  "seed": self.config.train.seed,
                  "classification_weight": self.loss_options["classification_weight"],
                  "indices": self.labelled.tolist(),
                  "labels": self.y["train"][self.labelled].tolist()}
        atomic_write_bytes(Path(run_dir) / LABELLED, (json.dumps(record) + "\n").encode())


# what a family's batches carry (VAE.condition_kind_of) -> how the loop builds it
CONDITIONS: dict[str | None, type[Condition]] = {
    None: Condition,
    "labels": Labels,
    "covariates": Covariates,
    "partial-labels": PartialLabels,
}
