"""One command per row of the published MNIST log-likelihoods (docs/reproduction.md):

    python benchmarks/reproduce.py ROW --data-dir DIR [--batch-size 100] [--out RUN_DIR]

trains the row's preset (or continues it: the run resumes from its checkpoint after any
interruption), then estimates log p(x) on the 10,000 test images with K = 5000 importance
samples (the papers' L_5000) and prints the result next to the published number. ``--list``
shows the rows. The run directory gets config.json, metrics.jsonl, results.json and
evaluation.json (the small files to keep) and the weights (never committed)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

PRESETS = Path(__file__).resolve().parents[1] / "presets"

NO_PUBLISHED = ("no published number confirmed under this protocol (the VampPrior paper's tables "
                "were not read here); vaekit's own row")
EXEMPLAR_README = ("the VampPrior code rerun in the Exemplar VAE README (Norouzi et al. 2020, "
                   "github.com/sajadn/Exemplar-VAE, density estimation figure)")

# row -> (preset, published test NLL in nats, where the number comes from)
ROWS = {
    "vae-1layer": ("iwae-paper-vae-1layer.toml", 86.76, "Burda et al. 2016, Table 1"),
    "vae-2layer": ("iwae-paper-vae-2layer.toml", 85.33, "Burda et al. 2016, Table 1"),
    "iwae5-1layer": ("iwae-paper-iwae5-1layer.toml", 85.54, "Burda et al. 2016, Table 1"),
    "iwae5-2layer": ("iwae-paper-iwae5-2layer.toml", 83.89, "Burda et al. 2016, Table 1"),
    "vamp-static": ("tomczak-vamp-static.toml", 85.57,
                    "Tomczak & Welling 2018 as quoted in the issue (not checked in the paper)"),
    "normal-static": ("tomczak-normal-static.toml", 88.56,
                      "Tomczak & Welling 2018 as quoted in the issue (not checked in the paper)"),
    "normal-dynamic": ("tomczak-normal-dynamic.toml", 84.45, EXEMPLAR_README),
    "vamp-dynamic": ("tomczak-vamp-dynamic.toml", 82.43, EXEMPLAR_README),
    "hvae-vamp-dynamic": ("tomczak-hvae-vamp-dynamic.toml", 81.56, EXEMPLAR_README),
    # the other data sets of the VampPrior and IWAE papers, the VampPrior code's protocol (the
    # dynamic-MNIST presets on another data set: ROW_DATA); None: no published number confirmed
    "normal-omniglot": ("tomczak-normal-dynamic.toml", 108.34, EXEMPLAR_README),
    "vamp-omniglot": ("tomczak-vamp-dynamic.toml", 106.78, EXEMPLAR_README),
    "normal-fashion-mnist": ("tomczak-normal-dynamic.toml", 228.70, EXEMPLAR_README),
    "vamp-fashion-mnist": ("tomczak-vamp-dynamic.toml", 227.35, EXEMPLAR_README),
    "normal-caltech101": ("tomczak-normal-dynamic.toml", None, NO_PUBLISHED),
    "vamp-caltech101": ("tomczak-vamp-dynamic.toml", None, NO_PUBLISHED),
    "normal-frey-faces": ("tomczak-normal-dynamic.toml", None, NO_PUBLISHED),
    "vamp-frey-faces": ("tomczak-vamp-dynamic.toml", None, NO_PUBLISHED),
}

# Rows whose data differ from their preset's: overrides of the preset's config. Omniglot holds
# out 1,345 of its 24,345 training images for validation, as the VampPrior code does; Caltech
# 101 Silhouettes and Frey faces come with their own splits (docs/data.md), binary and 8-bit
# grey levels (the discretized logistic, the data set's default, for Frey faces).
ROW_DATA = {
    "normal-omniglot": {"data": {"name": "omniglot", "val_fraction": 1345 / 24345}},
    "vamp-omniglot": {"data": {"name": "omniglot", "val_fraction": 1345 / 24345}},
    "normal-fashion-mnist": {"data": {"name": "fashion-mnist"}},
    "vamp-fashion-mnist": {"data": {"name": "fashion-mnist"}},
    "normal-caltech101": {"data": {"name": "caltech101-silhouettes", "binarize": "none"}},
    "vamp-caltech101": {"data": {"name": "caltech101-silhouettes", "binarize": "none"}},
    "normal-frey-faces": {"data": {"name": "frey-faces", "binarize": "none"},
                          "model": {"likelihood": "discretized-logistic"}},
    "vamp-frey-faces": {"data": {"name": "frey-faces", "binarize": "none"},
                        "model": {"likelihood": "discretized-logistic",
                                  # pseudo-inputs start at training faces (grey levels)
                                  "vamp_clip_pseudo_inputs": False,
                                  "vamp_init_from_data": True}},
}


def row_values(row: str) -> dict:
    """The row's config as written: its preset's fields with the row's :data:`ROW_DATA`."""
    import tomllib

    values = tomllib.loads((PRESETS / ROWS[row][0]).read_text())
    for section, fields in ROW_DATA.get(row, {}).items():
        values.setdefault(section, {}).update(fields)
    return values


