"""Walks through latent space: interpolation between codes and per-dimension traversals."""

from __future__ import annotations

import torch


def lerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """z(t) = (1 - t) z0 + t z1 for t in linspace(0, 1, steps): ``[steps, *z0.shape]``."""
    t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype).view(-1, *[1] * z0.dim())
    return (1 - t) * z0 + t * z1


def slerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """Spherical interpolation along the last axis (White 2016):
    z(t) = sin((1-t) w) / sin(w) z0 + sin(t w) / sin(w) z1, w the angle between z0 and z1;
    falls back to :func:`lerp` where the vectors are (anti)parallel. ``[steps, *z0.shape]``."""
    t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype).view(-1, *[1] * z0.dim())
    cos = (z0 * z1).sum(-1, keepdim=True) / (z0.norm(dim=-1, keepdim=True)
                                             * z1.norm(dim=-1, keepdim=True)).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
    sin = torch.sin(omega)
    spherical = (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / sin
    linear = (1 - t) * z0 + t * z1
    return torch.where(sin.abs() < 1e-4, linear, spherical)


INTERPOLATIONS = {"linear": lerp, "spherical": slerp}


def traverse(z: torch.Tensor, dim: int, values: torch.Tensor) -> torch.Tensor:
    """Copies of the code ``z [L]`` with coordinate ``dim`` set to each of ``values [S]``:
    ``[S, L]``."""
    out = z.expand(len(values), -1).clone()
    out[:, dim] = values
    return out
