"""Numeric precision of the training step: float32, or mixed precision with bfloat16/float16
autocast (Micikevicius et al. 2018); and the precision of float32 matrix products
(:func:`matmul_precision`, ``train.matmul_precision`` and ``vaekit evaluate
--matmul-precision``).

Under autocast the networks (matrix products) run in the low precision; the distributions are
built from float32 outputs, so log-densities, KL terms and their sums over thousands of data
dimensions stay in float32. float16 also needs loss scaling (:func:`grad_scaler`) against
underflowing gradients; bfloat16 has float32's range and does not. Evaluation always runs in
float32."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,  # no autocast
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` for ``precision`` on ``device`` (disabled for fp32)."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Dynamic loss scaling for fp16; a pass-through (``enabled=False``) otherwise."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def _to_float32(_module: nn.Module, _inputs, output):
    return output.float() if torch.is_tensor(output) and output.is_floating_point() else output


def keep_distributions_float32(model: nn.Module) -> None:
    """Casts the outputs of the encoder's and decoder's networks (``.net``, tensor -> tensor) to
    float32, so the distributions they parameterise compute in float32 under autocast (a no-op
    outside autocast). Idempotent."""
    for part in (getattr(model, "encoder", None), getattr(model, "decoder", None)):
        net = getattr(part, "net", None)
        if isinstance(net, nn.Module) and not getattr(net, "_vaekit_float32_outputs", False):
            net.register_forward_hook(_to_float32)
            net._vaekit_float32_outputs = True


# torch.set_float32_matmul_precision's levels: "highest" computes float32 products in float32;
# "high" may use TF32 (GPUs) or three bfloat16 products; "medium" one bfloat16 product with
# float32 accumulation where the hardware has it (AMX on recent Xeons, tensor cores on GPUs);
# on a CPU without it all three run the same kernels. Measured in docs/performance.md.
MATMUL_PRECISIONS = ("highest", "high", "medium")


@contextlib.contextmanager
def matmul_precision(name: str) -> Iterator[None]:
    """Runs the block with float32 matrix products at precision ``name`` (one of
    :data:`MATMUL_PRECISIONS`) and restores the previous setting afterwards."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(name)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)
