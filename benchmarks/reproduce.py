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
}


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


def row_command(row: str, batch_size: int | None, epochs: int | None) -> str:
    """The command that trains and evaluates ``row`` with these overrides."""
    command = f"python benchmarks/reproduce.py {row} --data-dir DIR"
    if batch_size:
        command += f" --batch-size {batch_size}"
    if epochs:
        command += f" --epochs {epochs}"
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
    args = parser.parse_args(argv)
    if args.list or args.row is None:
        for row, (preset, nll, source) in ROWS.items():
            print(f"{row:15s} {nll:6.2f}  presets/{preset}  ({source})")
        return 0 if args.list else 2

    import vaekit
    from vaekit.config import load_config_file, merge
    from vaekit.errors import VaekitError

    preset, published, source = ROWS[args.row]
    out = Path(args.out or f"runs/reproduce-{args.row}")
    overrides = {"data": {}, "train": {"device": args.device}}
    if args.data_dir:
        overrides["data"]["data_dir"] = args.data_dir
    if args.batch_size:
        overrides["train"]["batch_size"] = args.batch_size
    if args.epochs:
        overrides["train"]["epochs"] = args.epochs
    try:
        paper = load_config_file(PRESETS / preset)
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
                "row": args.row, "command": row_command(args.row, args.batch_size, args.epochs),
                "hardware": machine_description(), "torch_version": torch.__version__},
                indent=1) + "\n")
        result = vaekit.evaluate(out, num_samples=args.num_samples, progress=sys.stderr.isatty())
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
