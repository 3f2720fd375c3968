"""Callbacks: how the training loop reaches what watches it (TensorBoard, pictures, the report)
without importing them. A callback implements any of the hooks below; the loop calls them on
rank 0 only.

- ``on_epoch_end(trainer, metrics)``: after an epoch's record is written;
- ``on_fit_end(trainer, run)``: after the weights and results of a finished run are written,
  with the :class:`~vaekit.run.Run` built in memory (its test split already prepared).

:func:`default_callbacks` is what ``vaekit train`` uses; pass ``callbacks=[...]`` to
:class:`~vaekit.train.Trainer` for others (``[]``: weights and records only)."""

from __future__ import annotations

from typing import Callable, Protocol

from ..config import RunConfig


class Callback(Protocol):
    def on_epoch_end(self, trainer, metrics: dict) -> None: ...

    def on_fit_end(self, trainer, run) -> None: ...


# The viewers' factories, config -> callbacks. The view layer registers its own
# (vaekit.view.outputs, which the package imports), so training never imports the viewers.
VIEWERS: list[Callable[[RunConfig], list]] = []


def default_callbacks(config: RunConfig) -> list:
    """The viewers a run's config asks for, from every registered factory (:data:`VIEWERS`):
    TensorBoard with ``train.tensorboard``; the pictures of an image run, and ``report.html``
    with ``train.report``."""
    return [callback for factory in VIEWERS for callback in factory(config)]
