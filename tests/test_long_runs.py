"""benchmarks/long_runs.py, the long-run queue, on a fake queue whose runs are short commands
(no training): a worker takes the runs in order, skips one another worker holds, marks a run
done or failed, restarts a vanished run from zero and says so; status reads a run's records;
a broken queue file is an error before anything starts."""

from __future__ import annotations

import fcntl
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import long_runs  # noqa: E402


@pytest.fixture
def queue(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "queue.toml"
    path.write_text('[[run]]\nname = "a"\nrow = "vae-1layer"\n\n'
                    '[[run]]\nname = "b"\nrow = "normal-caltech101"\nepochs = 3\n\n'
                    '[[run]]\nname = "c"\nrow = "vamp-static"\n')
    monkeypatch.setattr(long_runs, "QUEUE", path)
    return path


def fake_commands(monkeypatch, failing: set[str] = frozenset()):
    """Each run's command writes its name into the run directory (and fails for ``failing``)."""
    def command_of(run, root, data_root):
        out = root / run["name"]
        code = 1 if run["name"] in failing else 0
        script = (f"import pathlib, sys; p = pathlib.Path({str(out)!r}); p.mkdir(exist_ok=True); "
                  f"(p / 'ran').write_text('yes'); sys.exit({code})")
        return [sys.executable, "-c", script]

    monkeypatch.setattr(long_runs, "command_of", command_of)


def test_a_worker_runs_the_queue_in_order_and_marks_each_run(queue, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    fake_commands(monkeypatch, failing={"b"})
    assert long_runs.work(root, tmp_path / "data", slot=0) == 0
    assert (root / "a" / long_runs.DONE).is_file()
    assert (root / "b" / long_runs.FAILED).is_file() and not (root / "b" / long_runs.DONE).exists()
    assert (root / "c" / long_runs.DONE).is_file()
    events = (root / "events.log").read_text()
    assert events.index("starting a from zero") < events.index("starting c from zero")
    assert "b failed with exit 1" in events and "nothing left to run" in events
    record = json.loads((root / "a" / long_runs.DONE).read_text())
    assert record["row"] == "vae-1layer" and record["return_code"] == 0


def test_a_run_held_by_another_worker_is_skipped(queue, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    fake_commands(monkeypatch)
    with open(root / "a.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        long_runs.work(root, tmp_path / "data", slot=1)
    assert not (root / "a").exists()
    assert (root / "b" / long_runs.DONE).is_file() and (root / "c" / long_runs.DONE).is_file()


def test_a_run_with_a_checkpoint_is_resumed_not_restarted(queue, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "checkpoint.safetensors").write_bytes(b"")
    fake_commands(monkeypatch)
    long_runs.work(root, tmp_path / "data", slot=0)
    events = (root / "events.log").read_text()
    assert "resuming a" in events and "starting a" not in events


def test_status_reads_epochs_bounds_and_rates(queue, tmp_path, capsys):
    root = tmp_path / "runs"
    (root / "b").mkdir(parents=True)
    metrics = [{"epoch": e, "val_elbo": -100.0 + e, "seconds": 36.0} for e in (1, 2)]
    (root / "b" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    long_runs.status(root)
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith("b "))
    assert "2/3" in line and "-98.00" in line and "100" in line  # 3600 / 36 epochs per hour
    assert "0.0 h" in line  # one epoch of 36 s left: at most


def test_the_command_of_a_row_names_its_data_folder(tmp_path):
    run = {"name": "x", "row": "normal-omniglot", "epochs": 5, "batch_size": 50}
    command = long_runs.command_of(run, tmp_path / "runs", tmp_path / "data")
    assert command[2] == "normal-omniglot"
    assert command[command.index("--data-dir") + 1] == str(tmp_path / "data" / "omniglot")
    assert command[command.index("--out") + 1] == str(tmp_path / "runs" / "x")
    assert command[-4:] == ["--batch-size", "50", "--epochs", "5"]


@pytest.mark.parametrize("text, message", [
    ('[[run]]\nname = "a"\nrow = "no-such-row"\n', "bad entry"),
    ('[[run]]\nname = "a"\nrow = "vae-1layer"\nbatchsize = 1\n', "bad entry"),
    ('[[run]]\nname = "a"\nrow = "vae-1layer"\n[[run]]\nname = "a"\nrow = "vae-2layer"\n',
     "queued twice"),
])
def test_a_broken_queue_is_refused(tmp_path, text, message):
    path = tmp_path / "queue.toml"
    path.write_text(text)
    with pytest.raises(SystemExit, match=message):
        long_runs.read_queue(path)


def test_the_project_queue_is_valid():
    names = [run["name"] for run in long_runs.read_queue()]
    assert "vamp-dynamic" in names and "vae-1layer-e3280-b100" in names
