"""An independent reference for the IWAE paper's architectures, written in plain PyTorch without
vaekit (no shared code), to tell whether a result is vaekit's or the model's:

    python benchmarks/plain_vae_reference.py --data-dir DIR --layers 2 --epochs 5

trains the one-layer (784-200-200-50) or two-layer (784-200-200-100-100-100-50, bottom-up
q(z1|x) q(z2|z1)) VAE, tanh, Glorot initialisation, Adam (lr 1e-3, eps 1e-4), batch 100, a
constant learning rate, on dynamically binarized MNIST (54,000 training images, 6,000 for
validation), and prints the validation ELBO (one sample per image) after every epoch."""

from __future__ import annotations

import argparse
import gzip
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


def mnist_train_images(data_dir: Path) -> torch.Tensor:
    with gzip.open(data_dir / "train-images-idx3-ubyte.gz") as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    return torch.tensor(pixels, dtype=torch.float32) / 255


def mlp(d_in: int, hidden: tuple[int, int], d_out: int) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(d_in, hidden[0]), nn.Tanh(), nn.Linear(hidden[0], hidden[1]),
                        nn.Tanh(), nn.Linear(hidden[1], d_out))
    for layer in net:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return net


def log_normal(z, mean, log_var):
    return (-0.5 * (LOG_2PI + log_var + (z - mean) ** 2 * torch.exp(-log_var))).sum(-1)


def draw(mean, log_var):
    return mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)


class PlainVAE(nn.Module):
    def __init__(self, layers: int) -> None:
        super().__init__()
        self.layers = layers
        if layers == 1:
            self.q1, self.px = mlp(784, (200, 200), 2 * 50), mlp(50, (200, 200), 784)
        else:
            self.q1, self.q2 = mlp(784, (200, 200), 2 * 100), mlp(100, (100, 100), 2 * 50)
            self.p1, self.px = mlp(50, (100, 100), 2 * 100), mlp(100, (200, 200), 784)

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        mean1, log_var1 = self.q1(x).chunk(2, -1)
        z1 = draw(mean1, log_var1)
        log_q = log_normal(z1, mean1, log_var1)
        if self.layers == 1:
            log_prior = log_normal(z1, torch.zeros_like(z1), torch.zeros_like(z1))
        else:
            mean2, log_var2 = self.q2(z1).chunk(2, -1)
            z2 = draw(mean2, log_var2)
            log_q = log_q + log_normal(z2, mean2, log_var2)
            prior_mean1, prior_log_var1 = self.p1(z2).chunk(2, -1)
            log_prior = (log_normal(z2, torch.zeros_like(z2), torch.zeros_like(z2))
                         + log_normal(z1, prior_mean1, prior_log_var1))
        log_px = -nn.functional.binary_cross_entropy_with_logits(
            self.px(z1), x, reduction="none").sum(-1)
        return log_px + log_prior - log_q


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder of MNIST's IDX files")
    parser.add_argument("--layers", type=int, choices=(1, 2), default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    images = mnist_train_images(args.data_dir)
    order = torch.randperm(len(images))
    train, val = images[order[:54000]], images[order[54000:]]
    model = PlainVAE(args.layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)
    val_binary = torch.bernoulli(val, generator=torch.Generator().manual_seed(1))
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        for index in torch.randperm(len(train)).split(100):
            loss = -model.elbo(torch.bernoulli(train[index])).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val_elbo = model.elbo(val_binary).mean().item()
        print(f"epoch {epoch}  val ELBO {val_elbo:.2f}  {time.perf_counter() - start:.1f}s",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
