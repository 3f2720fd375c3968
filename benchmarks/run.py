"""vaekit performance benchmark: ratios against reference loops measured side by side.

    python benchmarks/run.py            # full run (2-6 minutes on 2 cores, compilation included)
    python benchmarks/run.py --quick    # a few minutes
    python benchmarks/run.py --json     # one JSON object with a "ratios" entry
    python benchmarks/run.py --no-compile --no-eval   # eager training loops only

Every competitor runs in this process, interleaved round by round (A B C A B C ...), and the
median throughput per competitor is reported, so the ratios hold on a noisy, shared machine.
Models: the canonical 784-400-20 MLP VAE (ReLU, Bernoulli likelihood with dynamic binarization,
Adam 1e-3, batch 128) and vaekit's convolutional VAE on 1x28x28, trained on MNIST read from
../shared/data/mnist (or --data-dir). The MLP also runs on the fast path (torch.compile) against
the tight loop compiled alike. Then the importance-sampled log p(x) at K = 5000 against a
batched reference and Pythae's get_nll (benchmarks/eval_loglik.py). Also reported: GFLOP/s as a
fraction of the float32 matmul peak measured here, and extra peak memory of each loop."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import vaekit  # noqa: E402
from vaekit.config import RunConfig, merge  # noqa: E402
from vaekit.data import Dataset, load_dataset  # noqa: E402
from vaekit.nets import ConvDecoderNet, ConvEncoderNet  # noqa: E402
from vaekit.training import Trainer  # noqa: E402

import eval_loglik as ev  # noqa: E402  (beside this file)
from eval_loglik import extra_peak_mb  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "mnist"
BATCH = 128


# -- machine ------------------------------------------------------------------------------
def matmul_peak_gflops(n: int = 2048, seconds: float = 2.0) -> float:
    """Measured float32 matmul throughput: 2 n^3 FLOP per n x n product, best of several."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def flops_per_image(step: Callable[[torch.Tensor], None], x: torch.Tensor) -> float:
    """FLOPs of one forward + backward step counted by torch's FlopCounterMode, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(x)
    return counter.get_total_flops() / len(x)


# -- reference implementations (written here, independent of vaekit's loop) -----------------
class ReferenceMLPVAE(nn.Module):
    """The canonical 784-400-20 VAE of the PyTorch examples, returning logits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.fc4(F.relu(self.fc3(z))).view_as(x), mu, logvar


class ReferenceConvVAE(nn.Module):
    """vaekit's conv encoder/decoder networks with the loss written out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.dec = ConvEncoderNet((1, 28, 28), 40), ConvDecoderNet(20, (1, 28, 28))

    def forward(self, x):
        mu, logvar = self.enc(x).chunk(2, -1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(z), mu, logvar


def reference_loss(model, x, logits_form=True):
    out, mu, logvar = model(x)
    if logits_form:
        rec = F.binary_cross_entropy_with_logits(out, x, reduction="sum")
    else:  # the PyTorch example: sigmoid, then BCE on probabilities
        rec = F.binary_cross_entropy(torch.sigmoid(out), x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return (rec + kld) / len(x)


def make_tight_loop(model_cls, x_all: torch.Tensor, fast: bool = False):
    """Data preloaded as one tensor, shuffled index slicing, plain Adam, no DataLoader. With
    ``fast``: fused Adam and the loss (forward and backward) under torch.compile."""
    model = model_cls()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fast or None)
    loss_fn = torch.compile(reference_loss) if fast else reference_loss

    def run(num_images: int) -> None:
        perm = torch.randperm(len(x_all))[:num_images]
        for i in range(0, num_images, BATCH):
            x = x_all[perm[i : i + BATCH]]
            x = (torch.rand_like(x) < x).float()
            loss = loss_fn(model, x)
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run, model


def make_dataloader_loop(model_cls, x_all: torch.Tensor):
    """The official PyTorch VAE example's style: DataLoader over a TensorDataset, shuffle,
    sigmoid + BCE on probabilities, .item() every step for the running loss."""
    model = model_cls()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader_data = torch.utils.data.TensorDataset(x_all)

    def run(num_images: int) -> None:
        subset = torch.utils.data.Subset(loader_data, torch.randperm(len(x_all))[:num_images].tolist())
        loader = torch.utils.data.DataLoader(subset, batch_size=BATCH, shuffle=True)
        train_loss = 0.0
        for (x,) in loader:
            x = (torch.rand_like(x) < x).float()
            loss = reference_loss(model, x, logits_form=False)
            opt.zero_grad()
            loss.backward()
            train_loss += loss.item()
            opt.step()

    return run, model


def make_vaekit_loop(arch: str, dataset: Dataset, **train_options):
    """vaekit's own Trainer, timing whole epochs of its loop over ``num_images`` examples."""
    config = merge(RunConfig(), {"data": {"name": "mnist"},
                                 "model": {"arch": arch, "hidden": (400,), "latent_dim": 20},
                                 "train": {"epochs": 1, "batch_size": BATCH, **train_options}})
    cache: dict[int, Trainer] = {}

    def run(num_images: int) -> None:
        if num_images not in cache:
            subset = Dataset(dataset.name, dataset.train[:num_images], dataset.val[:BATCH],
                             dataset.test[:BATCH], None, None, None, dataset.value_kind, True)
            cache[num_images] = Trainer(config, "/tmp/vaekit-bench", dataset=subset,
                                        progress=False, log=lambda m: None)
        trainer = cache[num_images]
        trainer.train_epoch()  # the training part of one whole epoch, as fit() runs it

    return run


