"""What ``--matmul-precision`` buys and costs on this machine (docs/performance.md):

    python benchmarks/matmul_precision.py --data-dir ../shared/data/mnist [--images 100]
        [--run RUN_DIR] [--steps 100] [--json]

For each of torch's float32 matmul precisions (highest, high, medium), interleaved round by
round in this process, on one thread unless OMP_NUM_THREADS says otherwise:

- a 5000x200 @ 200x784 product (the decoder's first layer on K = 5000 samples): GFLOP/s and
  its largest relative difference from the float32 product;
- training images/s of the IWAE-paper presets with one and two stochastic layers (batch 100,
  ``--steps`` optimizer steps from the same start);
- with ``--run``, the K = 5000 importance-sampled log p(x) of ``--images`` test images of that
  run: images/s and the paired per-image difference from the float32 estimate on the same
  draws (same seed), mean and largest absolute.

On a CPU without bfloat16 matrix units (AVX2 only), the three settings run the same kernels and
the differences are exactly 0."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vaekit.config import load_config_file, merge  # noqa: E402
from vaekit.precision import MATMUL_PRECISIONS, matmul_precision  # noqa: E402

PRESETS = {"1 layer": "iwae-paper-vae-1layer.toml", "2 layers": "iwae-paper-vae-2layer.toml"}


def product(rounds: int) -> dict:
    a, b = torch.randn(5000, 200), torch.randn(200, 784)
    exact = a.double() @ b.double()
    rates = {p: [] for p in MATMUL_PRECISIONS}
    error = {}
    for _ in range(rounds):
        for p in MATMUL_PRECISIONS:
            with matmul_precision(p):
                start, n = time.perf_counter(), 0
                while time.perf_counter() - start < 0.5:
                    c = a @ b
                    n += 1
                rates[p].append(2 * 5000 * 200 * 784 * n / (time.perf_counter() - start) / 1e9)
                error[p] = float((c.double() - exact).abs().max() / exact.abs().max())
    return {p: {"gflops": statistics.median(rates[p]), "max_relative_error": error[p]}
            for p in MATMUL_PRECISIONS}


def training(data_dir: str, steps: int, rounds: int) -> dict:
    from vaekit.config import resolve
    from vaekit.data import dataset_defaults, dynamic_binarize, load_dataset
    from vaekit.families import build_model

    dataset = load_dataset("mnist", data_dir, val_fraction=0.1, split_seed=0, download=False)
    x = dataset.train[: 100 * steps]
    out = {}
    for name, preset in PRESETS.items():
        config = merge(load_config_file(ROOT / "presets" / preset),
                       {"data": {"data_dir": data_dir}, "train": {"batch_size": 100}})
        config = resolve(config, defaults=dataset_defaults("mnist"), value_kind="unit",
                         levels=256)
        rates = {p: [] for p in MATMUL_PRECISIONS}
        for _ in range(rounds):
            for p in MATMUL_PRECISIONS:
                torch.manual_seed(0)
                model = build_model(config.model, (1, 28, 28))
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-4)
                with matmul_precision(p):
                    start = time.perf_counter()
                    for s in range(steps):
                        loss, _ = model.training_loss(dynamic_binarize(x[s * 100:(s + 1) * 100]))
                        optimizer.zero_grad()
                        loss.backward()
                        optimizer.step()
                    rates[p].append(100 * steps / (time.perf_counter() - start))
        out[name] = {p: statistics.median(r) for p, r in rates.items()}
    return out


def log_likelihood(run_dir: str, images: int) -> dict:
    import vaekit
    from vaekit.importance import importance_estimate

    run = vaekit.load(run_dir)
    x = run.split("test")[0]
    x = x[torch.arange(images) * len(x) // images]  # spread through the test set
    estimates, out = {}, {}
    for p in MATMUL_PRECISIONS:
        with matmul_precision(p):
            start = time.perf_counter()
            estimates[p] = importance_estimate(run.model, x, 5000, seed=0).log_likelihood
            out[p] = {"images_per_second": images / (time.perf_counter() - start)}
    for p in MATMUL_PRECISIONS:
        difference = estimates[p] - estimates["highest"]
        out[p].update(mean_difference=float(difference.mean()),
                      max_abs_difference=float(difference.abs().max()),
                      log_likelihood=float(estimates[p].mean()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--run", help="a trained MNIST run for the log p(x) comparison")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "threads": torch.get_num_threads(), "product": product(args.rounds),
              "training_images_per_second": training(args.data_dir, args.steps, args.rounds)}
    if args.run:
        result["log_likelihood_k5000"] = log_likelihood(args.run, args.images)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"CPU capability {result['cpu_capability']}, {result['threads']} thread(s)")
    for p, r in result["product"].items():
        print(f"5000x200 @ 200x784 {p:8s} {r['gflops']:7.1f} GFLOP/s  max rel. error "
              f"{r['max_relative_error']:.1e}")
    for name, rates in result["training_images_per_second"].items():
        print(f"training, {name}: " + "  ".join(f"{p} {v:.0f}/s" for p, v in rates.items()))
    for p, r in result.get("log_likelihood_k5000", {}).items():
        print(f"K = 5000 log p(x), {p:8s} {r['images_per_second']:.2f} images/s, paired "
              f"difference mean {r['mean_difference']:+.2e} max {r['max_abs_difference']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
