"""Invertible transforms for flow priors and flow posteriors.

Each flow step is an ``nn.Module`` (it owns the parameters, so they are trained and saved like
any other) whose ``forward(x, context)`` returns ``(y, log|det dy/dx|)``; ``context`` carries
per-example inputs from the encoder (``None`` for unconditional steps). Steps hold no state
between calls. :class:`ModuleTransform` binds a step to one context as a
``torch.distributions.Transform``, so that it composes with ``TransformedDistribution``:

    log p(y) = log p_base(f^-1(y)) - sum_t log|det J_t|.

Shapes: ``x`` is ``[..., L]``; log-determinants are ``[...]`` (summed over the event).

Steps:
- :class:`AffineCoupling`: RealNVP affine coupling (Dinh et al. 2017), exact inverse.
- :class:`PlanarStep`: planar flow (Rezende & Mohamed 2015) with per-example parameters
  (amortised by the encoder); no closed-form inverse.
- :class:`IAFStep`: inverse autoregressive flow (Kingma et al. 2016) with a MADE network
  (Germain et al. 2015), optionally conditioned on a context from the encoder; its inverse is
  exact but sequential (L passes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Transform, constraints


class ModuleTransform(Transform):
    """A ``torch.distributions.Transform`` backed by a flow-step module.

    The step computes its log-determinant together with the output, so the last
    ``(x, y, log_det)`` is kept and returned by :meth:`log_abs_det_jacobian` when asked about
    the same tensors (``TransformedDistribution`` always asks right after computing them).
    ``cache_size=1`` also makes ``log_prob(z)`` of a ``z`` just drawn by ``rsample`` reuse the
    forward pass instead of inverting, which is what makes flows without an inverse usable as
    posteriors."""

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    def __init__(self, step: nn.Module, context: torch.Tensor | None = None) -> None:
        super().__init__(cache_size=1)
        self.step, self.context = step, context
        self._last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        y, log_det = self.step(x, self.context)
        self._last = (x, y, log_det)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x, log_det = self.step.inverse(y, self.context)
        self._last = (x, y, log_det)
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._last is not None and self._last[0] is x and self._last[1] is y:
            return self._last[2]
        return self.step(x, self.context)[1]


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                        nn.Linear(hidden, d_out))
    # zero last layer: every step starts as the identity, so training starts from N(0, I)
    nn.init.zeros_(net[-1].weight)
    nn.init.zeros_(net[-1].bias)
    return net


class AffineCoupling(nn.Module):
    """RealNVP affine coupling (Dinh et al. 2017) with a binary mask m:

        y = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x)),   log|det J| = sum (1 - m) * s,

    where s = tanh-bounded scale. Inverse: x = m * y + (1 - m) * (y - t(m * y)) * exp(-s(m * y)).
    ``parity`` chooses which half is transformed (alternate it between steps). With L = 1 one
    parity is an element-wise affine map and the other the identity."""

    def __init__(self, dim: int, hidden: int = 64, parity: int = 0) -> None:
        super().__init__()
        mask = ((torch.arange(dim) + parity) % 2 == 1).float()
        self.register_buffer("mask", mask, persistent=False)
        self.net = _mlp(dim, hidden, 2 * dim)
        self.scale_bound = nn.Parameter(torch.ones(dim))  # s = bound * tanh(raw / bound)

    def _shift_and_log_scale(self, x_fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, raw = self.net(x_fixed).chunk(2, dim=-1)
        bound = F.softplus(self.scale_bound) + 1e-3
        log_scale = bound * torch.tanh(raw / bound) * (1 - self.mask)
        return shift * (1 - self.mask), log_scale

    def forward(self, x: torch.Tensor, context: None = None) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._shift_and_log_scale(x * self.mask)
        y = x * torch.exp(log_scale) + shift
        return y, log_scale.sum(-1)

    def inverse(self, y: torch.Tensor, context: None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(x, log|det dy/dx|)`` with ``x = f^-1(y)``."""
        shift, log_scale = self._shift_and_log_scale(y * self.mask)
        x = (y - shift) * torch.exp(-log_scale)
        return x, log_scale.sum(-1)