def pythae_loop(arch: str, x_all: torch.Tensor):
    """Pythae's VAE + BaseTrainer (its own DataLoader-based ``train_step``) on the same MLP
    architecture, when Pythae is installed (``pip install pythae``); None otherwise. Pythae has no
    dynamic binarization, so it gets data binarized once (slightly less work than the others)."""
    if arch != "mlp":
        return None  # the conv comparison would need Pythae-specific conv nets; MLP only
    try:
        import logging

        from pythae.data.datasets import BaseDataset
        from pythae.models import VAE, VAEConfig
        from pythae.models.base.base_utils import ModelOutput
        from pythae.models.nn import BaseDecoder, BaseEncoder
        from pythae.trainers import BaseTrainer, BaseTrainerConfig
    except ImportError:
        return None
    logging.getLogger("pythae").setLevel(logging.WARNING)

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)

        def forward(self, x):
            h = F.relu(self.fc1(x.reshape(-1, 784)))
            return ModelOutput(embedding=self.fc21(h), log_covariance=self.fc22(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def forward(self, z):
            x = torch.sigmoid(self.fc4(F.relu(self.fc3(z))))
            return ModelOutput(reconstruction=x.reshape(-1, 1, 28, 28))

    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce"),
                encoder=Encoder(), decoder=Decoder())
    x_bin = (torch.rand_like(x_all) < x_all).float()
    trainers: dict[int, object] = {}

    def run(num_images: int) -> None:
        if num_images not in trainers:
            config = BaseTrainerConfig(output_dir="/tmp/vaekit-bench-pythae", num_epochs=1,
                                       per_device_train_batch_size=BATCH, learning_rate=1e-3,
                                       no_cuda=True)
            data = BaseDataset(x_bin[:num_images], torch.zeros(num_images))
            trainer = BaseTrainer(model, train_dataset=data, training_config=config)
            trainer.prepare_training()
            trainers[num_images] = trainer
        trainers[num_images].train_step(epoch=1)

    return run


# -- measurement ---------------------------------------------------------------------------
def interleaved(competitors: dict[str, Callable[[int], None]], num_images: int, rounds: int
                ) -> tuple[dict[str, float], dict[str, float | None]]:
    """Median images/s of each competitor over ``rounds`` interleaved rounds, after a warm-up
    round on the same work, and the extra peak memory of that warm-up round (MiB)."""
    memory = {name: extra_peak_mb(lambda run=run: run(num_images))  # set-up, compilation
              for name, run in competitors.items()}
    times: dict[str, list[float]] = {name: [] for name in competitors}
    for _ in range(rounds):
        for name, run in competitors.items():
            start = time.perf_counter()
            run(num_images)
            times[name].append(num_images / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in times.items()}, memory


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def training_section(args, dataset: Dataset, peak: float, log) -> dict[str, dict]:
    """Training throughput of every competitor, interleaved; MLP and conv."""
    x_all = dataset.train
    num_images, rounds = (6400, 3) if args.quick else (25600, 5)
    results: dict[str, dict] = {}
    for arch, model_cls in [("mlp", ReferenceMLPVAE), ("conv", ReferenceConvVAE)]:
        tight, tight_model = make_tight_loop(model_cls, x_all)
        loader, _ = make_dataloader_loop(model_cls, x_all)
        competitors = {
            f"{arch}/vaekit": make_vaekit_loop(arch, dataset),
            f"{arch}/tight": tight,
            f"{arch}/dataloader": loader,
        }
        if arch == "mlp" and not args.no_compile:
            # the fast path: torch.compile of the loss (fused Adam and the logits-form
            # likelihood are already the default), against the tight loop given the same help
            competitors[f"{arch}/vaekit-compiled"] = make_vaekit_loop(arch, dataset, compile=True)
            competitors[f"{arch}/tight-compiled"] = make_tight_loop(model_cls, x_all, fast=True)[0]
        pythae = pythae_loop(arch, x_all)
        if pythae is not None:
            competitors[f"{arch}/pythae"] = pythae
        n = num_images if arch == "mlp" else num_images // 4
        speeds, memory = interleaved(competitors, n, rounds)

        def one_step(x, model=tight_model):
            reference_loss(model, x).backward()

        flops = flops_per_image(one_step, (x_all[:BATCH] > 0.5).float())
        for name, speed in speeds.items():
            gflops = speed * flops / 1e9
            results[name] = {"images_per_second": speed, "gflops": gflops,
                             "fraction_of_peak": gflops / peak, "extra_peak_mb": memory[name]}
            mem = "" if memory[name] is None else f"  {memory[name]:6.1f} MiB"
            log(f"{name:22s} {speed:9.0f} images/s  {gflops:6.1f} GFLOP/s  "
                f"{100 * gflops / peak:5.1f}% of peak{mem}")
    return results


def evaluation_section(args, peak: float, log) -> dict[str, dict]:
    """Importance-sampled log p(x) at K = 5000 (benchmarks/eval_loglik.py's methods):
    vaekit's log_likelihood, the batched reference, Pythae's get_nll when installed."""
    model = ev.canonical_model()
    x = ev.test_images(4 if args.quick else 16, args.data_dir)
    k = ev.DEFAULT_NUM_SAMPLES
    methods = {"eval/vaekit": ev.vaekit_method(), "eval/reference": ev.reference_log_likelihood}
    pythae = ev.pythae_method()
    if pythae is not None:
        methods["eval/pythae"] = pythae
    rates = ev.interleaved_throughput(methods, model, x, k, rounds=2 if args.quick else 3)
    flops = ev.decoder_flops_per_image(model, k)
    results = {}
    for name, rate in rates.items():
        results[name] = {"images_per_second": rate, "fraction_of_peak": rate * flops / 1e9 / peak}
        log(f"{name:22s} {rate:9.1f} images/s (K={k})  {100 * rate * flops / 1e9 / peak:5.1f}% of "
            "peak in the decoder")
    if not args.no_memory:
        for name, kind in (("eval/vaekit", "vaekit"), ("eval/reference", "reference")):
            results[name]["extra_peak_mb"] = ev.peak_memory_mb(kind, k)
        # bounded by the chunk, not by K: the same evaluation with 4 times the samples
        results["eval/vaekit"]["extra_peak_mb_4k"] = ev.peak_memory_mb("vaekit", 4 * k)
        log(f"evaluation peak memory (2 images): vaekit {results['eval/vaekit']['extra_peak_mb']:.1f}"
            f" MiB at K={k}, {results['eval/vaekit']['extra_peak_mb_4k']:.1f} MiB at K={4 * k}; "
            f"reference {results['eval/reference']['extra_peak_mb']:.1f} MiB at K={k}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and images")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the torch.compile fast path (about a minute of compilation)")
    parser.add_argument("--no-eval", action="store_true", help="skip the log p(x) evaluation")
    parser.add_argument("--no-train", action="store_true", help="skip the training loops")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the evaluation's peak-memory subprocesses")
    args = parser.parse_args(argv)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else \
        (lambda *a: print(*a, flush=True))

    dataset = load_dataset("mnist", args.data_dir)
    peak = matmul_peak_gflops()
    log(f"float32 matmul peak: {peak:.0f} GFLOP/s ({torch.get_num_threads()} threads)")
    results = {} if args.no_train else training_section(args, dataset, peak, log)
    if not args.no_eval:
        results.update(evaluation_section(args, peak, log))

    def ratio(a: str, b: str) -> float | None:
        if a in results and b in results:
            return results[a]["images_per_second"] / results[b]["images_per_second"]
        return None

    ratios = {
        "trainer_vs_tight": ratio("mlp/vaekit", "mlp/tight"),
        "trainer_vs_dataloader": ratio("mlp/vaekit", "mlp/dataloader"),
        "trainer_vs_pythae": ratio("mlp/vaekit", "mlp/pythae"),
        "fast_vs_tight_compiled": ratio("mlp/vaekit-compiled", "mlp/tight-compiled"),
        "fast_vs_dataloader": ratio("mlp/vaekit-compiled", "mlp/dataloader"),
        "fast_vs_pythae": ratio("mlp/vaekit-compiled", "mlp/pythae"),
        "conv_trainer_vs_tight": ratio("conv/vaekit", "conv/tight"),
        "conv_trainer_vs_dataloader": ratio("conv/vaekit", "conv/dataloader"),
        "eval_vs_reference": ratio("eval/vaekit", "eval/reference"),
        "eval_vs_pythae": ratio("eval/vaekit", "eval/pythae"),
    }
    fractions = {name: r["fraction_of_peak"] for name, r in results.items()}
    report = {
        "date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "quick": args.quick, "matmul_peak_gflops": peak, "results": results, "ratios": ratios,
        "fraction_of_peak": fractions, "peak_rss_mb": peak_rss_mb(),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print("\nratios (same run):")
        for k, v in ratios.items():
            print(f"  {k:28s} {'n/a (not measured or not installed)' if v is None else f'{v:.2f}x'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
