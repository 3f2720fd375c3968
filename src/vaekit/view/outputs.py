"""What a finished run leaves for people to look at, as training callbacks
(:mod:`vaekit.training.callbacks`): the pictures and ``report.html`` (:class:`RunOutputs`), and
TensorBoard logs while training (:class:`TensorBoardCallback`)."""

from __future__ import annotations

from ..training.callbacks import VIEWERS
from .board import EpochBoard
from .pictures import Pictures


class RunOutputs:
    """At the end of training: the pictures of an image run (computed once, saved as PNG and
    embedded in the report) and, with ``report``, ``report.html``."""

    def __init__(self, report: bool = True) -> None:
        self.report = report

    def on_fit_end(self, trainer, run) -> None:
        x, labels = run.split("test")
        pictures = None
        if run.data.is_image and len(x) and run.model.condition_kind == "labels":
            from .conditional_pictures import ConditionalPictures

            pictures = ConditionalPictures.of(run.model, x, labels, seed=run.config.train.seed)
            pictures.save(run.dir)
        elif run.data.is_image and len(x):
            pictures = Pictures.of(run.model, x, seed=run.config.train.seed)
            pictures.save(run.dir)
        if self.report:
            from .report import write_report

            write_report(run, pictures=pictures)


class TensorBoardCallback:
    """Every epoch's record as TensorBoard scalars, with image grids for image data (see
    :class:`~vaekit.view.board.EpochBoard`)."""

    def __init__(self) -> None:
        self.board: EpochBoard | None = None

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        if self.board is None:
            self.board = EpochBoard(trainer.run_dir, log=trainer.log)
        self.board.log_epoch(metrics, trainer.model, trainer.data.test, trainer.dataset.is_image)

    def on_fit_end(self, trainer, run) -> None:
        if self.board is not None:
            self.board.close()


def default_viewers(config) -> list:
    """The callbacks of the run's config: the pictures and (``train.report``) the report, and
    TensorBoard with ``train.tensorboard`` (:func:`vaekit.training.callbacks.default_callbacks`)."""
    callbacks: list = [RunOutputs(report=config.train.report)]
    if config.train.tensorboard:
        callbacks.append(TensorBoardCallback())
    return callbacks


VIEWERS.append(default_viewers)
