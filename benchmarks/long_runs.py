"""The project's long runs: a queue of named reproduction runs, trained in the background one
per core and resumed wherever they stopped.

    python benchmarks/long_runs.py start     # launch or resume every unfinished run
    python benchmarks/long_runs.py status    # epoch, last validation bound, epochs/hour, time left
    python benchmarks/long_runs.py collect   # finished runs -> docs/reproduction.md and .json
    python benchmarks/long_runs.py stop      # interrupt the workers (each run keeps its checkpoint)

The queue is ``benchmarks/long_runs.toml``: ``[[run]]`` tables with a ``name``, the ``row`` of
``benchmarks/reproduce.py`` it measures and optional ``batch_size`` / ``epochs`` overrides, in the
order they are taken. ``start`` launches one worker per core (``--workers``), each a process of
its own session at the lowest priority (``nice -n 19``) with one thread
(``OMP_NUM_THREADS=1``). A worker takes the first unfinished run that no other worker holds and
runs ``benchmarks/reproduce.py ROW --out ROOT/NAME``: it trains (checkpointing every epoch,
resuming exactly from the checkpoint when there is one) and then estimates log p(x) with
K = 5000 on the 10,000 test images. Then it takes the next run, until none is left.

ROOT is outside the work tree (``--root``, default ``../runs`` beside the repository, or
``$VAEKIT_LONG_RUNS``); the data sets come from ``--data-root`` (default ``../shared/data``),
one folder per data set name. A run whose directory is gone starts again from zero by itself,
and the workers' log (``ROOT/events.log``) says so. Locks are ``flock`` locks on files in ROOT,
so a worker that died holds nothing."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
QUEUE = HERE / "long_runs.toml"
DEFAULT_ROOT = Path(os.environ.get("VAEKIT_LONG_RUNS", REPO.parent / "runs"))
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
DONE = "long-run-done.json"  # written by the worker once the run is trained and evaluated
FAILED = "long-run-failed.json"  # the run's command failed: not taken again until removed

sys.path.insert(0, str(HERE))
from reproduce import ROWS, row_values  # noqa: E402


def read_queue(path: Path | None = None) -> list[dict]:
    """The queue's runs in order (of ``path``, default :data:`QUEUE`), each checked: a unique
    name, a row of reproduce.py."""
    path = path or QUEUE
    runs = tomllib.loads(path.read_text()).get("run", [])
    names = set()
    for run in runs:
        unknown = set(run) - {"name", "row", "batch_size", "epochs", "matmul_precision", "note"}
        if unknown or "name" not in run or run.get("row") not in ROWS:
            raise SystemExit(f"long_runs.py: error: {path.name}: bad entry {run} (needs name and "
                             f"a row of reproduce.py; optional batch_size, epochs, "
                             "matmul_precision, note)")
        if run["name"] in names:
            raise SystemExit(f"long_runs.py: error: {path.name}: '{run['name']}' is queued twice")
        names.add(run["name"])
    return runs


def preset_of(run: dict) -> dict:
    """The run's row's config as written (its preset with the row's data)."""
    return row_values(run["row"])


def command_of(run: dict, root: Path, data_root: Path) -> list[str]:
    """reproduce.py's command line for ``run`` (its data folder is named after the data set)."""
    data_dir = data_root / preset_of(run)["data"]["name"]
    command = [sys.executable, str(HERE / "reproduce.py"), run["row"], "--data-dir", str(data_dir),
               "--out", str(root / run["name"])]
    for key in ("batch_size", "epochs", "matmul_precision"):
        if key in run:
            command += [f"--{key.replace('_', '-')}", str(run[key])]
    return command


def try_lock(path: Path):
    """An exclusive flock on ``path`` (created), or None when another process holds it."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def is_locked(path: Path) -> bool:
    if not path.exists():
        return False
    handle = try_lock(path)
    if handle is None:
        return True
    handle.close()
    return False


def log_event(root: Path, message: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    with open(root / "events.log", "a") as log:
        log.write(f"{stamp}  {message}\n")


def work(root: Path, data_root: Path, slot: int) -> int:
    """A worker: take unfinished, unheld runs in queue order until none is left."""
    slot_lock = try_lock(root / f"worker-{slot}.lock")
    if slot_lock is None:
        return 0
    slot_lock.truncate(0)
    slot_lock.write(str(os.getpid()))
    slot_lock.flush()
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        for run in read_queue():
            out = root / run["name"]
            if (out / DONE).exists() or (out / FAILED).exists():
                continue
            run_lock = try_lock(root / f"{run['name']}.lock")
            if run_lock is None:
                continue
            break
        else:
            log_event(root, f"worker {slot}: nothing left to run")
            return 0
        with run_lock:
            fresh = not (out / "checkpoint.safetensors").exists() and not (out / "weights.safetensors").exists()
            log_event(root, f"worker {slot}: {'starting' if fresh else 'resuming'} {run['name']}"
                      + (" from zero (no checkpoint in its directory)" if fresh else ""))
            started = time.time()
            command = command_of(run, root, data_root)
            with open(root / f"{run['name']}.log", "a") as log:
                child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
                # SIGTERM to the worker is passed on: vaekit checkpoints and stops cleanly
                signal.signal(signal.SIGTERM, lambda *_: (stop(None, None), child.terminate()))
                code = child.wait()
                signal.signal(signal.SIGTERM, stop)
            record = {"name": run["name"], "row": run["row"], "command": command[1:],
                      "return_code": code, "seconds_this_attempt": round(time.time() - started)}
            if stopping:
                log_event(root, f"worker {slot}: stopped {run['name']} (resumable)")
            elif code == 0:
                (out / DONE).write_text(json.dumps(record, indent=1) + "\n")
                log_event(root, f"worker {slot}: finished {run['name']}")
            else:
                out.mkdir(parents=True, exist_ok=True)
                (out / FAILED).write_text(json.dumps(record, indent=1) + "\n")
                log_event(root, f"worker {slot}: {run['name']} failed with exit {code}; see "
                          f"{run['name']}.log, remove {FAILED} to retry")
    return 0


def start(root: Path, data_root: Path, workers: int) -> int:
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    launched = 0
    for slot in range(workers):
        if is_locked(root / f"worker-{slot}.lock"):
            print(f"worker {slot}: already running")
            continue
        with open(root / f"worker-{slot}.out", "a") as out:
            subprocess.Popen(["nice", "-n", "19", sys.executable, str(Path(__file__).resolve()),
                              "work", "--slot", str(slot), "--root", str(root),
                              "--data-root", str(data_root)],
                             stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                             start_new_session=True)
        launched += 1
        print(f"worker {slot}: started")
    print(f"runs in {root}; follow them with: python benchmarks/long_runs.py status")
    return 0


def read_metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def status(root: Path) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `status | head` ends quietly
    print(f"{'run':28s} {'state':9s} {'epoch':>11s} {'val bound':>10s} {'best':>10s} "
          f"{'ep/hour':>8s} {'left':>7s}")
    for run in read_queue():
        out = root / run["name"]
        metrics = read_metrics(out)
        max_epochs = run.get("epochs") or preset_of(run)["train"]["epochs"]
        if (out / DONE).exists():
            state = "done"
        elif (out / FAILED).exists():
            state = "failed"
        elif is_locked(root / f"{run['name']}.lock"):
            state = "running"
        else:
            state = "queued"
        epoch = metrics[-1]["epoch"] if metrics else 0
        if metrics and (out / "results.json").exists() and state != "done":
            state = "evaluating" if state == "running" else state
        last = metrics[-1].get("val_bound", metrics[-1].get("val_elbo")) if metrics else None
        best = max((m.get("val_bound", m.get("val_elbo")) for m in metrics), default=None)
        recent = [m["seconds"] for m in metrics[-20:] if "seconds" in m]
        per_epoch = sum(recent) / len(recent) if recent else None
        if (out / "results.json").exists() or state == "done":
            left = "0"
        elif per_epoch:
            left = f"<={(max_epochs - epoch) * per_epoch / 3600:.1f} h" if preset_of(run)["train"].get(
                "early_stopping") else f"{(max_epochs - epoch) * per_epoch / 3600:.1f} h"
        else:
            left = "?"
        number = lambda value: "-" if value is None else f"{value:.2f}"  # noqa: E731
        rate = f"{3600 / per_epoch:.0f}" if per_epoch else "-"
        print(f"{run['name']:28s} {state:9s} {epoch:>5d}/{max_epochs:<5d} {number(last):>10s} "
              f"{number(best):>10s} {rate:>8s} {left:>7s}")
    events = root / "events.log"
    if events.is_file():
        print("\nlast events:")
        for line in events.read_text().splitlines()[-5:]:
            print("  " + line)
    return 0


def stop(root: Path) -> int:
    for lock in sorted(root.glob("worker-*.lock")):
        if is_locked(lock):
            pid = int(lock.read_text().strip() or 0)
            if pid:
                os.kill(pid, signal.SIGTERM)
                print(f"{lock.stem}: asked to stop (pid {pid}); its run keeps its checkpoint")
    return 0


def collect(root: Path, docs: Path) -> int:
    finished = [root / run["name"] for run in read_queue() if (root / run["name"] / DONE).exists()]
    if not finished:
        print("no finished runs yet")
        return 0
    return subprocess.call([sys.executable, str(HERE / "reproduction_table.py"),
                            *map(str, finished), "--docs", str(docs)], cwd=REPO)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "status", "collect", "stop", "work"))
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the runs live")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--slot", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args(argv)
    read_queue()  # a broken queue file is an error before anything starts
    root = args.root.resolve()
    if args.action == "start":
        return start(root, args.data_root.resolve(), args.workers)
    if args.action == "work":
        return work(root, args.data_root.resolve(), args.slot)
    if args.action == "stop":
        return stop(root)
    if args.action == "collect":
        return collect(root, args.docs)
    return status(root)


if __name__ == "__main__":
    sys.exit(main())
