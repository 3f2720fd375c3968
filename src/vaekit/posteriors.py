"""Encoders returning the approximate posterior q(z|x) as a ``torch.distributions`` object.

Every posterior is an ``nn.Module`` whose ``forward(x)`` returns a distribution with batch shape
``[B]`` and event shape ``[L]`` supporting ``rsample`` (the reparameterization trick) and
``log_prob``. ``param_dim(latent_dim, **options)`` says how many numbers per example the
encoder network must output; ``has_inverse`` says whether ``log_prob`` works at any z (False
for planar flows, whose log-density is known only at their own samples)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import (Distribution, Independent, MultivariateNormal, Normal,
                                 TransformedDistribution)

from .flows import IAFStep, ModuleTransform, PlanarStep

# exp(0.5 * log_var) overflows float32 above log_var ~ 177 and a scale of exactly 0 makes
# log q(z|x) infinite; clamping the log-variance to a range far wider than trained models use
# keeps every value finite without affecting ordinary training.
LOG_VAR_MIN, LOG_VAR_MAX = -30.0, 20.0


def _diagonal_gaussian(params: torch.Tensor) -> Independent:
    loc, log_var = params.chunk(2, dim=-1)
    scale = torch.exp(0.5 * log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX))
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


class GaussianPosterior(nn.Module):
    """q(z|x) = N(z; loc(x), diag(exp(log_var(x)))), i.e.
    ``Independent(Normal(loc, exp(0.5 * log_var)), 1)`` (Kingma & Welling 2014).

    ``net`` maps ``[B, *data_shape] -> [B, 2L]``: the first L outputs are ``loc``, the last L
    are ``log_var``."""

    has_inverse = True  # log q(z|x) can be evaluated at any z (VampPrior needs this)
    detachable = True  # its parameters are tensors: DReG can evaluate it detached

    def __init__(self, net: nn.Module, latent_dim: int, **_: object) -> None:
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim

    @staticmethod
    def param_dim(latent_dim: int, **_: object) -> int:
        return 2 * latent_dim

    def forward(self, x: torch.Tensor) -> Distribution:
        return _diagonal_gaussian(self.net(x))


class FullCovariancePosterior(nn.Module):
    """q(z|x) = N(z; loc(x), L(x) L(x)^T), ``MultivariateNormal(loc, scale_tril=L)``, where L is
    lower triangular with diagonal exp(0.5 * log_var(x)) (positive; log_var clamped as in the
    diagonal posterior, which floors it) and free strictly-lower entries.

    ``net`` outputs ``[loc (L), log_var (L), strictly lower entries (L(L-1)/2)]``."""

    has_inverse = True
    detachable = True

    def __init__(self, net: nn.Module, latent_dim: int, **_: object) -> None:
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim
        rows, cols = torch.tril_indices(latent_dim, latent_dim, offset=-1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    @staticmethod
    def param_dim(latent_dim: int, **_: object) -> int:
        return 2 * latent_dim + latent_dim * (latent_dim - 1) // 2

    def forward(self, x: torch.Tensor) -> Distribution:
        dim = self.latent_dim
        loc, log_var, lower = self.net(x).split([dim, dim, dim * (dim - 1) // 2], dim=-1)
        diag = torch.exp(0.5 * log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX))
        strictly_lower = diag.new_zeros(*diag.shape, dim)
        strictly_lower[..., self.rows, self.cols] = lower
        scale_tril = strictly_lower + torch.diag_embed(diag)
        return MultivariateNormal(loc, scale_tril=scale_tril, validate_args=False)


class PlanarFlowPosterior(nn.Module):
    """q(z|x): z_0 ~ N(loc(x), diag(exp(log_var(x)))) pushed through K planar steps
    z_k = z_{k-1} + u_hat_k tanh(w_k . z_{k-1} + b_k) whose parameters the encoder outputs per
    example (Rezende & Mohamed 2015), so

        log q(z_K|x) = log N(z_0) - sum_k log|1 + u_hat_k . h'(w_k . z_{k-1} + b_k) w_k|.

    A ``TransformedDistribution``: ``rsample`` and ``log_prob`` of its own samples (cached;
    planar maps have no closed-form inverse). ``net`` outputs ``2L + K (2L + 1)`` numbers."""

    has_inverse = False
    detachable = False  # its flow steps take the encoder's output as context: not detachable

    def __init__(self, net: nn.Module, latent_dim: int, flow_steps: int = 4, **_: object) -> None:
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim
        self.flow_steps = flow_steps
        self.step = PlanarStep()

    @staticmethod
    def param_dim(latent_dim: int, flow_steps: int = 4, **_: object) -> int:
        return 2 * latent_dim + flow_steps * PlanarStep.context_dim(latent_dim)

    def forward(self, x: torch.Tensor) -> Distribution:
        params = self.net(x)
        base, flows = params.split([2 * self.latent_dim, params.shape[-1] - 2 * self.latent_dim], -1)
        transforms = [ModuleTransform(self.step, context)
                      for context in flows.chunk(self.flow_steps, dim=-1)]
        return TransformedDistribution(_diagonal_gaussian(base), transforms, validate_args=False)


class IAFPosterior(nn.Module):
    """q(z|x): z_0 ~ N(loc(x), diag(exp(log_var(x)))) pushed through K inverse autoregressive
    flow steps z_k = sigma_k * z_{k-1} + (1 - sigma_k) * m_k, [m_k, s_k] = MADE_k(z_{k-1}, h(x)),
    sigma_k = sigmoid(s_k) (Kingma et al. 2016), so

        log q(z_K|x) = log N(z_0) - sum_k sum_i log sigma_{k,i}.

    The encoder also outputs the context h (``context_dim`` numbers; 0 for none). The order
    of the latent dimensions is reversed between steps. ``net`` outputs ``2L + context_dim``."""

    has_inverse = True  # exact, sequential over the L dimensions
    detachable = False  # its MADE networks are learned modules: DReG cannot detach them

    def __init__(self, net: nn.Module, latent_dim: int, flow_steps: int = 4, flow_hidden: int = 64,
                 context_dim: int | None = None, **_: object) -> None:
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim
        self.context_dim = latent_dim if context_dim is None else context_dim
        self.steps = nn.ModuleList(
            IAFStep(latent_dim, flow_hidden, self.context_dim, reverse=k % 2 == 1)
            for k in range(flow_steps))

    @staticmethod
    def param_dim(latent_dim: int, context_dim: int | None = None, **_: object) -> int:
        return 2 * latent_dim + (latent_dim if context_dim is None else context_dim)

    def forward(self, x: torch.Tensor) -> Distribution:
        base, h = self.net(x).split([2 * self.latent_dim, self.context_dim], dim=-1)
        transforms = [ModuleTransform(step, h) for step in self.steps]
        return TransformedDistribution(_diagonal_gaussian(base), transforms, validate_args=False)


POSTERIORS: dict[str, type[nn.Module]] = {
    "gaussian": GaussianPosterior,
    "full": FullCovariancePosterior,
    "planar": PlanarFlowPosterior,
    "iaf": IAFPosterior,
}


def posterior_mean(q_z: Distribution, num_samples: int = 64) -> torch.Tensor:
    """E_q[z]: the closed form when the distribution has one, the Rao-Blackwellised layer
    means of a hierarchical posterior, else a Monte Carlo average."""
    if hasattr(q_z, "conditional_means"):
        return q_z.conditional_means(num_samples)
    try:
        return q_z.mean
    except NotImplementedError:
        return q_z.sample((num_samples,)).mean(0)