def planar_constrained_u(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """u_hat = u + (m(w.u) - w.u) w / |w|^2 with m(a) = -1 + softplus(a), so that
    w.u_hat >= -1 and the planar map is invertible (Rezende & Mohamed 2015, appendix A)."""
    wu = (w * u).sum(-1, keepdim=True)
    return u + (F.softplus(wu) - 1 - wu) * w / (w * w).sum(-1, keepdim=True).clamp_min(1e-12)


class PlanarStep(nn.Module):
    """Planar flow f(z) = z + u_hat tanh(w.z + b) (Rezende & Mohamed 2015),

        log|det J| = log|1 + u_hat . (1 - tanh^2(w.z + b)) w|,

    with per-example parameters given as the context ``[B, 2L + 1]`` = ``[u, w, b]`` (from the
    encoder; broadcast against ``z: [..., B, L]``). The module itself has no parameters. There
    is no closed-form inverse, so ``inverse`` raises NotImplementedError; log q(z|x) is
    available for z drawn from the flow (cached by :class:`ModuleTransform`)."""

    @staticmethod
    def context_dim(dim: int) -> int:
        return 2 * dim + 1

    def forward(self, z: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dim = z.shape[-1]
        u, w, b = context.split([dim, dim, 1], dim=-1)
        u_hat = planar_constrained_u(u, w)
        h = torch.tanh((w * z).sum(-1, keepdim=True) + b)
        y = z + u_hat * h
        psi_u = (1 - h**2) * (w * u_hat).sum(-1, keepdim=True)  # >= -1 by the constraint
        return y, torch.log((1 + psi_u).abs().clamp_min(1e-12)).squeeze(-1)

    def inverse(self, y: torch.Tensor, context: torch.Tensor):
        raise NotImplementedError(
            "planar flows have no closed-form inverse: log q(z|x) is only available for z "
            "drawn from q(z|x) itself; use the 'iaf' or 'full' posterior where q(z|x) must be "
            "evaluated at other points")


class MaskedLinear(nn.Linear):
    """y = x (W * M)^T + b with a fixed binary connectivity mask M (Germain et al. 2015)."""

    def __init__(self, d_in: int, d_out: int, mask: torch.Tensor) -> None:
        super().__init__(d_in, d_out)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class IAFStep(nn.Module):
    """One inverse autoregressive flow step (Kingma et al. 2016):

        [m, s] = MADE(z, h),  sigma = sigmoid(s),  y = sigma * z + (1 - sigma) * m,
        log|det J| = sum log sigma,

    where output i of the MADE depends only on z_{<i} (in the step's order) and on the context
    ``h`` (``[B, H]``, from the encoder; H = 0 for none). ``reverse`` flips the order, so
    alternating steps see every dimension. The Jacobian is triangular; the inverse solves for
    z one dimension at a time (L passes)."""

    def __init__(self, dim: int, hidden: int = 64, context_dim: int = 0, reverse: bool = False,
                 forget_bias: float = 1.5) -> None:
        super().__init__()
        order = torch.arange(dim).flip(0) if reverse else torch.arange(dim)
        degree_in = order + 1  # input i may influence outputs of higher degree only
        degree_hidden = torch.arange(hidden) % max(dim, 1)  # 0 ... L-1 (0: context only)
        self.register_buffer("order", order, persistent=False)
        self.inp = MaskedLinear(dim, hidden, (degree_hidden[:, None] >= degree_in[None, :]).float())
        out_mask = (degree_in[:, None] > degree_hidden[None, :]).float()
        self.out = MaskedLinear(hidden, 2 * dim, torch.cat([out_mask, out_mask]))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.context = nn.Linear(context_dim, hidden) if context_dim > 0 else None
        self.forget_bias = forget_bias

    def _shift_and_gate(self, z: torch.Tensor, context: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.inp(z)
        if self.context is not None:
            a = a + self.context(context)  # [B, H'] broadcasts against [..., B, H']
        shift, s = self.out(F.elu(a)).chunk(2, dim=-1)
        return shift, s + self.forget_bias

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        shift, s = self._shift_and_gate(z, context)
        sigma = torch.sigmoid(s)
        return sigma * z + (1 - sigma) * shift, F.logsigmoid(s).sum(-1)

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Solves y = sigma(z_<i) z + (1 - sigma(z_<i)) m(z_<i) dimension by dimension, in the
        step's order; after L passes every coordinate of z is exact."""
        shift, s = self._shift_and_gate(torch.zeros_like(y), context)
        z = y.new_zeros(torch.broadcast_shapes(y.shape, shift.shape))  # context may broadcast
        for i in self.order.tolist():
            sigma = torch.sigmoid(s[..., i])
            z = z.clone()
            z[..., i] = (y[..., i] - (1 - sigma) * shift[..., i]) / sigma
            shift, s = self._shift_and_gate(z, context)
        return z, F.logsigmoid(s).sum(-1)
