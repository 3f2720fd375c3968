"""Cost of checking gradients for NaN/inf in the training step.

Times one optimizer step of the canonical MNIST MLP (784-400-20, Bernoulli likelihood, batch
128, fused Adam) with the loss-only finiteness check (one host sync) and with the check the
loop uses (loss + sum of all gradient entries, still one host sync); also the check alone and
the L2 gradient norm alone for comparison. Interleaved repetitions; medians.

    python benchmarks/nonfinite_check.py [--steps 200] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vaekit.config import ModelConfig
from vaekit.families import build_model
from vaekit.objectives import training_loss
from vaekit.training.step import gradient_sum, make_optimizer


def step_loss_only(model, optimizer, x):
    loss, _ = training_loss(model, x)
    if not bool(torch.isfinite(loss)):
        return
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def step_loss_and_grads(model, optimizer, x):
    loss, _ = training_loss(model, x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if not bool(torch.isfinite(loss.detach() + gradient_sum(model))):
        optimizer.zero_grad(set_to_none=True)
        return
    optimizer.step()


def time_steps(step, model, optimizer, batches) -> float:
    start = time.perf_counter()
    for x in batches:
        step(model, optimizer, x)
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(400,), latent_dim=20, likelihood="bernoulli")
    model = build_model(cfg, (1, 28, 28))
    optimizer = make_optimizer(model, 1e-3, torch.device("cpu"))
    batches = [(torch.rand(128, 1, 28, 28) < 0.13).float() for _ in range(args.steps)]
    variants = {"loss only": step_loss_only, "loss + grad sum": step_loss_and_grads}
    for step in variants.values():  # warm-up
        time_steps(step, model, optimizer, batches[:20])
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, step in variants.items():
            times[name].append(time_steps(step, model, optimizer, batches))
    base = statistics.median(times["loss only"])
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    start = time.perf_counter()
    for _ in range(1000):
        gradient_sum(model)
    check_alone = (time.perf_counter() - start) / 1000
    start = time.perf_counter()
    for _ in range(1000):
        torch.nn.utils.get_total_norm(grads, foreach=True)
    norm_alone = (time.perf_counter() - start) / 1000
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{sum(g.numel() for g in grads)} parameters, batch 128")
    for name, t in times.items():
        m = statistics.median(t)
        print(f"{name:>18}: {m * 1e3:7.3f} ms/step  ({(m / base - 1) * 100:+.1f}% vs loss only; "
              f"min {min(t) * 1e3:.3f}, max {max(t) * 1e3:.3f})")
    print(f"gradient_sum alone: {check_alone * 1e6:.1f} us ({check_alone / base * 100:.1f}% of a step); "
          f"L2 norm (get_total_norm) alone: {norm_alone * 1e6:.1f} us ({norm_alone / base * 100:.1f}%)")


if __name__ == "__main__":
    main()
