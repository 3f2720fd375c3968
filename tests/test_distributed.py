"""Data-parallel training on torchrun + DDP (CPU, gloo, 2 processes, loopback only): two ranks
with global batch B train exactly like one process with batch B, rank 0 reports full-data
metrics and is the only writer, a killed worker is restarted and resumes from the checkpoint,
and distributed evaluation equals single-process evaluation."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributions.normal as normal_module
from safetensors.torch import load_file

import vaekit
from vaekit.config import RunConfig, merge
from vaekit.distributed import launched_by_torchrun, my_batches, per_rank_batch_size, rank_device
from vaekit.training.launch import torchrun_command, torchrun_env
from vaekit.errors import ConfigError
from vaekit.evaluation import evaluate_elbo
from vaekit.families import build_model

WORKER = Path(__file__).parent / "ddp_worker.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
TRAIN = ["--likelihood", "gaussian", "--binarize", "none", "--hidden", "32", "--latent-dim", "4",
         "--no-progress"]
NOISE_SEED = 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_env(**extra: str) -> dict:
    # loopback only; one thread per worker on a shared 2-core machine
    return {**torchrun_env(), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", **extra}


def run_job(cmd: list[str], env: dict, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs a torchrun job in its own process group, killed whole if it outlives ``timeout``."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        out = kill_job(proc)
        pytest.fail(f"job did not finish in {timeout}s:\n{out[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory) -> Path:
    """256/64/64 real 8x8 digits: 256 is a multiple of the global batch, so every step of the
    single process and of the two ranks sees the same full batch."""
    from sklearn.datasets import load_digits

    x = (load_digits().images / 16).astype("float32")[:, None]
    path = tmp_path_factory.mktemp("data") / "digits256.npz"
    np.savez(path, train=x[:256], val=x[256:320], test=x[320:384])
    return path


@pytest.fixture(scope="module")
def two_ranks_and_one(small_digits, tmp_path_factory):
    """The same 8 steps (2 epochs, global batch 64) on 2 ranks under torchrun and in this
    process. Both draw the posterior noise from tests/ddp_worker.py's sliced generator, so rank
    r's noise is exactly the single process's noise for rank r's examples; the runs then differ
    only in how the gradient is computed (DDP all-reduce of two half-batch means)."""
    work = tmp_path_factory.mktemp("ddp")
    args = ["train", "--data", str(small_digits), *TRAIN, "--epochs", "2", "--batch-size", "64"]
    job = run_job([*TORCHRUN, "--standalone", str(WORKER), *args, "--out", "ddp"],
                  job_env(VAEKIT_TEST_SLICED_NOISE=str(NOISE_SEED), VAEKIT_TEST_WATCH=str(work / "ddp")),
                  work)
    from ddp_worker import install_sliced_noise

    original = normal_module._standard_normal
    try:
        install_sliced_noise(NOISE_SEED)
        cfg = merge(RunConfig(), {
            "data": {"name": str(small_digits), "binarize": "none"},
            "model": {"likelihood": "gaussian", "hidden": (32,), "latent_dim": 4},
            "train": {"epochs": 2, "batch_size": 64}})
        vaekit.train(cfg, work / "one", progress=False, log=lambda m: None)
    finally:
        normal_module._standard_normal = original
    return job, work / "ddp", work / "one"


def test_two_ranks_train_exactly_like_one_process_with_the_global_batch(two_ranks_and_one):
    job, ddp, one = two_ranks_and_one
    assert job.returncode == 0, job.stdout[-3000:]
    assert "global batch 64 = 2 processes x 32 per process" in job.stdout
    a, b = load_file(ddp / "model.safetensors"), load_file(one / "model.safetensors")
    max_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"max |theta_ddp - theta_single| after 8 steps: {max_diff:.2e}")
    assert max_diff < 1e-5  # observed 3e-8: float32 summation order of the all-reduce
    # the tolerance is meaningful: 8 steps moved the parameters far more than it
    config = vaekit.load(one).config
    torch.manual_seed(config.train.seed)  # as the Trainer does before building the model
    init = build_model(config.model, (1, 8, 8)).state_dict()
    assert max(float((a[k] - init[k]).abs().max()) for k in a) > 1e-3


def test_rank0_reports_full_data_metrics(two_ranks_and_one):
    _, ddp, one = two_ranks_and_one
    rows = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            for run in (ddp, one)]
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]] == [4, 8]
    for got, want in zip(*rows):
        for key in ("train_elbo", "train_reconstruction", "train_kl", "val_elbo", "val_kl"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    test_ddp, test_one = (json.loads((run / "results.json").read_text()) for run in (ddp, one))
    assert test_ddp["num_examples"] == 64
    assert test_ddp["elbo"] == pytest.approx(test_one["elbo"], rel=1e-5)


def test_only_rank0_writes_and_both_ranks_exit_0(two_ranks_and_one):
    job, ddp, _ = two_ranks_and_one
    assert job.returncode == 0  # torchrun exits 0 only when every worker did
    # both ranks print at exit, and torchrun may interleave their lines: match anywhere
    writes = dict(re.findall(r"WRITES rank=(\d+) count=(\d+)", job.stdout))
    assert writes.get("1") == "0", job.stdout[-2000:]
    assert int(writes.get("0", 0)) > 5  # the hook does see writes
    assert {p.name for p in ddp.iterdir()} == {
        "config.json", "model.safetensors", "checkpoint.safetensors", "metrics.jsonl",
        "results.json", "samples.png", "reconstructions.png", "interpolation.png", "report.html"}


def test_distributed_evaluation_equals_single_process(two_ranks_and_one):
    _, ddp, _ = two_ranks_and_one
    # 64 test examples in 5 batches of 13 (the last one short): 3 on rank 0, 2 on rank 1
    job = run_job([*TORCHRUN, "--standalone", "-m", "vaekit", "evaluate", str(ddp), "--json",
                   "--batch-size", "13"], job_env(), ddp.parent)
    assert job.returncode == 0, job.stdout[-3000:]
    printed = [json.loads(line) for line in job.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # rank 0 alone prints
    run = vaekit.load(ddp)
    model = run.model
    x, _ = run.split()
    want = evaluate_elbo(model, x, batch_size=13)
    for key in ("elbo", "reconstruction", "kl"):
        assert printed[0][key] == pytest.approx(want[key], rel=1e-9, abs=1e-9), key
    assert printed[0]["num_examples"] == want["num_examples"] == 64


def worker_pids(agent_pid: int) -> list[int]:
    """The children of the torchrun agent (its workers), from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == agent_pid:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def kill_job(proc: subprocess.Popen) -> str:
    """Kills a torchrun job whole and returns its output: the workers first (torchrun starts
    each in a session of its own, so killing the agent's process group leaves them running,
    holding the output pipe open), then the agent's group."""
    for pid in worker_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find workers")
