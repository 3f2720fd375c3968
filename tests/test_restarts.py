"""Restarts under torchrun with its default, shared rendezvous store (pytorch/pytorch#135712):
torchrun hands its agent's TCPStore to the workers of every attempt, so a restarted group finds
the keys the previous attempt left there (gloo addresses, barrier counters) unless vaekit gives
every attempt its own key prefix. A worker killed three times in a row must be restarted three
times, each attempt resuming from the checkpoint, whatever TORCH_DISABLE_SHARE_RDZV_TCP_STORE
says (unset or "0": the shared store)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_distributed import TRAIN, free_port, job_env, kill_job, worker_pids

from vaekit.distributed import FRESH_STORE_ENV, attempt_store_prefix, process_group

EPOCHS = 10
KILLS = 3
PROGRESS_WAIT = 45  # seconds a (re)started group may take to finish an epoch
JOB_TIMEOUT = 120  # seconds for the whole job


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory) -> Path:
    """256/64/64 8x8 digits in an .npz: the workers of every attempt start faster than with the
    embedded digits (no scikit-learn import) and an epoch is 4 steps."""
    from sklearn.datasets import load_digits

    x = (load_digits().images / 16).astype("float32")[:, None]
    path = tmp_path_factory.mktemp("data") / "digits256.npz"
    np.savez(path, train=x[:256], val=x[256:320], test=x[320:384])
    return path


def shared_store_env(fresh_store: str | None) -> dict:
    env = job_env()  # loopback, one thread per worker; it also sets FRESH_STORE_ENV=1: undo that
    env.pop(FRESH_STORE_ENV, None)
    if fresh_store is not None:
        env[FRESH_STORE_ENV] = fresh_store
    return env


def live_workers(agent_pid: int) -> dict[int, int]:
    """{pid: LOCAL_RANK} of the agent's workers that are still running (not zombies)."""
    workers = {}
    for pid in worker_pids(agent_pid):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        local_rank = [v for v in environ if v.startswith(b"LOCAL_RANK=")]
        if state != "Z" and local_rank:
            workers[pid] = int(local_rank[0].split(b"=")[1])
    return workers


def metrics_state(path: Path) -> tuple[int, int]:
    try:
        return path.stat().st_mtime_ns, len(path.read_text().splitlines())
    except OSError:
        return 0, 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find workers")
