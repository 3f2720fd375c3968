"""Priors p(z): ``nn.Module``s whose ``forward()`` returns a distribution over z with event
shape ``[L]`` (no batch shape). Parameters of learned priors are trained jointly with the
model because the objective calls ``prior()`` on every step."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal


class StandardNormalPrior(nn.Module):
    """p(z) = N(z; 0, I)."""

    def __init__(self, latent_dim: int, **_: object) -> None:
        super().__init__()
        # buffers, so the prior follows the model to its device and dtype
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1,
                           validate_args=False)


PRIORS: dict[str, type[nn.Module]] = {
    "normal": StandardNormalPrior,
}
