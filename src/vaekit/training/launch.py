"""Launching training: the torchrun command behind ``vaekit train --nproc N``, and the policy
for continuing a run directory under torchrun (a checkpoint in ``--out`` means a restarted or
re-launched job, so every worker continues it).

Semantics of several processes are described in :mod:`vaekit.distributed`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Callable

from ..distributed import (FRESH_STORE_ENV, ProcessGroup, launched_by_torchrun, rank0_decides,
                           restart_caveat, restart_count)
from ..config import RunConfig
from ..errors import ConfigError
from .checkpoint import CHECKPOINT


def torchrun_env() -> dict[str, str]:
    return {**os.environ, FRESH_STORE_ENV: os.environ.get(FRESH_STORE_ENV, "1")}


def torchrun_command(argv: Sequence[str], nproc: int, *, max_restarts: int = 0) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m vaekit <argv>``
    with ``--nproc`` removed from ``argv``: one machine, a free port picked by torchrun."""
    rest: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}", "-m", "vaekit", *rest]


def launch_torchrun(argv: Sequence[str], nproc: int) -> int:
    """Runs ``vaekit <argv>`` as ``nproc`` processes on this machine under torchrun; returns
    torchrun's exit status."""
    if nproc < 1:
        raise ConfigError("--nproc must be at least 1")
    if launched_by_torchrun():
        raise ConfigError("--nproc starts torchrun itself; drop it when launching with torchrun")
    return subprocess.call(torchrun_command(argv, nproc), env=torchrun_env())


def check_run_request(run_dir: str | Path | None, resume: bool) -> None:
    """What a training request needs before anything starts: a run directory to resume, and
    under torchrun a run directory every worker (and every restarted worker) can find."""
    if resume and not run_dir:
        raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
    if launched_by_torchrun() and not run_dir:
        raise ConfigError("under torchrun pass --out RUN_DIR: every worker, and every restarted "
                          "worker, must find the same run directory")


def resume_decision(run_dir: str | Path | None, resume: bool, group: ProcessGroup,
                    log: Callable[[str], None] = print) -> bool:
    """Whether to continue the run in ``run_dir``: when asked (``--resume``), and under torchrun
    whenever rank 0 sees a checkpoint there (a restarted worker group, or a job launched again).
    Rank 0 says which attempt this is."""
    exists = run_dir is not None and (Path(run_dir) / CHECKPOINT).is_file()
    resume = resume or (group.active and rank0_decides(exists, group.device or "cpu"))
    if group.active and group.is_main:
        if restart_caveat():
            log(restart_caveat())
        if restart_count() or resume:
            log(f"torchrun attempt {restart_count() + 1}: "
                + (f"resuming from the checkpoint in {run_dir}" if resume else "no checkpoint yet"))
    return resume


def default_run_dir(config: RunConfig) -> Path:
    name = Path(config.data.name).stem if Path(config.data.name).exists() else config.data.name
    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuses a run directory that is a file, or that already holds a run when not resuming
    (training there would overwrite its checkpoint)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file; give a directory for the run")
    if not resume and (run_dir / CHECKPOINT).exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it "
                          "or choose another --out")


def config_for_resume(saved: RunConfig, requested: RunConfig) -> RunConfig:
    """The run's saved config; on resume only the number of epochs may be raised, and the
    precision of float32 matrix products (a speed setting) may be changed."""
    update = {}
    if requested.train.epochs is not None and requested.train.epochs != saved.train.epochs:
        update["epochs"] = requested.train.epochs
    if requested.train.matmul_precision != "highest":
        update["matmul_precision"] = requested.train.matmul_precision
    if not update:
        return saved
    return saved.model_copy(update={"train": saved.train.model_copy(update=update)})


def describe_batch(global_batch: int, world_size: int, lr: float) -> str:
    if world_size == 1:
        return f"batch {global_batch}, lr {lr:g}"
    return (f"global batch {global_batch} = {world_size} processes x "
            f"{global_batch // world_size} per process, lr {lr:g} (not scaled)")
