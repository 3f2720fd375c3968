"""Cross-cutting robustness of the vaekit command (issue 8).

- Bad input: one line on stderr saying what is wrong and how to fix it, exit status 2, no
  traceback, and no run directory left half-written.
- Nothing is lost: a training process killed with SIGKILL at random moments and resumed each
  time ends with exactly the weights of an uninterrupted run; SIGINT saves a checkpoint and
  exits cleanly with a line saying how to resume.
- Nothing untrusted runs: pickles planted in a run directory are refused, never executed."""

import gzip
import json
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit import cli
from vaekit.storage import load_tensors, save_tensors
from vaekit.cli import main

TINY = ["--hidden", "32", "--latent-dim", "4", "--batch-size", "64", "--no-progress"]


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A finished one-epoch run on the embedded digits (Gaussian likelihood, data [1, 8, 8])."""
    out = tmp_path_factory.mktemp("robust") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out


def idx(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = 0x800 | array.ndim if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def fake_mnist(directory, images=None, labels=None):
    """Uncompressed 4x4 IDX files; ``images``/``labels`` replace the training files' bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 20), ("t10k", 10)):
        (directory / f"{prefix}-images-idx3-ubyte").write_bytes(idx(np.zeros((n, 4, 4))))
        (directory / f"{prefix}-labels-idx1-ubyte").write_bytes(idx(np.zeros(n)))
    if images is not None:
        (directory / "train-images-idx3-ubyte").write_bytes(images)
    if labels is not None:
        (directory / "train-labels-idx1-ubyte").write_bytes(labels)
    return directory


def png(path, array, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode).save(path)


# Each case: (name, setup(tmp) -> argv (without "vaekit"), text the one-line message contains).
# Train cases get "--out tmp/out" appended and must leave no such directory behind.
def _file(tmp, name, data):
    (tmp / name).write_bytes(data)
    return str(tmp / name)


def _npy(tmp, name, array):
    np.save(tmp / name, array)
    return str(tmp / name)


def _npy_bytes(array):
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _junk_dir(tmp):
    (tmp / "junk").mkdir()
    (tmp / "junk" / "notes.txt").write_text("not a run")
    return str(tmp / "junk")


def _config(tmp, name, text):
    (tmp / name).write_text(text)
    return str(tmp / name)


