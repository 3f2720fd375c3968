"""Encoders returning the approximate posterior q(z|x) as a ``torch.distributions`` object.

Every posterior is an ``nn.Module`` whose ``forward(x)`` returns a distribution with batch shape
``[B]`` and event shape ``[L]`` supporting ``rsample`` (the reparameterization trick) and
``log_prob``. ``param_dim(latent_dim)`` says how many numbers per example the encoder network
must output."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

# exp(0.5 * log_var) overflows float32 above log_var ~ 177 and a scale of exactly 0 makes
# log q(z|x) infinite; clamping the log-variance to a range far wider than trained models use
# keeps every value finite without affecting ordinary training.
LOG_VAR_MIN, LOG_VAR_MAX = -30.0, 20.0


class GaussianPosterior(nn.Module):
    """q(z|x) = N(z; loc(x), diag(exp(log_var(x)))), i.e.
    ``Independent(Normal(loc, exp(0.5 * log_var)), 1)`` (Kingma & Welling 2014).

    ``net`` maps ``[B, *data_shape] -> [B, 2L]``: the first L outputs are ``loc``, the last L
    are ``log_var``."""

    def __init__(self, net: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim

    @staticmethod
    def param_dim(latent_dim: int) -> int:
        return 2 * latent_dim

    def forward(self, x: torch.Tensor) -> Distribution:
        loc, log_var = self.net(x).chunk(2, dim=-1)
        scale = torch.exp(0.5 * log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX))
        return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


POSTERIORS: dict[str, type[nn.Module]] = {
    "gaussian": GaussianPosterior,
}
