"""The ``vaekit`` command: parse arguments, build a config, make one library call.

User errors (:class:`~vaekit.errors.VaekitError`) print one line and exit with status 2;
anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
from pathlib import Path

from .cli_options import add_train_options, overrides
from .data.dataset import SPLITS
from .distributed import joined_a_process_group
from .errors import ConfigError, TrainingInterrupted, VaekitError
from .latents import INTERPOLATIONS
from .precision import MATMUL_PRECISIONS


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that suggest the closest valid option."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(f"{self.prog}: {message}")

    def unknown_options(self, unknown: list[str]) -> ConfigError:
        """The error for options this (sub)command does not have, with the closest valid one."""
        options = [o for a in self._actions for o in a.option_strings]
        hints = []
        for opt in unknown:
            close = difflib.get_close_matches(opt.split("=")[0], options, n=1)
            if close:
                hints.append(f"did you mean {close[0]}?")
        return ConfigError(f"{self.prog}: unrecognized arguments: {' '.join(unknown)}; "
                           + (" ".join(hints) if hints else f"see `{self.prog} --help`"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vaekit", allow_abbrev=False,
                     description="Train, sample, evaluate and explore Variational Autoencoders.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.subcommands = sub.choices  # name -> sub-parser, for error messages

    p = sub.add_parser("train", allow_abbrev=False, help="train a VAE (default: embedded digits)")
    add_train_options(p)
    p.add_argument("--config", help="TOML or JSON config file (options given here override it)")
    p.add_argument("--out", help="run directory (default: runs/<data>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, default=None,
                   help="train with N processes on this machine (wraps torchrun; global batch "
                        "= --batch-size, split over the processes)")

    p = sub.add_parser("sample", allow_abbrev=False, help="decode samples from the prior")
    p.add_argument("run_dir")
    p.add_argument("--num", type=int, default=None,
                   help="samples (default 64; with --label all: per class, default 8)")
    p.add_argument("--label", help="conditional model: the class to draw (index or name), or "
                                   "'all' for one row per class")
    p.add_argument("--condition", metavar="NAME=VALUE,...",
                   help="model conditioned on --condition-columns: their values in the "
                        "columns' own units (the others at their training mean)")
    p.add_argument("--out", required=True, help=".png grid or .npy array")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draw", action="store_true", help="draw x ~ p(x|z) instead of E[x|z]")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scale the prior's noise by T (default 1: the model's own prior; "
                        "T < 1 gives more typical, less varied samples)")

    for name, help_text in [("reconstruct", "inputs and their reconstructions"),
                            ("encode", "posterior means (or samples) of a data split"),
                            ("evaluate", "ELBO, importance-sampled log p(x) and latent diagnostics")]:
        p = sub.add_parser(name, allow_abbrev=False, help=help_text)
        p.add_argument("run_dir")
        p.add_argument("--data", help="data set or path (default: the run's)")
        p.add_argument("--data-dir")
        p.add_argument("--split", choices=SPLITS, default="test")
        if name == "evaluate":
            p.add_argument("--json", action="store_true", help="print one JSON object")
            p.add_argument("--batch-size", type=int, default=1000)
            p.add_argument("--num-samples", type=int, default=100,
                           help="K importance samples for log p(x) (5000: the paper protocol; "
                                "0: skip)")
            p.add_argument("--num-examples", type=int, default=None,
                           help="evaluate only the first N examples of the split")
            p.add_argument("--spread", action="store_true",
                           help="with --num-examples N: N examples evenly spaced through the "
                                "split, not the first N")
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--device", default="auto",
                           help="auto (default: CUDA when available), cpu, cuda or cuda:N")
            p.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, default="highest",
                           help="float32 matrix products (see vaekit train --help)")
            p.add_argument("--no-progress", action="store_true", help="no progress bar")
        else:
            p.add_argument("--out", required=True)
            p.add_argument("--num", type=int, default=None, help="at most this many examples")
        if name == "reconstruct":
            p.add_argument("--as-label", help="conditional model: decode with this class "
                                              "instead of the true one (the same style, another "
                                              "class)")
        if name == "encode":
            p.add_argument("--samples", type=int, default=0,
                           help="also draw this many z ~ q(z|x) per example (saved as .npz)")
            p.add_argument("--layer", type=int, default=None,
                           help="stochastic layer to encode (1 = next to x; default: the top)")

    p = sub.add_parser("classify", allow_abbrev=False,
                       help="semi-supervised model: predict the classes of a data split")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help=".npy or .csv file of predicted labels")
    p.add_argument("--data", help="data set or path (default: the run's)")
    p.add_argument("--data-dir")
    p.add_argument("--split", choices=SPLITS, default="test")

    p = sub.add_parser("interpolate", allow_abbrev=False, help="decode paths between encodings")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help=".png grid or .npy array")
    p.add_argument("--method", choices=list(INTERPOLATIONS), default="spherical")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--data")
    p.add_argument("--data-dir")

    p = sub.add_parser("report", allow_abbrev=False, help="(re)write a run's report.html")
    p.add_argument("run_dir")
    p.add_argument("--out", help="where to write the page (default: RUN_DIR/report.html)")

    p = sub.add_parser("explore", allow_abbrev=False, help="latent-space explorer in the browser")
    p.add_argument("run_dir")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default loopback only: this machine)")

    p = sub.add_parser("gradients", allow_abbrev=False,
                       help="variance of reparameterized vs score-function gradients")
    p.add_argument("run_dir", nargs="?", help="also measure this run's encoder gradient")
    p.add_argument("--num-samples", type=int, default=1000,
                   help="gradient samples per estimator on RUN_DIR's encoder")
    p.add_argument("--toy-samples", type=int, default=1_000_000,
                   help="gradient samples per estimator on the toy problem")
    p.add_argument("--theta", type=float, default=1.0, help="toy problem q = N(theta, 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="directory for gradient_variance.png (default: RUN_DIR or .)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def cmd_train(args) -> int:
    from .config import RunConfig, load_config_file, merge
    from .training import train
    from .training.launch import launch_torchrun

    if args.nproc is not None:
        return launch_torchrun(args.argv, args.nproc)
    base = load_config_file(args.config) if args.config else RunConfig()
    train(merge(base, overrides(args)), args.out, resume=args.resume,
          progress=not args.no_progress)
    return 0


def _check_count(num: int | None, flag: str = "--num") -> None:
    if num is not None and num <= 0:
        raise ConfigError(f"{flag} must be a positive number of examples")


def cmd_sample(args) -> int:
    import torch

    from .cli_output import save_array_or_grid
    from .run import load

    _check_count(args.num)
    if not (args.temperature > 0 and math.isfinite(args.temperature)):
        raise ConfigError(f"--temperature {args.temperature:g}: it must be a positive number "
                          "(1: the prior itself)")
    run = load(args.run_dir)
    model = run.model
    generator = torch.Generator().manual_seed(args.seed)
    tempered = {"temperature": args.temperature}
    if args.label is not None and args.condition is not None:
        raise ConfigError("--label draws a class, --condition gives covariates: use one of them")
    covariates = model.condition_kind == "covariates"
    if args.condition is not None or (covariates and args.label is None):
        from .cli_conditions import covariate_samples

        x, values = covariate_samples(run, args.condition, args.num, use_mean=not args.draw,
                                      generator=generator, **tempered)
        save_array_or_grid(x, args.out)
        print("given " + ", ".join(f"{name}={value:g}" for name, value in
                                   zip(run.config.data.condition_columns, values)))
        return 0
    if args.label is not None:
        from .cli_conditions import conditional_samples

        x, nrow = conditional_samples(run, args.label, args.num, use_mean=not args.draw,
                                      generator=generator, **tempered)
        if Path(args.out).suffix == ".png":  # a picture: grey levels in [0, 1]
            x = model.to_unit(x)
        save_array_or_grid(x, args.out, nrow=nrow)
        return 0
    num = 64 if args.num is None else args.num
    x = model.sample(num, use_mean=not args.draw, generator=generator, **tempered)
    if Path(args.out).suffix == ".png":  # a picture: grey levels in [0, 1]; an array: data units
        x = model.to_unit(x)
    save_array_or_grid(x, args.out, nrow=min(num, 8) if num <= 64 else None)
    return 0


def cmd_reconstruct(args) -> int:
    from .cli_output import save_array_or_grid
    from .run import load
    from .view.pictures import reconstruction_grid

    _check_count(args.num)
    run = load(args.run_dir)
    if run.model.condition_kind is not None or args.as_label is not None:
        from .cli_conditions import conditional_reconstructions

        x, nrow = conditional_reconstructions(run, args.split, args.data, args.data_dir,
                                              args.num or 32, args.as_label,
                                              grid=Path(args.out).suffix == ".png")
        save_array_or_grid(x, args.out, nrow=nrow)
        return 0
    x, _ = run.split(args.split, args.data, args.data_dir)
    x = x[: args.num or 32]
    if Path(args.out).suffix == ".png":
        per_row = min(8, len(x))
        save_array_or_grid(reconstruction_grid(run.model, x, rows=len(x) // per_row,
                                                per_row=per_row), args.out, nrow=per_row)
    else:
        save_array_or_grid(run.model.reconstruct(x), args.out)
    return 0


def cmd_encode(args) -> int:
    from .run import load
    from .storage import save_arrays

    _check_count(args.num)
    codes = load(args.run_dir).latent_codes(args.split, args.data, args.data_dir, num=args.num,
                                            num_samples=args.samples, layer=args.layer)
    z = codes["mean"]
    save_arrays(args.out, codes if args.samples else {"mean": z})
    print(f"wrote {args.out} ({len(z)} x {z.shape[1]} posterior means"
          + (f", {args.samples} samples each" if args.samples else "") + ")")
    return 0


def cmd_classify(args) -> int:
    from .cli_conditions import classify_split
    from .run import load

    run = load(args.run_dir)
    predicted, labels = classify_split(run, args.split, args.data, args.data_dir, args.out)
    line = f"wrote {args.out} ({len(predicted)} predicted labels"
    if labels is not None:
        error = float((predicted != labels).double().mean())
        line += f"; classification error {100 * error:.2f}% against the split's labels"
    print(line + ")")
    return 0


def cmd_interpolate(args) -> int:
    from .cli_output import save_array_or_grid
    from .run import load
    from .view.pictures import interpolation_grid

    if args.steps < 2 or args.pairs < 1:
        raise ConfigError("--steps must be at least 2 and --pairs at least 1")
    run = load(args.run_dir)
    x, _ = run.split("test", args.data, args.data_dir)
    if len(x) < 2 * args.pairs:
        raise ConfigError(f"--pairs {args.pairs} needs {2 * args.pairs} test examples, have {len(x)}")
    grid = interpolation_grid(run.model, x, args.pairs, args.steps, INTERPOLATIONS[args.method])
    save_array_or_grid(grid, args.out, nrow=args.steps)
    return 0


def cmd_evaluate(args) -> int:
    from .cli_output import evaluation_lines
    from .distributed import is_main_process
    from .run import evaluate

    result = evaluate(args.run_dir, split=args.split, source=args.data, data_dir=args.data_dir,
                      num_samples=args.num_samples, num_examples=args.num_examples,
                      spread=args.spread, batch_size=args.batch_size, seed=args.seed,
                      device=args.device, matmul_precision=args.matmul_precision,
                      progress=not args.no_progress and is_main_process())
    if not is_main_process():  # under torchrun rank 0 prints
        return 0
    if args.json:
        print(json.dumps(result))
        return 0
    saved = args.data is None and args.split == "test"  # the run's own test set: evaluation.json
    print("\n".join(evaluation_lines(result, args.split, args.run_dir, saved=saved)))
    return 0


def _check_output_dir(args: argparse.Namespace) -> None:
    """An output file must go into an existing directory (checked before any work is done)."""
    out = getattr(args, "out", None)
    if args.command != "train" and out and not Path(out).parent.is_dir():
        raise ConfigError(f"--out {out}: directory {Path(out).parent} does not exist; create it first")


def cmd_report(args) -> int:
    from .view.report import write_report

    print(f"wrote {write_report(args.run_dir, out=args.out)}")
    return 0


def cmd_explore(args) -> int:
    from .view.explorer import LOOPBACK, Explorer

    explorer = Explorer(args.run_dir, host=args.host, port=args.port)
    if args.host not in LOOPBACK:
        print(f"warning: listening on {args.host}: other machines that can reach it can use the "
              "explorer", file=sys.stderr)
    print(f"latent explorer at {explorer.url} (Ctrl-C stops it)", flush=True)
    explorer.serve_forever()
    return 0


def cmd_gradients(args) -> int:
    from .view.gradient_report import format_gradient_report, gradient_report

    report = gradient_report(args.run_dir, num_samples=args.num_samples,
                             toy_samples=args.toy_samples, theta=args.theta, out=args.out,
                             seed=args.seed,
                             log=None if args.json else (lambda m: print(m, file=sys.stderr)))
    print(json.dumps(report) if args.json else format_gradient_report(report, args.theta,
                                                                      args.run_dir))
    return 0


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "reconstruct": cmd_reconstruct,
    "encode": cmd_encode,
    "interpolate": cmd_interpolate,
    "classify": cmd_classify,
    "evaluate": cmd_evaluate,
    "report": cmd_report,
    "explore": cmd_explore,
    "gradients": cmd_gradients,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv or ["train"])
        if args.command is None:
            parser.print_help()
            return 0
        if unknown:
            raise parser.subcommands[args.command].unknown_options(unknown)
        _check_output_dir(args)
        args.argv = list(argv)
        return COMMANDS[args.command](args)
    except VaekitError as err:
        print(f"vaekit: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stop:
        print(f"vaekit: {stop}", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130


def run_command() -> None:
    """The ``vaekit`` command (the console script and ``python -m vaekit``): :func:`main`, then
    the process exits with its status.

    A torchrun worker that joined the job's process group exits with ``os._exit`` once its
    output is flushed, skipping the interpreter's teardown. DDP keeps torch's gloo process
    group alive after ``destroy_process_group`` (its three threads, ``pt_gloo_runloop`` twice
    and ``gloo_tcp_loop``, still run after the group is destroyed and every DDP object is
    collected; without DDP they stop), so they reach the interpreter's teardown, and a worker
    of a finished job was once killed there by SIGABRT ("terminate called without an active
    exception"), which torchrun reports as a failed job (which object inside torch aborts was
    not pinned down). By then every file is written (before the ranks' final barrier) and the
    group is destroyed, so nothing is lost by skipping the teardown. The Python API leaves the
    exit to the caller's script."""
    status = main()
    if joined_a_process_group():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if status is None else int(status))
    raise SystemExit(status)
