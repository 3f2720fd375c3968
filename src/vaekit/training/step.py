"""The machinery of one training step: the loss module the loop calls (inside DDP under a
process group, autocast for mixed precision, compiled when asked), the optimizer, the device,
and the checks that keep a non-finite step from touching the weights."""

from __future__ import annotations

import torch
from torch import nn

from ..distributed import is_distributed, resolve_device  # noqa: F401 (re-exported)
from ..objectives import ElboTerms
from ..precision import autocast, keep_distributions_float32


def make_optimizer(model: nn.Module, lr: float, device: torch.device, *,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
                   ) -> torch.optim.Optimizer:
    """Adam; the fused implementation when the device supports it (3x faster optimizer step
    measured on CPU, see benchmarks). It updates the model's ``optimized_parameters()`` where
    it says which (a family that trains some parameters itself: FactorVAE), else all."""
    params = list(getattr(model, "optimized_parameters", model.parameters)())
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps)


def gradient_sum(model: nn.Module) -> torch.Tensor:
    """sum_i g_i over every entry of every parameter gradient, without a host sync. It is not
    finite iff some g_i is not (NaN and inf propagate; inf - inf is NaN), or the finite entries
    overflow float32, itself an explosion. Half the cost of the L2 norm (0.08 vs 0.18 ms on the
    784-400-20 MLP, about 1% of a CPU step; benchmarks/nonfinite_check.py)."""
    grads = [p.grad.sum() for p in model.parameters() if p.grad is not None]
    return torch.stack(grads).sum() if grads else torch.zeros(())


def exploding_term(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                   loss_kwargs: dict) -> str:
    """Names the term of the ELBO that exploded on batch ``x``: "reconstruction" or "KL",
    whichever is not finite in value, else in gradient, else (each finite but their sum
    overflowing) the larger in value or gradient norm. Only called when training stops, so its
    extra backward passes cost nothing in the loop."""
    _loss, terms = model.training_loss(x, y, **loss_kwargs)
    named = {"reconstruction": terms.reconstruction, "KL": terms.kl}
    for name, term in named.items():
        if not bool(torch.isfinite(term).all()):
            return name
    params = [p for p in model.parameters() if p.requires_grad]
    size = {}
    for name, term in named.items():
        grads = [g for g in torch.autograd.grad(term.mean(), params, retain_graph=True,
                                                allow_unused=True) if g is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if not bool(torch.isfinite(norm)):
            return name
        size[name] = max(float(term.abs().max()), float(norm))
    return max(size, key=size.get)


class LossModule(nn.Module):
    """forward(x, y) = the wrapped model's training loss of a batch (x and its condition y;
    :meth:`vaekit.model.VAE.training_loss`).

    The objective calls ``model.encoder``/``decoder``/``prior`` rather than ``model.forward``,
    so DDP wraps this module: its forward is the whole loss, which is what DDP needs to hook
    every parameter's gradient for the all-reduce. The bare VAE stays available (``.model``)
    for checkpoints and evaluation. Mixed precision (``precision``) autocasts the networks and
    keeps the distributions and the loss in float32."""

    def __init__(self, model: nn.Module, precision: str = "fp32") -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        if precision != "fp32":
            keep_distributions_float32(model)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                **loss_options) -> tuple[torch.Tensor, ElboTerms]:
        with autocast(x.device, self.precision):
            return self.model.training_loss(x, y, **loss_options)


def wrap_for_training(model: nn.Module, device: torch.device, *,
                      precision: str = "fp32", compile: bool = False) -> nn.Module:
    """The loss module the loop calls: :class:`LossModule`, inside DDP when a process group is
    up (gradients averaged over ranks during ``backward``), compiled with ``torch.compile`` when
    asked (after DDP, so the compiler sees DDP's bucket boundaries)."""
    module: nn.Module = LossModule(model, precision)
    if is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        module = DistributedDataParallel(module, device_ids=device_ids)
    if compile:
        # static shapes: the full batch and the epoch's last, smaller one get a graph each (with
        # dynamic shapes the generic graph served every batch, more slowly)
        module = torch.compile(module, dynamic=False)
    return module


def resolve_kl_dispatch(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                        options: dict, device: torch.device) -> None:
    """One eager loss on two examples before the first compiled step. The first
    ``kl_divergence(q, p)`` of a pair of types looks the pair up in torch's KL registry
    with Python the compiler cannot trace, and that graph break split the compiled loss
    into three graphs (0.64x the speed of an unbroken one, measured on the MLP); once
    resolved it is a dictionary hit. The random state is restored, so the run draws the
    same numbers as it would without this call."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        model.training_loss(x, y, **options)
