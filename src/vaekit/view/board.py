"""Optional TensorBoard logging of a training run: every number of an epoch's ``metrics.jsonl``
record as a scalar, plus prior samples and reconstructions as image grids for image data.

``metrics.jsonl`` stays the source of truth; TensorBoard is a view of it. When
``torch.utils.tensorboard`` (which needs the ``tensorboard`` package, ``pip install
'vaekit[tensorboard]'``) cannot be imported, one warning line is printed and training goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

TENSORBOARD_DIR = "tensorboard"  # event files go to <run_dir>/tensorboard
NUM_IMAGES = 32


def scalar_tag(key: str) -> str:
    """``train_elbo`` -> ``train/elbo``, ``val_kl`` -> ``val/kl``; other keys under ``run/``."""
    for split in ("train", "val", "test"):
        if key.startswith(split + "_"):
            return f"{split}/{key[len(split) + 1:]}"
    return f"run/{key}"


class EpochBoard:
    """Writes one epoch at a time to ``<run_dir>/tensorboard``; does nothing when disabled or
    when TensorBoard is not installed. The writer is opened at the first epoch, so a Trainer
    that never trains leaves no event files."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True,
                 log: Callable[[str], None] = print) -> None:
        self.run_dir = Path(run_dir)
        self.writer = None
        self.enabled = enabled
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log("warning: --tensorboard needs the tensorboard package (pip install "
                    "'vaekit[tensorboard]'); continuing without it")
                self.enabled = False
            else:
                self._writer_cls = SummaryWriter

    def log_epoch(self, metrics: dict, model, test_x: torch.Tensor, is_image: bool) -> None:
        """Scalars of one ``metrics.jsonl`` record at step ``metrics["epoch"]``, and for image
        data grids of prior samples (fixed seed) and of test reconstructions."""
        if not self.enabled:
            return
        if self.writer is None:
            self.writer = self._writer_cls(log_dir=str(self.run_dir / TENSORBOARD_DIR))
        epoch = metrics["epoch"]
        for key, value in metrics.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(scalar_tag(key), value, epoch)
        if is_image:
            self._log_images(model, test_x, epoch)
        self.writer.flush()

    @torch.no_grad()
    def _log_images(self, model, test_x: torch.Tensor, epoch: int) -> None:
        from .images import make_grid
        from .pictures import reconstruction_grid

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        samples = model.to_unit(model.sample(NUM_IMAGES,
                                             generator=torch.Generator().manual_seed(0))).cpu()
        per_row = min(8, len(test_x))
        recon = reconstruction_grid(model, test_x[: 2 * per_row].to(device), rows=min(2, len(test_x) // per_row),
                                    per_row=per_row).cpu()
        model.train(was_training)
        for tag, images, nrow in (("samples", samples, 8), ("reconstructions", recon, per_row)):
            grid = make_grid(images, nrow=nrow)  # uint8 [H, W] or [H, W, 3]
            self.writer.add_image(tag, grid, epoch, dataformats="HW" if grid.ndim == 2 else "HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