def machine_description() -> str:
    """The CPU model and core count (or the CUDA device) of this machine, for the table."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{os.cpu_count()}-core CPU ({model}), {torch.get_num_threads()} torch threads"


def row_command(row: str, batch_size: int | None, epochs: int | None,
                matmul_precision: str = "highest") -> str:
    """The command that trains and evaluates ``row`` with these overrides."""
    command = f"python benchmarks/reproduce.py {row} --data-dir DIR"
    if batch_size:
        command += f" --batch-size {batch_size}"
    if epochs:
        command += f" --epochs {epochs}"
    if matmul_precision != "highest":
        command += f" --matmul-precision {matmul_precision}"
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("row", nargs="?", choices=list(ROWS))
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--data-dir", help="folder of the row's data set")
    parser.add_argument("--out", help="run directory (default: runs/reproduce-ROW)")
    parser.add_argument("--batch-size", type=int, help="instead of the paper's (e.g. 100 on a CPU)")
    parser.add_argument("--epochs", type=int, help="a shorter total (the lr schedule and the KL "
                        "warm-up are scaled to it)")
    parser.add_argument("--num-samples", type=int, default=5000, help="K of the test log p(x)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--matmul-precision", choices=("highest", "high", "medium"),
                        default="highest", help="of float32 matrix products, in training and "
                        "evaluation (docs/performance.md)")
    args = parser.parse_args(argv)
    if args.list or args.row is None:
        for row, (preset, nll, source) in ROWS.items():
            number = "  -   " if nll is None else f"{nll:6.2f}"
            print(f"{row:20s} {number}  presets/{preset}  ({source})")
        return 0 if args.list else 2

    import vaekit
    from vaekit.config import load_config_file, merge
    from vaekit.errors import VaekitError

    preset, published, source = ROWS[args.row]
    out = Path(args.out or f"runs/reproduce-{args.row}")
    overrides = {"data": {}, "train": {"device": args.device,
                                       "matmul_precision": args.matmul_precision}}
    if args.data_dir:
        overrides["data"]["data_dir"] = args.data_dir
    if args.batch_size:
        overrides["train"]["batch_size"] = args.batch_size
    if args.epochs:
        overrides["train"]["epochs"] = args.epochs
    try:
        paper = merge(load_config_file(PRESETS / preset), ROW_DATA.get(args.row, {}))
        config = merge(paper, overrides)
        if args.epochs and args.epochs < paper.train.epochs and config.train.kl_warmup_epochs:
            # the KL warm-up keeps its share of the (shortened) run, as the lr schedule does
            share = args.epochs / paper.train.epochs
            warmup = max(1, round(config.train.kl_warmup_epochs * share))
            config = merge(config, {"train": {"kl_warmup_epochs": warmup}})
        if not (out / "results.json").is_file():
            resume = (out / "checkpoint.safetensors").is_file()

            print(("resuming " if resume else "training ") + f"{args.row} in {out}", flush=True)
            vaekit.train(config, out, resume=resume, progress=False)
            import torch  # what the table reports next to the row (the machine that finished it)

            (out / "reproduction-run.json").write_text(json.dumps({
                "row": args.row, "command": row_command(args.row, args.batch_size, args.epochs,
                                                         args.matmul_precision),
                "hardware": machine_description(), "torch_version": torch.__version__},
                indent=1) + "\n")
        result = vaekit.evaluate(out, num_samples=args.num_samples, progress=sys.stderr.isatty(),
                                 matmul_precision=args.matmul_precision)
    except VaekitError as err:
        print(f"reproduce.py: error: {err}", file=sys.stderr)
        return 2
    summary = {"row": args.row, "preset": f"presets/{preset}", "published_nll": published,
               "source": source, "test_nll": -result["log_likelihood"],
               "test_nll_stderr": result["log_likelihood_stderr"],
               "num_samples": result["num_samples"], "test_elbo": result["elbo"],
               "active_units": result["active_units"],
               "active_units_per_layer": result.get("active_units_per_layer")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
