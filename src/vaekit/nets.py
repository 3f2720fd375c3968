"""Tensor -> tensor networks (no probability here): an MLP and a convolutional encoder/decoder
pair that adapts to any image size and channel count.

The probabilistic heads (posteriors, likelihoods) wrap these networks; a network only maps
``[B, *in_shape] -> [B, out_dim]`` (encoder side) or ``[B, in_dim] -> [B, *out_shape]``
(decoder side)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


class GatedDense(nn.Module):
    """h = (W x + b) * sigmoid(V x + c): a gated dense layer (Dauphin et al. 2017), the hidden
    layer of Tomczak & Welling's (2018) VampPrior networks; no activation follows it."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.value = nn.Linear(d_in, d_out)
        self.gate = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(x) * torch.sigmoid(self.gate(x))


def xavier_init(net: nn.Module) -> None:
    """Glorot & Bengio (2010) uniform weights and zero biases for every linear and convolutional
    layer of ``net``, as the VAE and IWAE papers initialised their networks."""
    for module in net.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def he_init(net: nn.Module) -> None:
    """He et al. (2015) normal weights N(0, 2 / fan_in) for every linear and convolutional layer
    of ``net``, biases left at PyTorch's default, as Tomczak & Welling's VampPrior code
    initialises its networks."""
    for module in net.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")


# config model.init -> function applied to the encoder and decoder networks (None: PyTorch's)
INITIALIZATIONS = {"default": None, "xavier": xavier_init, "he": he_init}


class MLP(nn.Module):
    """Flattens ``[B, *in_shape]`` and applies Linear-activation blocks (or, ``gated``,
    :class:`GatedDense` layers), then a final Linear to ``out_shape`` (reshaped):
    ``[B, *in_shape] -> [B, *out_shape]``."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        hidden: Sequence[int],
        activation: str = "relu",
        gated: bool = False,
    ) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)
        sizes = [math.prod(self.in_shape), *hidden]
        layers: list[nn.Module] = []
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            layers += ([GatedDense(d_in, d_out)] if gated
                       else [nn.Linear(d_in, d_out), ACTIVATIONS[activation]()])
        layers.append(nn.Linear(sizes[-1], math.prod(self.out_shape)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[: x.dim() - len(self.in_shape)]
        # one batch axis for the Linear layers: with samples first ([S, B, ...]) a compiled
        # training step of the 784-400-20 VAE was measured 18% slower than on [S * B, ...]
        # (the backward of Linear on 3-D inputs; docs/performance.md)
        h = self.layers(x.reshape(math.prod(batch_shape), math.prod(self.in_shape)))
        return h.reshape(*batch_shape, *self.out_shape)


def downsampled_sizes(height: int, width: int, min_size: int = 4) -> list[tuple[int, int]]:
    """Spatial sizes after each stride-2 convolution (kernel 3, padding 1: n -> ceil(n/2)),
    halving until the smaller side would drop below ``min_size``. The first entry is the input
    size, so ``len(result) - 1`` is the number of stride-2 layers (0 for tiny images)."""
    sizes = [(height, width)]
    while min(sizes[-1]) >= 2 * min_size - 1 and min(sizes[-1]) > min_size:
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class ConvEncoderNet(nn.Module):
    """``[B, C, H, W] -> [B, out_dim]``: stride-2 3x3 convolutions (channels doubling from
    ``base_channels``) down to about 4x4, then a Linear layer. Any H, W and C."""

    def __init__(
        self,
        in_shape: Sequence[int],
        out_dim: int,
        base_channels: int = 32,
        hidden: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        channels, height, width = in_shape
        sizes = downsampled_sizes(height, width)
        layers: list[nn.Module] = []
        c_in = channels
        for i in range(len(sizes) - 1):
            c_out = base_channels * 2**i
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), ACTIVATIONS[activation]()]
            c_in = c_out
        if len(sizes) == 1:  # tiny image: one shape-preserving convolution still sees locality
            layers += [nn.Conv2d(c_in, base_channels, 3, padding=1), ACTIVATIONS[activation]()]
            c_in = base_channels
        h, w = sizes[-1]
        layers += [
            nn.Flatten(),
            nn.Linear(c_in * h * w, hidden),
            ACTIVATIONS[activation](),
            nn.Linear(hidden, out_dim),
        ]
        self.in_shape = tuple(in_shape)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_shape = x.shape[:-3]
        h = self.layers(x.reshape(-1, *self.in_shape))
        return h.reshape(*batch_shape, -1)


class ConvDecoderNet(nn.Module):
    """``[B, in_dim] -> [B, C_out, H, W]``, the mirror of :class:`ConvEncoderNet`: Linear to a
    small feature map, then stride-2 transposed convolutions whose ``output_padding`` is chosen
    per layer so the output is exactly H x W (odd sizes such as 7 or 25 included)."""

    def __init__(
        self,
        in_dim: int,
        out_shape: Sequence[int],
        base_channels: int = 32,
        hidden: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        out_channels, height, width = out_shape
        sizes = downsampled_sizes(height, width)
        num_up = len(sizes) - 1
        c_top = base_channels * 2 ** max(num_up - 1, 0)
        h, w = sizes[-1]
        self.top_shape = (c_top, h, w)
        layers: list[nn.Module] = [
            nn.Linear(in_dim, hidden),
            ACTIVATIONS[activation](),
            nn.Linear(hidden, c_top * h * w),
            ACTIVATIONS[activation](),
            nn.Unflatten(1, self.top_shape),
        ]
        c_in = c_top
        for i in reversed(range(num_up)):
            (h_small, w_small), (h_big, w_big) = sizes[i + 1], sizes[i]
            # ConvTranspose2d(k=3, s=2, p=1) maps n -> 2n - 1 + output_padding.
            pad = (h_big - (2 * h_small - 1), w_big - (2 * w_small - 1))
            c_out = base_channels * 2 ** max(i - 1, 0)
            last = i == 0
            layers.append(
                nn.ConvTranspose2d(
                    c_in, out_channels if last else c_out, 3, stride=2, padding=1, output_padding=pad
                )
            )
            if not last:
                layers.append(ACTIVATIONS[activation]())
            c_in = c_out
        if num_up == 0:
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1))
        self.in_dim = in_dim
        self.out_shape = tuple(out_shape)
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch_shape = z.shape[:-1]
        h = self.layers(z.reshape(-1, self.in_dim))
        return h.reshape(*batch_shape, *self.out_shape)


class ScaleLevels(nn.Module):
    """Integer levels k in {0, ..., n - 1} (uint8 data) -> k / (n - 1) in [0, 1], float32: what
    the encoder of a discrete grey-level likelihood sees (no parameters, no buffers)."""

    def __init__(self, num_levels: int) -> None:
        super().__init__()
        self.num_levels = int(num_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.get_default_dtype()) / (self.num_levels - 1)


class Standardize(nn.Module):
    """x -> (x - loc) / scale with per-dimension buffers ``loc`` and ``scale`` (saved with the
    model, set from the training data): puts table columns of any units on one scale before
    the encoder network."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("loc", torch.zeros(tuple(shape)))
        self.register_buffer("scale", torch.ones(tuple(shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.loc) / self.scale