def _corrupt_images(tmp):
    png(tmp / "imgs" / "a.png", np.zeros((4, 4)))
    (tmp / "imgs" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return str(tmp / "imgs")


def _nan_array():
    x = np.random.default_rng(0).random((50, 3))
    x[3, 1] = np.nan
    x[7, 0] = np.inf
    return x


TRAIN_CASES = [
    ("empty path", lambda t: ["--data", ""], "data.name"),
    ("missing path", lambda t: ["--data", str(t / "missing.npy")], "no such file or directory"),
    ("empty file", lambda t: ["--data", _file(t, "e.npy", b"")], "not a readable .npy"),
    ("empty directory", lambda t: ["--data", str(t)], "no .png/.jpg/.jpeg images"),
    ("unsupported file type", lambda t: ["--data", _file(t, "x.txt", b"1,2")],
     "unsupported file type '.txt'"),
    ("corrupt .npz", lambda t: ["--data", _file(t, "r.npz", b"PK\x03\x04 garbage")],
     "not a readable .npz"),
    ("truncated .npy", lambda t: ["--data", _file(t, "t.npy", _npy_bytes(np.ones((9, 9)))[:100])],
     "not a readable .npy"),
    ("corrupt image", lambda t: ["--data", _corrupt_images(t)], "b.png: not a readable image"),
    ("truncated .gz (md5)", lambda t: ["--data", "mnist", "--data-dir", _truncated_gz(t)],
     "md5"),
    ("IDX wrong magic", lambda t: ["--data", "mnist", "--data-dir",
                                   str(fake_mnist(t / "m", images=idx(np.zeros(20)))), ],
     "magic number"),
    ("IDX inconsistent header", lambda t: ["--data", "mnist", "--data-dir",
                                           str(fake_mnist(t / "m", images=idx(np.zeros((20, 4, 4)))[:-3]))],
     "the IDX header says"),
    ("NaN/inf values", lambda t: ["--data", _npy(t, "n.npy", _nan_array())], "2 NaN/inf values"),
    ("wrong shape", lambda t: ["--data", _npy(t, "v.npy", np.zeros(30))], "expected [N, D]"),
    ("grey levels under Bernoulli", lambda t: ["--likelihood", "bernoulli", "--binarize", "none"],
     "needs binary data"),
    ("negative values under continuous Bernoulli",
     lambda t: ["--data", _npy(t, "neg.npy", np.random.default_rng(0).normal(size=(50, 3))),
                "--likelihood", "continuous-bernoulli"], "needs values in [0, 1]"),
    ("real values with binarization", lambda t: ["--data", _npy(t, "r.npy", np.random.default_rng(0).normal(size=(50, 3))),
                                                 "--binarize", "dynamic"], "real values"),
    ("labels/images count mismatch",
     lambda t: ["--data", str(_savez(t / "xy.npz", x=np.zeros((10, 2)), y=np.zeros(9, int)))],
     "9 labels for 10 examples"),
    ("IDX labels/images count mismatch",
     lambda t: ["--data", "mnist", "--data-dir", str(fake_mnist(t / "m", labels=idx(np.zeros(19))))],
     "holds 20 images but"),
    ("unknown option", lambda t: ["--epochz", "3"], "did you mean --epochs"),
    ("unknown config key", lambda t: ["--config", _config(t, "c.toml", "[train]\nepoch = 3\n")],
     "unknown key 'train.epoch' (valid keys: epochs, batch_size"),
    ("unknown config section", lambda t: ["--config", _config(t, "c.json", '{"trian": {}}')],
     "unknown key 'trian' (valid keys: version, data, model, train)"),
    ("config file missing", lambda t: ["--config", str(t / "none.toml")], "config file not found"),
    ("config not TOML", lambda t: ["--config", _config(t, "c.toml", "[train\n")], "cannot parse"),
    ("config type", lambda t: ["--config", _config(t, "c.yaml", "a: 1")], "unsupported config type"),
    ("config from a newer vaekit", lambda t: ["--config", _config(t, "c.toml", "version = 7\n")],
     "config version 7 is not supported"),
    ("latent dim 0", lambda t: ["--latent-dim", "0"], "model.latent_dim"),
    ("negative latent dim", lambda t: ["--latent-dim", "-2"], "model.latent_dim"),
    ("negative learning rate", lambda t: ["--lr", "-0.001"], "train.lr"),
    ("infinite learning rate", lambda t: ["--config", _config(t, "c.toml", "[train]\nlr = inf\n")],
     "train.lr: Input should be a finite number"),
    ("zero hidden width", lambda t: ["--hidden", "400,0"], "model.hidden.1"),
    ("non-integer option", lambda t: ["--epochs", "many"], "invalid int value"),
    ("batch larger than the data", lambda t: ["--batch-size", "100000"], "larger than the training set"),
    ("negative checkpoint interval", lambda t: ["--checkpoint-every", "-1"],
     "train.checkpoint_every_steps"),
    ("seed out of range", lambda t: ["--seed", str(2**70)], "train.seed"),
    ("unknown device", lambda t: ["--device", "tpu"], "unknown device"),
    ("resume without --out", lambda t: ["--resume"], "--resume needs --out"),
]


def _savez(path, **arrays):
    np.savez(path, **arrays)
    return path


def _truncated_gz(tmp):
    directory = tmp / "gz"
    directory.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (directory / f"{name}.gz").write_bytes(gzip.compress(idx(np.zeros((10, 4, 4))))[:30])
    return str(directory)


def one_line_error(capsys, argv) -> str:
    """Runs the CLI in-process; any exception escaping main() fails the test (= a traceback)."""
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit: error: "), err
    return lines[0]


@pytest.mark.parametrize("name,setup,needle", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_bad_training_input_one_line_and_nothing_written(tmp_path, capsys, name, setup, needle):
    argv = ["train", *TINY, "--epochs", "1", *setup(tmp_path)]
    if "--resume" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert needle in one_line_error(capsys, argv)
    assert not (tmp_path / "out").exists()


def _plant_weights(run, tmp, meta_update=None, corrupt=False):
    """A copy of the run whose model.safetensors is rewritten or corrupted."""
    import shutil

    copy = tmp / "copy"
    shutil.copytree(run, copy)
    path = copy / "model.safetensors"
    if meta_update is not None:
        tensors, meta = load_tensors(path)
        meta.pop("format"), meta.pop("format_version")
        save_tensors(path, tensors, {**meta, **meta_update})
    if corrupt:
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x40
        path.write_bytes(bytes(data))
    return str(copy)


RUN_CASES = [
    ("evaluate on data of another shape",
     lambda r, t: ["evaluate", r, "--data", _npy(t, "x.npy", np.zeros((20, 5)))],
     "examples of shape (5,) but the model was trained on (1, 8, 8)"),
    ("encode data of another shape",
     lambda r, t: ["encode", r, "--data", "mnist", "--data-dir", str(fake_mnist(t / "m")),
                   "--out", str(t / "z.npy")],
     "shape (1, 4, 4) but the model was trained on (1, 8, 8)"),
    ("reconstruct data of another shape",
     lambda r, t: ["reconstruct", r, "--data", _npy(t, "x.npy", np.zeros((20, 1, 9, 9))),
                   "--out", str(t / "r.png")], "shape (1, 9, 9)"),
    ("evaluate NaN data", lambda r, t: ["evaluate", r, "--data", _npy(t, "n.npy", np.full((20, 1, 8, 8), np.nan))],
     "NaN/inf"),
    ("run directory missing", lambda r, t: ["evaluate", str(t / "nothing")], "no such run directory"),
    ("not a vaekit run", lambda r, t: ["sample", _junk_dir(t), "--out", str(t / "s.png")],
     "is not a vaekit run directory"),
    ("weights from a newer vaekit", lambda r, t: ["evaluate", _plant_weights(r, t, {"format_version": 3})],
     "newer vaekit (format 3 > 1); upgrade vaekit"),
    ("config of a newer vaekit in the weights",
     lambda r, t: ["evaluate", _plant_weights(r, t, {"config": {"version": 5}})], "config in the checkpoint is invalid"),
    ("corrupt weights", lambda r, t: ["evaluate", _plant_weights(r, t, corrupt=True)], "checksum mismatch"),
    ("output directory missing", lambda r, t: ["sample", r, "--out", str(t / "no" / "s.png")], "does not exist"),
    ("unsupported output type", lambda r, t: ["sample", r, "--out", str(t / "s.jpg")], "use a .png"),
    ("non-positive count", lambda r, t: ["sample", r, "--num", "0", "--out", str(t / "s.png")], "--num"),
    ("unknown option of a subcommand", lambda r, t: ["evaluate", r, "--jsn"], "did you mean --json"),
    ("train into an existing run", lambda r, t: ["train", *TINY, "--out", r], "already holds a run; pass --resume"),
    ("--out is a file", lambda r, t: ["train", *TINY, "--out", _config(t, "f", "x")], "is a file"),
    ("resume from a truncated checkpoint", lambda r, t: ["train", "--resume", "--out", _truncate_checkpoint(r, t)],
     "corrupt or truncated"),
    ("resume from a newer checkpoint", lambda r, t: ["train", "--resume", "--out", _newer_checkpoint(r, t)],
     "newer vaekit"),
]


def _truncate_checkpoint(run, tmp):
    import shutil

    copy = tmp / "copy"
    shutil.copytree(run, copy)
    path = copy / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:200])
    return str(copy)


