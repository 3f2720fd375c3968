"""Image grids written as PNG with Pillow (torchvision is not a dependency)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2,
              pad_value: float = 1.0) -> np.ndarray:
    """Tiles ``[N, C, H, W]`` images with values in [0, 1] into one ``uint8`` array
    (``[H', W']`` for 1 channel, ``[H', W', 3]`` for 3), ``nrow`` images per row."""
    images = images.detach().float().cpu().clamp(0, 1)
    if images.dim() == 3:
        images = images.unsqueeze(1)
    n, c, h, w = images.shape
    if c not in (1, 3):
        images = images[:, :1]
        c = 1
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.full((c, ncol * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i]
    array = (grid.numpy() * 255 + 0.5).astype(np.uint8)
    return array[0] if c == 1 else array.transpose(1, 2, 0)


def grid_png(images: torch.Tensor, nrow: int | None = None, scale: int = 1) -> bytes:
    """PNG bytes of :func:`make_grid`, enlarged ``scale`` times (nearest neighbour)."""
    image = Image.fromarray(make_grid(images, nrow))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None,
              scale: int | None = None) -> None:
    """Writes a grid PNG; small images (e.g. 8x8 digits) are enlarged so they are visible."""
    h = images.shape[-2]
    scale = scale or max(1, 56 // h)
    from ..storage import atomic_write_bytes

    atomic_write_bytes(path, grid_png(images, nrow, scale))