# unset: torch reads it as "0" (os.getenv(..., "0") != "1" in its dynamic rendezvous), so one
# case covers both
@pytest.mark.parametrize("fresh_store", [None], ids=["variable-unset"])
def test_three_kills_in_a_row_over_torchruns_shared_store(tmp_path, digits_file, fresh_store):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--max-restarts", str(KILLS), "--monitor-interval", "0.1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "-m", "vaekit", "train",
           "--data", str(digits_file), *TRAIN, "--epochs", str(EPOCHS), "--batch-size", "64",
           "--out", "run"]
    metrics = tmp_path / "run" / "metrics.jsonl"
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=shared_store_env(fresh_store), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log = tmp_path / "job.log"

    def fail(why: str):
        out = kill_job(proc)
        pytest.fail(f"{why} ({time.monotonic() - start:.0f}s in):\n{out[-4000:]}")

    try:
        killed: set[int] = set()
        for kill in range(KILLS):
            # wait for a group none of whose workers was killed before, then for it to finish
            # an epoch (the previous group is gone by then, so only this one can write)
            deadline = time.monotonic() + PROGRESS_WAIT
            while True:
                workers = live_workers(proc.pid)
                if len(workers) == 2 and not killed & set(workers):
                    break
                if proc.poll() is not None:
                    fail(f"the job ended before kill {kill + 1}")
                if time.monotonic() > deadline:
                    fail(f"no new worker group before kill {kill + 1}")
                time.sleep(0.05)
            before = metrics_state(metrics)
            while metrics_state(metrics)[0] == before[0] or metrics_state(metrics)[1] < 2:
                if proc.poll() is not None:
                    fail(f"the job ended before kill {kill + 1}")
                if live_workers(proc.pid).keys() != workers.keys():
                    fail(f"a worker of attempt {kill + 1} died before it was killed")
                if time.monotonic() > deadline:
                    fail(f"attempt {kill + 1} made no progress in {PROGRESS_WAIT}s (hung?)")
                time.sleep(0.05)
            victim = next(pid for pid, rank in workers.items() if rank == kill % 2)  # in turn
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                fail(f"a worker of attempt {kill + 1} died before it was killed")
            killed |= set(workers)
            print(f"{time.monotonic() - start:5.1f}s: killed local rank {kill % 2} of attempt "
                  f"{kill + 1} after {metrics_state(metrics)[1]} epochs")
        try:
            out, _ = proc.communicate(timeout=max(1.0, JOB_TIMEOUT - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            fail(f"the job did not finish in {JOB_TIMEOUT}s after {KILLS} kills (hung?)")
    finally:
        if proc.poll() is None:
            kill_job(proc)
    log.write_text(out)
    print(f"job took {time.monotonic() - start:.1f}s")
    print("\n".join(line for line in out.splitlines()
                    if "resum" in line or "attempt" in line or "note:" in line))
    assert proc.returncode == 0, out[-4000:]
    attempts = [line for line in out.splitlines() if line.startswith("torchrun attempt")]
    assert attempts == [f"torchrun attempt {attempt}: resuming from the checkpoint in run"
                        for attempt in range(2, KILLS + 2)], out[-4000:]
    resumed = [line for line in out.splitlines() if line.startswith("resumed from")]
    assert len(resumed) == KILLS
    history = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert (tmp_path / "run" / "model.safetensors").is_file()


# -- the store of one attempt (one process, no torchrun) --------------------------------------
def test_the_store_prefix_names_the_attempt(monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    assert attempt_store_prefix() == "vaekit/attempt_2"
    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT")
    assert attempt_store_prefix() == "vaekit/attempt_0"


def init_spy(monkeypatch) -> list[dict]:
    """The keyword arguments of every init_process_group call (which still runs)."""
    calls: list[dict] = []
    init = torch.distributed.init_process_group
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda *args, **kwargs: calls.append(kwargs) or init(*args, **kwargs))
    return calls


def worker_env(monkeypatch, **extra: str) -> None:
    """One worker of a one-process torchrun job on this machine, as torchrun sets it."""
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "GROUP_WORLD_SIZE": "1",
                        "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", **extra}.items():
        monkeypatch.setenv(name, value)


def test_process_group_isolates_attempts_on_the_agents_store(monkeypatch):
    """Over the agent's store each attempt works under its own prefix: a key one attempt sets
    lands under that attempt's prefix and is invisible to the next attempt."""
    agent_store = torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    worker_env(monkeypatch, MASTER_PORT=str(agent_store.port), TORCHELASTIC_USE_AGENT_STORE="True")
    calls = init_spy(monkeypatch)
    for attempt in (0, 1):
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(attempt))
        with process_group("cpu") as group:
            assert group.active and group.rank == 0 and group.world_size == 1
            store = calls[-1]["store"]
            assert calls[-1]["rank"] == 0 and calls[-1]["world_size"] == 1
            assert not store.check(["probe"])  # the previous attempt's key is not seen
            store.set("probe", str(attempt))
        assert agent_store.check([f"vaekit/attempt_{attempt}/probe"])
        assert agent_store.get(f"vaekit/attempt_{attempt}/probe") == str(attempt).encode()
    assert len(calls) == 2 and not agent_store.check(["probe"])
    assert not torch.distributed.is_initialized()


def test_process_group_keeps_env_init_without_the_agents_store(monkeypatch):
    """With a store of its own per attempt (TORCHELASTIC_USE_AGENT_STORE=False, as under
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1), or with several nodes, torch's env:// init is used
    as before."""
    agent_stores = []  # kept alive to the end
    for use_agent_store, nodes in (("False", "1"), ("True", "2")):
        worker_env(monkeypatch, MASTER_PORT=str(free_port()), TORCHELASTIC_RESTART_COUNT="1",
                   TORCHELASTIC_USE_AGENT_STORE=use_agent_store, GROUP_WORLD_SIZE=nodes)
        if use_agent_store == "True":  # env:// then connects to the agent's store as a client
            agent_stores.append(torch.distributed.TCPStore(
                "127.0.0.1", int(os.environ["MASTER_PORT"]), is_master=True,
                wait_for_workers=False))
        calls = init_spy(monkeypatch)
        with process_group("cpu") as group:
            assert group.active and group.world_size == 1
        assert len(calls) == 1 and "store" not in calls[0]
