"""Priors x posteriors on MNIST: trains every preset in presets/ with the same architecture and
budget and writes a markdown table (test ELBO, importance-sampled log-likelihood, wall-clock
time) to docs/priors-results-<data>.md.

    python benchmarks/priors_table.py --data-dir ../shared/data/mnist --epochs 10 \
        --num-test 2000 --num-samples 1000
    python benchmarks/priors_table.py --data binarized-mnist --binarize none \
        --data-dir ../shared/data/binarized-mnist --epochs 10 --num-test 2000 --num-samples 1000

log p(x) ~ log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x) (Burda et al. 2016), by
``vaekit.evaluation.log_likelihood`` (chunks of log-weights, one logsumexp). Rows already
finished (table_row.json in the run directory) and trainings already done (train_seconds.json)
are reused, so an interrupted table can be completed."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import torch

import vaekit
from vaekit.config import load_config_file, merge
from vaekit.evaluation import evaluate_elbo, log_likelihood
from vaekit.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["normal-gaussian", "mog-gaussian", "vamp-gaussian", "flow-gaussian",
           "normal-full", "normal-planar", "normal-iaf", "vamp-full"]


def random_test_subset(x: torch.Tensor, num: int, seed: int) -> torch.Tensor:
    """``num`` test examples drawn at random with a fixed seed (a prefix would be biased: the
    statically binarized MNIST test set is sorted by label)."""
    if num >= len(x):
        return x
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:num]]


def run_one(name: str, args) -> dict:
    run_dir = Path(args.runs) / name
    result_file, train_file = run_dir / "table_row.json", run_dir / "train_seconds.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    config = merge(load_config_file(ROOT / "presets" / f"{name}.toml"),
                   {"data": {"name": args.data, "data_dir": args.data_dir, "download": False,
                             **({"binarize": args.binarize} if args.binarize else {})},
                    "train": {"epochs": args.epochs, "seed": args.seed}})
    if not train_file.exists():  # not trained, or interrupted: train (again)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.perf_counter()
        Trainer(config, run_dir, progress=False).fit()
        train_file.write_text(json.dumps(time.perf_counter() - start))
    run = vaekit.load(run_dir)
    model = run.model
    x, _ = run.split("test")
    x = random_test_subset(x, args.num_test, args.seed)
    start = time.perf_counter()
    elbo = evaluate_elbo(model, x, batch_size=500)["elbo"]
    ll = log_likelihood(model, x, num_samples=args.num_samples, seed=args.seed)
    row = {"name": name, "prior": model.config.model.prior,
           "posterior": model.config.model.posterior, "elbo": elbo, "log_likelihood": float(ll.mean()),
           "ll_sem": float(ll.std() / math.sqrt(len(ll))),
           "elbo_all_test": json.loads((run_dir / "results.json").read_text())["elbo"],
           "train_seconds": json.loads(train_file.read_text()),
           "eval_seconds": time.perf_counter() - start,
           "num_parameters": sum(p.numel() for p in model.parameters())}
    result_file.write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--data-dir", default="/work/shared/data/mnist")
    parser.add_argument("--binarize", default=None,
                        help="override the presets' binarization (none for binarized-mnist)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs/priors-table")
    parser.add_argument("--presets", nargs="*", default=PRESETS)
    parser.add_argument("--out", help="markdown file (default docs/priors-results-<data>.md)")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: tabulate the runs already finished")
    args = parser.parse_args()
    if args.table_only:
        done = [Path(args.runs) / n / "table_row.json" for n in args.presets]
        rows = [json.loads(f.read_text()) for f in done if f.exists()]
    else:
        rows = [run_one(name, args) for name in args.presets]
    lines = [
        f"data {args.data}, {args.epochs} epochs, test = {args.num_test} test images drawn at "
        f"random (seed {args.seed}), "
        f"log p(x) with K = {args.num_samples} importance samples (nats, higher is better; "
        f"+- one standard error over images), seed {args.seed}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads",
        "",
        "| preset | prior | posterior | test ELBO | test log p(x) | gap | ELBO, all test | "
        "train time | params |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| `{r['name']}` | {r['prior']} | {r['posterior']} | {r['elbo']:.2f} | "
                     f"{r['log_likelihood']:.2f} +- {r['ll_sem']:.2f} | "
                     f"{r['log_likelihood'] - r['elbo']:.2f} | {r['elbo_all_test']:.2f} | "
                     f"{r['train_seconds']:.0f} s | "
                     f"{r['num_parameters']:,} |")
    out = args.out or ROOT / "docs" / f"priors-results-{args.data}.md"
    Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
