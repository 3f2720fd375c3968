"""The pictures of a conditional image run: samples of every class (one row per class) and the
style-transfer grid (rows: test examples, each encoded with its own label; columns: the example
itself, then its code decoded as every class). Saved as PNG files and shown in the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..conditional import ConditionalVAE, conditional_prior_label
from ..model import posterior_mean
from .images import save_grid

SAMPLES_PER_CLASS = 8
STYLE_ROWS = 8  # test examples in the style-transfer grid


@torch.no_grad()
def class_samples(model: ConditionalVAE, per_class: int = SAMPLES_PER_CLASS, seed: int = 0
                  ) -> torch.Tensor:
    """E[x | z, y] for ``per_class`` draws z ~ p(z|y) of each class y, class by class."""
    y = torch.arange(model.num_classes).repeat_interleave(per_class)
    return model.sample(len(y), y=y, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def style_transfer(model: ConditionalVAE, x: torch.Tensor, labels: torch.Tensor,
                   rows: int = STYLE_ROWS) -> torch.Tensor:
    """Row r: test example x_r, then E[x | z_r, y = c] for c = 0..C-1, z_r = E_q[z | x_r, y_r]:
    ``[rows * (C + 1), *data_shape]``."""
    x, labels = x[:rows], labels[:rows]
    z = posterior_mean(model.encode(x, labels))  # [R, L]
    out = []
    for r in range(len(x)):
        y = torch.arange(model.num_classes)
        decoded = model.decode(z[r].expand(model.num_classes, -1), y).mean
        out += [x[r : r + 1], decoded]
    return torch.cat(out)


@dataclass
class ConditionalPictures:
    samples: torch.Tensor  # SAMPLES_PER_CLASS per class, class by class
    style_transfer: torch.Tensor  # rows of (input, C decodes)
    num_classes: int

    @classmethod
    @torch.no_grad()
    def of(cls, model: ConditionalVAE, x: torch.Tensor, labels: torch.Tensor, seed: int = 0
           ) -> ConditionalPictures:
        model.eval()
        device = next(model.parameters()).device
        return cls(class_samples(model, seed=seed).cpu(),
                   style_transfer(model, x.to(device), labels).cpu(), model.num_classes)

    def save(self, run_dir: str | Path) -> None:
        """``samples.png`` (a row per class) and ``style_transfer.png`` in ``run_dir``."""
        run_dir = Path(run_dir)
        save_grid(self.samples, run_dir / "samples.png", nrow=SAMPLES_PER_CLASS)
        save_grid(self.style_transfer, run_dir / "style_transfer.png", nrow=self.num_classes + 1)


def conditional_sections(model: ConditionalVAE, pictures: ConditionalPictures, class_names,
                         section, img, fig) -> list:
    """The report's sections of a conditional image run (``section``, ``img``, ``fig``: the
    report's HTML helpers)."""
    from .images import grid_png
    from .plots import labelled_grid

    names = list(class_names or []) or [str(c) for c in range(model.num_classes)]
    figure = labelled_grid(pictures.samples, SAMPLES_PER_CLASS, row_labels=names)
    what = ("p(z|y) learned per class" if conditional_prior_label(model) else "p(z)")
    sections = [section("class-samples", "Samples per class", fig(figure, "samples per class"),
                        f"Each row: E[x | z, y] for {SAMPLES_PER_CLASS} draws z ~ {what} with the "
                        "row's class y.")]
    rows = len(pictures.style_transfer) // (model.num_classes + 1)
    figure = labelled_grid(pictures.style_transfer, model.num_classes + 1,
                           col_labels=["input", *names], cell_inches=0.4)
    sections.append(section("style-transfer", "Style transfer", fig(figure, "style transfer"),
                            f"Each row: a test example (left), encoded with its own label, "
                            f"z = E_q[z | x, y], then decoded with every class: the same style "
                            f"drawn as each class ({rows} test examples)."))
    return sections
