"""Callbacks: how the training loop reaches what watches it (TensorBoard, pictures, the report)
without importing them. A callback implements any of the hooks below; the loop calls them on
rank 0 only.

- ``on_epoch_end(trainer, metrics)``: after an epoch's record is written;
- ``on_fit_end(trainer, run)``: after the weights and results of a finished run are written,
  with the :class:`~vaekit.run.Run` built in memory (its test split already prepared).

:func:`default_callbacks` is what ``vaekit train`` uses; pass ``callbacks=[...]`` to
:class:`~vaekit.train.Trainer` for others (``[]``: weights and records only)."""

from __future__ import annotations

from typing import Protocol

from ..config import RunConfig


class Callback(Protocol):
    def on_epoch_end(self, trainer, metrics: dict) -> None: ...

    def on_fit_end(self, trainer, run) -> None: ...


def default_callbacks(config: RunConfig) -> list:
    """The viewers a run's config asks for: TensorBoard with ``train.tensorboard``; the pictures
    of an image run, and ``report.html`` with ``train.report``."""
    from ..view.outputs import RunOutputs, TensorBoardCallback

    callbacks: list = [RunOutputs(report=config.train.report)]
    if config.train.tensorboard:
        callbacks.append(TensorBoardCallback())
    return callbacks