def test_a_killed_worker_is_restarted_and_resumes_from_the_checkpoint(tmp_path):
    cmd = [*TORCHRUN, "--max-restarts", "1", "--monitor-interval", "0.1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "-m", "vaekit", "train", *TRAIN,
           "--epochs", "15", "--batch-size", "64", "--out", "run"]
    proc = subprocess.Popen(cmd, env=job_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.monotonic() + 90
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.05)
        workers = worker_pids(proc.pid)
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            kill_job(proc)
    assert proc.returncode == 0, out[-3000:]
    print("\n".join(line for line in out.splitlines()
                    if "resum" in line or "exitcode" in line or "attempt" in line))
    assert "torchrun attempt 2: resuming from the checkpoint" in out
    resumed = [line for line in out.splitlines() if line.startswith("resumed from")]
    assert len(resumed) == 1 and int(resumed[0].split("epoch ")[1].split(",")[0]) >= 2
    history = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, 16))
    run = vaekit.load(tmp_path / "run")
    model = run.model
    x, _ = run.split()
    result = evaluate_elbo(model, x)
    assert all(np.isfinite(result[k]) for k in ("elbo", "reconstruction", "kl"))
    assert result["elbo"] > history[0]["val_elbo"]  # it kept learning after the restart


# -- single-process pieces -------------------------------------------------------------------
def test_global_batch_is_split_evenly_over_ranks():
    assert per_rank_batch_size(128, 4) == 32 and per_rank_batch_size(5, 1) == 5
    with pytest.raises(ConfigError, match="divisible"):
        per_rank_batch_size(100, 3)


def test_evaluation_batches_are_dealt_round_robin_and_cover_all():
    assert list(my_batches(5)) == [0, 1, 2, 3, 4]  # no process group: everything here


