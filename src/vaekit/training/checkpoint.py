"""The training checkpoint (``checkpoint.safetensors``): everything needed to continue a run
exactly where it stopped, including the position within an epoch. Stored with
:mod:`vaekit.storage` (safetensors + JSON metadata + checksum; nothing is ever pickled)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..version import __version__
from ..config import RunConfig
from ..errors import CheckpointError
from ..storage import flatten_state, load_tensors, save_tensors, unflatten_state

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class EpochProgress:
    """Where the loop is inside the current epoch: batches consumed (taken or skipped), and the
    running sums of the ELBO terms over the examples of the steps taken, so that a checkpoint
    written mid-epoch resumes with the same epoch metrics as the uninterrupted run."""

    batch: int = 0
    seen: int = 0
    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(3))  # elbo, reconstruction, kl
    bad_in_a_row: int = 0  # consecutive skipped steps


@dataclass
class TrainingState:
    """The loop's counters and records besides the weights and the optimizer."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps
    skipped_steps: int = 0  # steps skipped for a non-finite loss or gradient
    progress: EpochProgress = field(default_factory=EpochProgress)
    history: list[dict] = field(default_factory=list)  # one metrics record per epoch
    # early stopping: the best validation bound so far, its epoch, epochs since it
    best_value: float = -math.inf
    best_epoch: int = 0
    epochs_since_best: int = 0


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    state: TrainingState, config: RunConfig, data: dict,
                    parts: dict[str, dict] | None = None) -> None:
    """Writes the checkpoint atomically: model and optimizer state, the global RNG, the
    counters, the history, the resolved config, the data description (``data``: see
    :class:`vaekit.run.DataInfo`) and further state dicts by name (``parts``: the learning-rate
    schedule, the weight average, the best weights; and the part "family", the model family's
    own training state, :meth:`vaekit.model.VAE.family_state_dict`, where it has one)."""
    family_state = getattr(model, "family_state_dict", lambda: None)()
    parts = {**(parts or {}), "family": family_state}
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
        "in_epoch_sums": state.progress.sums,
        "parts": {name: part for name, part in (parts or {}).items() if part is not None},
    }, "state", tensors)
    meta = {
        "config": config.model_dump(mode="json"),
        **data,
        "epoch": state.epoch,
        "step": state.step,
        "skipped_steps": state.skipped_steps,
        "in_epoch": {"batch": state.progress.batch, "seen": state.progress.seen,
                     "bad_in_a_row": state.progress.bad_in_a_row},
        "history": state.history,
        "best": {"value": state.best_value, "epoch": state.best_epoch,
                 "since": state.epochs_since_best},
        "versions": {"vaekit": __version__, "torch": torch.__version__},
        "state": skeleton,
    }
    save_tensors(path, tensors, meta)


def saved_config(path: Path) -> RunConfig:
    """The resolved config stored in the checkpoint at ``path``."""
    _, meta = load_tensors(path)
    try:
        return RunConfig.model_validate(meta["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its config is missing or invalid "
                              f"({' '.join(str(err).split())}); start a new run") from None


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    stateful: dict | None = None) -> tuple[TrainingState, dict[str, dict]]:
    """Loads weights, optimizer state and the global RNG from ``path`` into the given objects,
    and each saved part into the object of that name in ``stateful`` (``load_state_dict``;
    None entries skipped) and the part "family" into the model
    (:meth:`vaekit.model.VAE.load_family_state_dict`); returns the counters and records, and
    the parts by name."""
    tensors, meta = load_tensors(path)
    state = unflatten_state(meta["state"], tensors)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        parts = state.get("parts", {})
        if "family" in parts:
            model.load_family_state_dict(parts["family"])
        for name, target in (stateful or {}).items():
            if target is not None and name in parts:
                target.load_state_dict(parts[name])
        torch.set_rng_state(state["rng"]["torch"])
        position = meta.get("in_epoch", {})
        progress = EpochProgress(
            batch=int(position.get("batch", 0)), seen=int(position.get("seen", 0)),
            sums=state.get("in_epoch_sums", torch.zeros(3)).clone(),
            bad_in_a_row=int(position.get("bad_in_a_row", 0)))
        best = meta.get("best", {})
        return TrainingState(int(meta["epoch"]), int(meta["step"]),
                             int(meta.get("skipped_steps", 0)), progress,
                             list(meta.get("history", [])), float(best.get("value", -math.inf)),
                             int(best.get("epoch", 0)), int(best.get("since", 0))
                             ), parts
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: does not match the model "
                              f"({' '.join(str(err).split())}); start a new run") from None