def _newer_checkpoint(run, tmp):
    import shutil

    copy = tmp / "copy"
    shutil.copytree(run, copy)
    path = copy / "checkpoint.safetensors"
    tensors, meta = load_tensors(path)
    save_tensors(path, tensors, {**meta, "format_version": 2})
    return str(copy)


@pytest.mark.parametrize("name,setup,needle", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_bad_run_input_one_line(digits_run, tmp_path, capsys, name, setup, needle):
    before = sorted(p.name for p in digits_run.iterdir())
    assert needle in one_line_error(capsys, setup(str(digits_run), tmp_path))
    assert sorted(p.name for p in digits_run.iterdir()) == before


def test_internal_errors_keep_their_traceback(monkeypatch):
    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "evaluate", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["evaluate", "somewhere"])


def test_subprocess_user_error_has_no_traceback_but_internal_error_has(tmp_path):
    proc = run_vaekit("train", "--latent-dim", "0", "--out", tmp_path / "r")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    code = "import vaekit.cli as c; c.COMMANDS['evaluate'] = lambda a: 1 / 0; c.main(['evaluate', 'x'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ZeroDivisionError" in proc.stderr


# ------------------------------------------------------------------------------------------
# nothing untrusted runs

class PlantMarker:
    """Unpickling this creates the marker file: proof that a pickle was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("target", ["model.safetensors", "checkpoint.safetensors"])
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_planted_pickles_are_refused_not_executed(digits_run, tmp_path, capsys, target, writer):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    marker = tmp_path / "executed"
    evil = {"weights": PlantMarker(marker)}
    if writer == "pickle":
        (run / target).write_bytes(pickle.dumps(evil))
    else:
        torch.save(evil, run / target)
    assert not marker.exists()  # writing the pickle did not run it
    (run / "optimizer.pt").write_bytes(pickle.dumps(PlantMarker(marker)))
    (run / "model.pt").write_bytes(pickle.dumps(PlantMarker(marker)))
    argv = (["evaluate", str(run)] if target == "model.safetensors"
            else ["train", "--resume", "--out", str(run), "--no-progress"])
    assert "not a valid safetensors file" in one_line_error(capsys, argv)
    assert not marker.exists()


def test_stray_pickles_in_a_run_are_ignored(digits_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    marker = tmp_path / "executed"
    for name in ("optimizer.pt", "model.pt", "model.pkl", "checkpoint.pt"):
        (run / name).write_bytes(pickle.dumps(PlantMarker(marker)))
    assert main(["evaluate", str(run)]) == 0
    assert main(["train", "--resume", "--epochs", "2", "--out", str(run), "--no-progress"]) == 0
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# nothing is lost: SIGKILL at random moments, SIGINT

KILL_ARGS = [*TINY, "--epochs", "6", "--checkpoint-every", "2", "--seed", "3"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_vaekit(*args):
    return subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=300)


def start_stepped_vaekit(*args):
    """``vaekit`` announcing each optimizer step on stdout (tests/stepped_train.py)."""
    script = os.path.join(os.path.dirname(__file__), "stepped_train.py")
    return subprocess.Popen([sys.executable, script, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def signal_after_steps(proc, num_steps, sig, delay):
    """Reads the process's output until it has announced ``num_steps`` optimizer steps (or
    ended), waits ``delay`` seconds and sends ``sig``; returns its first output line."""
    first_line = line = proc.stdout.readline()  # never a step line
    while line and num_steps > 0:
        line = proc.stdout.readline()
        num_steps -= line.startswith("step ")
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(sig)
    return first_line


def uninterrupted_run(out):
    """The same command in this process, on one thread like the subprocesses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *KILL_ARGS, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def assert_same_run(run, reference):
    a, _ = load_tensors(run / "model.safetensors")
    b, _ = load_tensors(reference / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    timing = {"seconds", "images_per_second"}

    def metrics(r):
        return [{k: v for k, v in json.loads(line).items() if k not in timing}
                for line in (r / "metrics.jsonl").read_text().splitlines()]

    assert metrics(run) == metrics(reference)  # per-epoch sums restored exactly mid-epoch
    assert json.loads((run / "results.json").read_text()) == \
        json.loads((reference / "results.json").read_text())


def test_killed_at_random_moments_then_resumed_gives_the_uninterrupted_run(tmp_path, capsys):
    """SIGKILL, SIGINT, SIGKILL at random moments during training (each run resumed with
    --resume), then a last --resume to the end: the weights, per-epoch metrics and test results
    equal those of the uninterrupted run bit for bit. SIGINT saves a checkpoint at the current
    step and exits with 130 and one line saying where it is and how to resume."""
    rng = random.Random(8)
    out = tmp_path / "run"
    interrupted, log = 0, []
    # random moments counted in optimizer steps after each start (the run has 138 steps; three
    # attempts of at most 40 cannot reach its end), so that they fall inside the run on a fast
    # machine as on a slow one; a random delay of up to 20 ms (a few steps of this small model,
    # which checkpoints every two) places the signal anywhere within a step
    for attempt, sig in enumerate([signal.SIGKILL, signal.SIGINT, signal.SIGKILL]):
        proc = start_stepped_vaekit("train", *KILL_ARGS, "--out", out,
                                    *(["--resume"] if attempt else []))
        step = rng.randint(5, 40)
        first_line = signal_after_steps(proc, step, sig, rng.uniform(0.0, 0.02))
        stdout, stderr = proc.communicate(timeout=120)
        # first_line: "training on ..." or "resumed from ... at epoch E, step S"
        log.append((signal.Signals(sig).name, step, first_line.strip().split(" at ")[-1][:50],
                    proc.returncode))
        if proc.returncode == 0:
            break  # finished before the signal came
        interrupted += 1
        if sig == signal.SIGKILL:
            assert proc.returncode == -signal.SIGKILL, stderr
        else:
            assert proc.returncode == 128 + signal.SIGINT, stderr
            lines = stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in stderr, stderr
            assert f"checkpoint saved to {out / 'checkpoint.safetensors'}" in lines[0]
            assert f"vaekit train --out {out} --resume" in lines[0]
            _, meta = load_tensors(out / "checkpoint.safetensors")
            assert f"step {meta['step']}" in lines[0]  # saved at the step it stopped
    final = run_vaekit("train", *KILL_ARGS, "--out", out, "--resume")
    assert final.returncode == 0, final.stderr
    log.append(("resume", None, final.stdout.splitlines()[0].split(" at ")[-1], 0))
    with capsys.disabled():
        print(f"\ninterrupted {interrupted} times: {log}")
    assert interrupted == 3, log
    assert_same_run(out, uninterrupted_run(tmp_path / "reference"))
