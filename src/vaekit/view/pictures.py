"""The pictures of an image run: prior samples, inputs above their reconstructions, and
interpolations between test codes. Computed once at the end of training (:class:`Pictures`),
saved as PNG files and embedded in the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..latents import slerp
from ..model import VAE, posterior_mean
from .images import save_grid

NUM_SAMPLES = 64
GRID_WIDTH = 8  # images per row of the samples and reconstructions grids
INTERPOLATION_STEPS = 10
MAX_PAIRS = 6
MAX_ROWS = 4  # pairs of rows (inputs, reconstructions)


@torch.no_grad()
def reconstruction_grid(model: VAE, x: torch.Tensor, rows: int = 4, per_row: int = 8) -> torch.Tensor:
    """Inputs above their reconstructions: ``rows`` pairs of rows of ``per_row`` images, as grey
    levels in [0, 1] (:meth:`VAE.to_unit`)."""
    x = x[: rows * per_row]
    recon = model.to_unit(model.reconstruct(x))
    x = model.to_unit(x)
    pairs = []
    for r in range(rows):
        pairs += [x[r * per_row : (r + 1) * per_row], recon[r * per_row : (r + 1) * per_row]]
    return torch.cat(pairs)


@torch.no_grad()
def interpolation_grid(model: VAE, x: torch.Tensor, pairs: int = 6, steps: int = 10,
                       method=slerp) -> torch.Tensor:
    """Each row decodes ``steps`` codes between the posterior means of two test examples (of
    the top stochastic layer; the layers below at their generative means)."""
    z = model.codes(x[: 2 * pairs])
    rows = [model.to_unit(model.decode_codes(method(z[2 * i], z[2 * i + 1], steps)).mean)
            for i in range(len(z) // 2)]
    return torch.cat(rows)


@dataclass
class Pictures:
    """The three grids of an image run, as image tensors ``[N, C, H, W]`` on the CPU."""

    samples: torch.Tensor  # NUM_SAMPLES prior samples, E[x|z]
    reconstructions: torch.Tensor  # pairs of rows: inputs, then their reconstructions
    interpolations: torch.Tensor | None  # rows of INTERPOLATION_STEPS decodes (None: < 2 examples)
    per_row: int  # images per row of the reconstructions grid

    @classmethod
    @torch.no_grad()
    def of(cls, model: VAE, x: torch.Tensor, seed: int = 0) -> Pictures:
        """The grids of ``model`` on the test examples ``x``, samples drawn under ``seed``."""
        model.eval()
        device = next(model.parameters()).device
        x = x[:NUM_SAMPLES].to(device)
        samples = model.to_unit(model.sample(NUM_SAMPLES,
                                             generator=torch.Generator().manual_seed(seed))).cpu()
        per_row = min(GRID_WIDTH, len(x))
        recon = reconstruction_grid(model, x, rows=min(MAX_ROWS, len(x) // per_row),
                                    per_row=per_row).cpu()
        pairs = min(MAX_PAIRS, len(x) // 2)
        interpolations = interpolation_grid(model, x, pairs, INTERPOLATION_STEPS).cpu() \
            if pairs else None
        return cls(samples, recon, interpolations, per_row)

    def save(self, run_dir: str | Path) -> None:
        """``samples.png``, ``reconstructions.png`` and ``interpolation.png`` in ``run_dir``."""
        run_dir = Path(run_dir)
        save_grid(self.samples, run_dir / "samples.png", nrow=GRID_WIDTH)
        save_grid(self.reconstructions, run_dir / "reconstructions.png", nrow=self.per_row)
        if self.interpolations is not None:
            save_grid(self.interpolations, run_dir / "interpolation.png", nrow=INTERPOLATION_STEPS)