def test_torchrun_detection_and_devices():
    assert launched_by_torchrun({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert not launched_by_torchrun({"RANK": "0"})
    assert rank_device("cpu", 1) == torch.device("cpu")
    with pytest.raises(ConfigError, match="LOCAL_RANK"):
        rank_device("cuda:1", 0)


def test_nproc_wraps_torchrun_with_the_same_arguments():
    cmd = torchrun_command(["train", "--nproc", "2", "--epochs", "3", "--nproc=4", "--out", "r"], 2)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in cmd and "--standalone" in cmd
    assert cmd[cmd.index("-m", 3):] == ["-m", "vaekit", "train", "--epochs", "3", "--out", "r"]


def test_torchrun_needs_an_out_directory(monkeypatch, capsys):
    from vaekit.cli import main

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train", "--epochs", "1"]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.fixture(scope="module")
def labelled_digits(tmp_path_factory) -> Path:
    """small_digits with their class labels (train, val and test)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.images / 16).astype("float32")[:, None], digits.target.astype("int64")
    path = tmp_path_factory.mktemp("data") / "digits256-labelled.npz"
    np.savez(path, train=x[:256], val=x[256:320], test=x[320:384], train_labels=y[:256],
             val_labels=y[256:320], test_labels=y[320:384])
    return path


@pytest.mark.parametrize("kind", ["conditional", "semi-supervised"])
def test_two_ranks_train_a_labelled_model_exactly_like_one_process(kind, labelled_digits, tmp_path):
    """A conditional VAE (labels follow their examples to each rank) and M2 (its labelled
    batches too, the same labelled subset, and the loss's means taken over the whole step: the
    ranks' batches hold different numbers of labelled examples) train on 2 ranks as in one
    process. The conditional run draws the sliced noise of the first test; M2's ranks split
    their batches into labelled and unlabelled parts of different sizes, which the slicing
    cannot follow, so its training noise is 0 (z = the posterior mean) in both runs."""
    import ddp_worker

    flags = {"conditional": ["--conditional", "--conditional-prior", "class"],
             "semi-supervised": ["--semi-supervised", "--labels-per-class", "2"]}[kind]
    noise = ({"VAEKIT_TEST_SLICED_NOISE": str(NOISE_SEED)} if kind == "conditional"
             else {"VAEKIT_TEST_ZERO_NOISE": "1"})
    args = ["train", "--data", str(labelled_digits), *TRAIN, *flags, "--epochs", "2",
            "--batch-size", "64"]
    job = run_job([*TORCHRUN, "--standalone", str(WORKER), *args, "--out", "ddp"],
                  job_env(**noise), tmp_path)
    assert job.returncode == 0, job.stdout[-3000:]
    original = normal_module._standard_normal
    try:
        if kind == "conditional":
            ddp_worker.install_sliced_noise(NOISE_SEED)
        else:
            ddp_worker.install_zero_noise()
        from vaekit.cli import main

        assert main([*args, "--out", str(tmp_path / "one")]) == 0
    finally:
        normal_module._standard_normal = original
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    a, b = load_file(ddp / "model.safetensors"), load_file(one / "model.safetensors")
    assert a.keys() == b.keys()
    max_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"{kind}: max |theta_ddp - theta_single| after 8 steps: {max_diff:.2e}")
    assert max_diff < 1e-5
    config = vaekit.load(one).config
    torch.manual_seed(config.train.seed)  # the initial weights: 8 steps moved them far more
    init = build_model(config.model, (1, 8, 8)).state_dict()
    assert max(float((a[k] - init[k]).abs().max()) for k in a) > 1e-3
    assert config.model.num_classes == vaekit.load(ddp).config.model.num_classes == 10
    if kind == "semi-supervised":
        records = [json.loads((run / "labelled.json").read_text()) for run in (ddp, one)]
        assert records[0] == records[1] and len(records[0]["indices"]) == 20


class ExitCalled(Exception):
    pass


class Stream(io.StringIO):
    """An output stream that records whether it was flushed since the last write."""
    flushed = True

    def write(self, text):
        self.flushed = False
        return super().write(text)

    def flush(self):
        self.flushed = True


@pytest.mark.parametrize("joined", [True, False])
def test_the_command_skips_the_teardown_only_in_a_torchrun_worker(monkeypatch, joined):
    """`vaekit` exits with main's status; a worker that joined a process group exits through
    os._exit after flushing its output (torch's gloo threads outlive destroy_process_group
    under DDP and can abort the interpreter's teardown: vaekit.cli.run_command)."""
    import vaekit.cli as cli

    out, err = Stream(), Stream()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)

    def fake_main():
        print("last line", end="")
        print("a warning", end="", file=sys.stderr)
        return 3

    def fake_exit(status):
        assert out.flushed and err.flushed
        raise ExitCalled(status)

    monkeypatch.setattr(cli, "main", fake_main)
    monkeypatch.setattr(cli, "joined_a_process_group", lambda: joined)
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    with pytest.raises(ExitCalled if joined else SystemExit) as stop:
        cli.run_command()
    assert (stop.value.args[0] if joined else stop.value.code) == 3
    assert out.getvalue() == "last line"


def test_torchrun_workers_skip_the_teardown_and_a_plain_process_does_not(tmp_path):
    """End to end: the `vaekit` command run by torchrun joins the group and leaves without
    the interpreter's teardown (an atexit handler does not run), yet every worker's last line
    is out and the job succeeds; the same command in one process tears down as usual."""
    script = tmp_path / "command.py"
    script.write_text(
        "import atexit, os, sys\n"
        "from vaekit.cli import run_command\n"
        "atexit.register(lambda: print(f'teardown ran on rank {os.environ.get(\"RANK\", \"-\")}'))\n"
        "sys.argv = ['vaekit', *sys.argv[1:]]\n"
        "run_command()\n")
    train = ["train", *TRAIN, "--epochs", "1", "--no-report"]
    job = run_job([*TORCHRUN, "--standalone", str(script), *train, "--out", "ddp"], job_env(),
                  tmp_path)
    assert job.returncode == 0, job.stdout[-3000:]
    assert "results in ddp/" in job.stdout and "teardown ran" not in job.stdout
    one = subprocess.run([sys.executable, str(script), *train, "--out", "one"],
                         env={**job_env(), "PYTHONUNBUFFERED": "1"}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "results in one/" in one.stdout and "teardown ran on rank -" in one.stdout
