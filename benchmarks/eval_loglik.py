"""Importance-sampled log p(x) throughput: vaekit's ``log_likelihood`` against a straightforward
batched reference written here, and Pythae's ``get_nll`` when Pythae is importable.

Canonical model: MLP 784-400-(20, 20)-400-784, Bernoulli likelihood, N(0, I) prior; K = 5000.
Throughput (test images/s) is measured interleaved in one process, round after round, so the
methods share the machine's load; peak memory (extra resident memory of one evaluation over
the loaded process) in a fresh subprocess per method. Also reports the float32 matmul peak and
the fraction of it the decoder's FLOPs reach.

    python benchmarks/eval_loglik.py [--run-dir RUN] [--data-dir DIR] [--num-images 16]
                                     [--chunks 512,1024,2048,4096] [--rounds 3] [--json]

The measuring functions (``reference_log_likelihood``, ``vaekit_method``, ``throughput``,
``interleaved_throughput``, ``peak_memory_mb``, ``matmul_peak_gflops``) are importable."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Callable

import torch
import torch.nn.functional as F

from vaekit.config import ModelConfig
from vaekit.evaluation import log_likelihood
from vaekit.families import build_model
from vaekit.model import VAE

DATA_SHAPE = (1, 28, 28)
DEFAULT_NUM_SAMPLES = 5000  # the paper protocol (Burda et al. 2016)
Method = Callable[[VAE, torch.Tensor, int], torch.Tensor]  # (model, x, K) -> log p(x) [N]


def canonical_model(run_dir: str | None = None) -> VAE:
    """The trained model of ``run_dir``, else a freshly initialised 784-400-20 MLP VAE
    (throughput does not depend on the weights)."""
    if run_dir:
        from vaekit.run import load

        return load(run_dir).model
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(400,), latent_dim=20, likelihood="bernoulli")
    return build_model(cfg, DATA_SHAPE).eval()


def test_images(num: int, data_dir: str | None = None) -> torch.Tensor:
    """``num`` binarized MNIST test images from ``data_dir``, else random binary images."""
    if data_dir and Path(data_dir).is_dir():
        from vaekit.data import binarize_fixed, load_dataset

        return binarize_fixed(load_dataset("mnist", data_dir, download=False).test[:num], 2)
    g = torch.Generator().manual_seed(0)
    return (torch.rand(num, *DATA_SHAPE, generator=g) < 0.13).float()


@torch.inference_mode()
def reference_log_likelihood(model: VAE, x: torch.Tensor, num_samples: int,
                             images_per_call: int = 1) -> torch.Tensor:
    """A straightforward batched implementation written with plain tensor code: for
    ``images_per_call`` images at a time, all K samples in one decoder call,
    log w = -BCE(logits, x) + log N(z; 0, I) - log N(z; loc, diag(exp(log_var)))."""
    out = []
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    for start in range(0, len(x), images_per_call):
        xb = x[start : start + images_per_call]  # [B, 1, 28, 28]
        loc, log_var = model.encoder.net(xb).chunk(2, dim=-1)  # [B, L]
        std = torch.exp(0.5 * log_var)
        eps = torch.randn(num_samples, *loc.shape)  # [K, B, L]
        z = loc + eps * std
        logits = model.decoder.net(z)  # [K, B, 1, 28, 28]
        log_px_z = -F.binary_cross_entropy_with_logits(
            logits, xb.expand_as(logits), reduction="none").flatten(2).sum(-1)  # [K, B]
        log_pz = (-0.5 * z**2 - half_log_2pi).sum(-1)
        log_qz = (-0.5 * eps**2 - half_log_2pi - 0.5 * log_var).sum(-1)
        out.append(torch.logsumexp(log_px_z + log_pz - log_qz, 0) - math.log(num_samples))
    return torch.cat(out)


def vaekit_method(chunk_size: int | None = None) -> Method:
    """vaekit's log_likelihood with the given decoder chunk (None: its default)."""
    def run(model: VAE, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        return log_likelihood(model, x, num_samples, chunk_size=chunk_size)
    return run


def pythae_method() -> Method | None:
    """Pythae's get_nll on a Pythae VAE carrying the same weights, or None when Pythae is not
    importable (it is not a vaekit dependency)."""
    try:
        from pythae.models import VAE as PythaeVAE  # noqa: F401
        from pythae.models import VAEConfig  # noqa: F401
    except ImportError:
        return None
    from pythae.models import VAE as PythaeVAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self, vae):
            super().__init__()
            self.net = vae.encoder.net

        def forward(self, x):
            loc, log_var = self.net(x).chunk(2, dim=-1)
            return ModelOutput(embedding=loc, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self, vae):
            super().__init__()
            self.net = vae.decoder.net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    def run(model: VAE, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        cfg = VAEConfig(input_dim=DATA_SHAPE, latent_dim=model.latent_dim,
                        reconstruction_loss="bce")
        pythae_vae = PythaeVAE(cfg, encoder=Encoder(model), decoder=Decoder(model)).eval()
        with torch.no_grad():
            nll = pythae_vae.get_nll(x, n_samples=num_samples, batch_size=num_samples)
        return torch.full((len(x),), -float(nll))
    return run


def throughput(method: Method, model: VAE, x: torch.Tensor, num_samples: int) -> float:
    """Images per second of one evaluation of ``x``."""
    start = time.perf_counter()
    method(model, x, num_samples)
    return len(x) / (time.perf_counter() - start)


def interleaved_throughput(methods: dict[str, Method], model: VAE, x: torch.Tensor,
                           num_samples: int, rounds: int = 3) -> dict[str, float]:
    """Median images/s of each method over ``rounds``; within a round the methods run one
    after another, so a change in the machine's load hits all of them alike."""
    for method in methods.values():  # warm-up: allocator, thread pool, first-call costs
        method(model, x[:1], num_samples)
    results: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(rounds):
        for name, method in methods.items():
            results[name].append(throughput(method, model, x, num_samples))
    return {name: median(values) for name, values in results.items()}


def peak_memory_mb(name: str, num_samples: int, chunk_size: int | None = None) -> float:
    """Extra peak resident memory (MiB) of evaluating 2 images with method ``name``
    ("reference" or "vaekit"), measured in a fresh subprocess over its loaded baseline."""
    cmd = [sys.executable, __file__, "--memory-of", name, "--num-samples", str(num_samples)]
    if chunk_size:
        cmd += ["--chunk", str(chunk_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _memory_child(name: str, num_samples: int, chunk_size: int | None) -> None:
    model = canonical_model()
    x = test_images(2)
    method = reference_log_likelihood if name == "reference" else vaekit_method(chunk_size)
    method(model, x[:1], 2)  # loads every code path at negligible size
    print(extra_peak_mb(lambda: method(model, x, num_samples)))


def extra_peak_mb(run: Callable[[], object]) -> float | None:
    """Peak resident memory of ``run()`` above the process's resident memory before it (MiB).
    Linux: writing 5 to /proc/self/clear_refs resets the peak (VmHWM) to the current resident
    size, so the peak of imports and set-up does not hide the call's own. None elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = _status_kib("VmHWM")
    run()
    return (_status_kib("VmHWM") - before) / 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (peak memory needs Linux)")


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of an n x n matmul (2 n^3 FLOPs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def decoder_flops_per_image(model: VAE, num_samples: int) -> float:
    """Multiply-add FLOPs of the decoder's linear layers for K samples of one image."""
    linears = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    return num_samples * sum(2 * m.in_features * m.out_features for m in linears)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir")
    parser.add_argument("--data-dir", default="/work/shared/data/mnist")
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES)
    parser.add_argument("--chunks", default="512,1024,2048,4096",
                        help="vaekit decoder chunk sizes to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_of:
        _memory_child(args.memory_of, args.num_samples, args.chunk)
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    model = canonical_model(args.run_dir)
    x = test_images(args.num_images, args.data_dir)
    chunks = [int(c) for c in args.chunks.split(",") if c]
    methods: dict[str, Method] = {"reference": reference_log_likelihood,
                                  "vaekit default": vaekit_method()}
    methods.update({f"vaekit chunk={c}": vaekit_method(c) for c in chunks})
    pythae = pythae_method()
    if pythae is not None:
        methods["pythae get_nll"] = pythae
    peak = matmul_peak_gflops()
    rates = interleaved_throughput(methods, model, x, args.num_samples, args.rounds)
    flops = decoder_flops_per_image(model, args.num_samples)
    report = {
        "num_samples": args.num_samples, "num_images": args.num_images,
        "threads": torch.get_num_threads(), "matmul_peak_gflops": peak,
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "pythae": "measured" if pythae is not None else "not importable (skipped)",
        "methods": {},
    }
    for name, rate in rates.items():
        entry = {"images_per_s": rate, "vs_reference": rate / rates["reference"],
                 "decoder_fraction_of_matmul_peak": rate * flops / 1e9 / peak}
        report["methods"][name] = entry
    if not args.no_memory:
        report["methods"]["reference"]["peak_mb"] = peak_memory_mb("reference", args.num_samples)
        report["methods"]["vaekit default"]["peak_mb"] = peak_memory_mb("vaekit", args.num_samples)
        for c in chunks:
            report["methods"][f"vaekit chunk={c}"]["peak_mb"] = peak_memory_mb(
                "vaekit", args.num_samples, c)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"K={args.num_samples}, {args.num_images} images, {report['threads']} threads, "
          f"matmul peak {peak:.0f} GFLOP/s, pythae: {report['pythae']}")
    print(f"{'method':<22}{'images/s':>10}{'x ref':>8}{'% peak':>8}{'peak MiB':>10}")
    for name, e in report["methods"].items():
        mem = f"{e['peak_mb']:10.1f}" if "peak_mb" in e else f"{'':>10}"
        print(f"{name:<22}{e['images_per_s']:10.2f}{e['vs_reference']:8.2f}"
              f"{100 * e['decoder_fraction_of_matmul_peak']:8.1f}{mem}")


if __name__ == "__main__":
    main()
