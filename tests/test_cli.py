"""End-to-end: the vaekit command on the embedded default and on real MNIST, and its
behaviour on bad input (one line on stderr, exit status 2, no traceback)."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vaekit.cli import main

FAST = ["--epochs", "2", "--hidden", "32", "--latent-dim", "4", "--no-progress"]


def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "vaekit", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """Two epochs on digits with the Gaussian likelihood (the default before discrete
    likelihoods): its 4 latent dimensions are in use after two epochs, which the diagnostics
    tests need (the discretized logistic's posterior starts collapsed and opens up later)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *FAST, "--likelihood", "gaussian", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """Two epochs on digits with every model default (the discretized logistic)."""
    out = tmp_path_factory.mktemp("cli") / "default"
    assert main(["train", *FAST, "--out", str(out)]) == 0
    return out


def test_train_prints_where_results_are(tmp_path):
    proc = run_cli("train", *FAST, "--out", tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    assert f"results in {tmp_path / 'r'}" in proc.stdout
    assert "test ELBO" in proc.stdout


def test_sample_png_and_npy(digits_run, tmp_path):
    assert main(["sample", str(digits_run), "--num", "16", "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").format == "PNG"
    assert main(["sample", str(digits_run), "--num", "5", "--out", str(tmp_path / "s.npy")]) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (5, 1, 8, 8) and np.isfinite(x).all()


def test_reconstruct_encode_interpolate(digits_run, tmp_path):
    assert main(["reconstruct", str(digits_run), "--out", str(tmp_path / "r.png")]) == 0
    assert main(["reconstruct", str(digits_run), "--out", str(tmp_path / "r.npy"), "--num", "7"]) == 0
    assert np.load(tmp_path / "r.npy").shape == (7, 1, 8, 8)
    assert main(["encode", str(digits_run), "--out", str(tmp_path / "z.npy")]) == 0
    z = np.load(tmp_path / "z.npy")
    assert z.shape[1] == 4 and np.isfinite(z).all()
    assert main(["encode", str(digits_run), "--out", str(tmp_path / "z.npz"), "--samples", "3"]) == 0
    assert np.load(tmp_path / "z.npz")["samples"].shape == (len(z), 3, 4)
    for method in ["linear", "spherical"]:
        out = tmp_path / f"i-{method}.npy"
        assert main(["interpolate", str(digits_run), "--method", method, "--steps", "5",
                     "--pairs", "2", "--out", str(out)]) == 0
        assert np.load(out).shape == (10, 1, 8, 8)


def test_evaluate_json(digits_run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(digits_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"elbo", "reconstruction", "kl", "num_examples"} <= result.keys()
    assert result["elbo"] == pytest.approx(result["reconstruction"] - result["kl"], abs=1e-3)
    assert result["num_examples"] > 100


def test_evaluate_log_likelihood_and_diagnostics(digits_run):
    # subprocess: stdout must be exactly one JSON object (any progress bar goes to stderr)
    proc = run_cli("evaluate", digits_run, "--json", "--num-samples", "50", "--num-examples", "60")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["num_examples"] == 60 and result["num_samples"] == 50
    # IWAE_50 >= ELBO on average; 60 examples of an 8x8 model: a margin far above the noise
    assert result["log_likelihood"] > result["elbo"]
    assert result["log_likelihood_stderr"] > 0
    # a Gaussian density of grey values: no bits/dim (the bits/dim formula is checked on the
    # default run's discrete likelihood below)
    assert "bits_per_dim" not in result and "continuous" in result["bits_per_dim_absent"]
    assert 1 <= result["ess_mean"] <= 50
    assert len(result["kl_per_dim"]) == 4  # --latent-dim 4
    assert sum(result["kl_per_dim"]) == pytest.approx(result["kl"], rel=1e-4)  # both analytic
    assert 0 <= result["active_units"] <= 4
    assert 0 <= result["mutual_information"] <= math.log(60) + 1e-6
    # kept with the run (its own test set), and the regenerated report shows it
    assert json.loads((digits_run / "evaluation.json").read_text()) == result
    assert main(["report", str(digits_run)]) == 0
    page = (digits_run / "report.html").read_text()
    assert f'log-likelihood</td><td class="num">{result["log_likelihood"]:.2f}<' in page


def test_the_default_digits_run_reports_log_probabilities_and_bits_per_dim_of_its_17_levels(
        default_run):
    """The embedded default's likelihood is discrete over digits' 17 grey levels: log p(x) is a
    log-probability (negative nats) and bits/dim is of the data (positive, below log2 17)."""
    digits_run = default_run
    config = json.loads((digits_run / "config.json").read_text())
    assert config["model"]["levels"] == 17 and config["data"]["binarize"] == "none"
    proc = run_cli("evaluate", digits_run, "--num-samples", "20", "--num-examples", "40",
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "log p(x) -" in proc.stdout and "nats/example (log-probability" in proc.stdout
    assert "bits per dimension of the 17-level data" in proc.stdout
    result = json.loads(run_cli("evaluate", digits_run, "--json", "--num-samples", "20",
                                "--num-examples", "40").stdout)
    assert result["log_likelihood"] < 0
    assert 0 < result["bits_per_dim"] < math.log2(17)
    # bits/dim of 8x8 images from the same number: -log p(x) / (64 ln 2)
    assert result["bits_per_dim"] == pytest.approx(-result["log_likelihood"] / (64 * math.log(2)))
    # the sampled images are on the grid of levels, as arrays in the data's units
    out = digits_run.parent / "draws.npy"
    assert main(["sample", str(digits_run), "--num", "6", "--draw", "--out", str(out)]) == 0
    draws = np.load(out)
    assert ((draws == np.round(draws)) & (draws >= 0) & (draws <= 16)).all()


def test_a_continuous_likelihood_says_why_it_has_no_bits_per_dim(digits_run):
    proc = run_cli("evaluate", digits_run, "--num-samples", "5", "--num-examples", "30",
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "nats/example (log-density" in proc.stdout
    assert "bits/dim: not reported, because the likelihood is a density" in proc.stdout


@pytest.mark.parametrize("args,needle", [
    (["--bits", "5"], "--bits 5 asks for 32 levels but 'digits' has only 17"),
    (["--data", "binarized-mnist", "--likelihood", "categorical"], "is binary"),
])
def test_discrete_likelihoods_refuse_data_they_cannot_model(args, needle, shared_data, tmp_path):
    if "binarized-mnist" in args:
        args = [*args, "--data-dir", shared_data / "binarized-mnist"]
    proc = run_cli("train", *args, "--out", tmp_path / "x")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_evaluate_on_other_data_leaves_the_run_alone(digits_run, tmp_path):
    x = np.random.default_rng(0).random((20, 1, 8, 8)).astype("float32")
    np.save(tmp_path / "other.npy", x)
    before = {p.name: p.stat().st_mtime_ns for p in digits_run.iterdir()}
    assert main(["evaluate", str(digits_run), "--data", str(tmp_path / "other.npy"),
                 "--num-samples", "5"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in digits_run.iterdir()} == before


def test_evaluate_without_log_likelihood_and_bad_counts(digits_run, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(digits_run), "--json", "--num-samples", "0"]) == 0
    assert "log_likelihood" not in json.loads(capsys.readouterr().out)
    for flag, value in [("--num-samples", "-1"), ("--num-examples", "0")]:
        assert main(["evaluate", str(digits_run), flag, value]) == 2
        assert flag in capsys.readouterr().err


def test_evaluate_spread_takes_examples_evenly_spaced_through_the_split(digits_run, capsys):
    """--num-examples N --spread: examples floor(i * N_test / N), not the first N."""
    import torch

    import vaekit
    from vaekit.evaluation import evaluate_elbo

    run = vaekit.load(digits_run)
    x, _ = run.split("test")
    n = 7
    index = [i * len(x) // n for i in range(n)]
    assert index[-1] > len(x) // 2  # reaches the second half
    capsys.readouterr()
    args = ["evaluate", str(digits_run), "--json", "--num-samples", "0", "--num-examples", str(n)]
    assert main(args + ["--spread"]) == 0
    spread = json.loads(capsys.readouterr().out)
    assert spread["num_examples"] == n and "spread" in spread["examples"]
    expected = evaluate_elbo(run.model, x[torch.tensor(index)])["elbo"]
    assert spread["elbo"] == pytest.approx(expected, abs=1e-4)
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["examples"] == f"first {n} of {len(x)}"
    assert first["elbo"] == pytest.approx(evaluate_elbo(run.model, x[:n])["elbo"], abs=1e-4)
    assert first["elbo"] != pytest.approx(spread["elbo"], abs=1e-3)  # different examples
    before = {q.name: q.stat().st_mtime_ns for q in digits_run.iterdir()}
    assert main(["evaluate", str(digits_run), "--spread"]) == 2  # without --num-examples
    assert "--num-examples" in capsys.readouterr().err
    assert {q.name: q.stat().st_mtime_ns for q in digits_run.iterdir()} == before


def test_evaluate_device(digits_run, capsys):
    """--device: the evaluation runs on the named device (auto, the default: CUDA when
    available); a device that is not there is a one-line error, exit 2, and no file changes."""
    import torch

    capsys.readouterr()
    args = ["evaluate", str(digits_run), "--json", "--num-samples", "0", "--num-examples", "20"]
    assert main(args + ["--device", "cpu"]) == 0
    on_cpu = json.loads(capsys.readouterr().out)
    assert main(args) == 0  # auto
    assert json.loads(capsys.readouterr().out)["elbo"] == pytest.approx(on_cpu["elbo"], abs=1e-3)
    before = {q.name: q.stat().st_mtime_ns for q in digits_run.iterdir()}
    bad = ["nonsense"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad:
        assert main(args + ["--device", device]) == 2
        err = capsys.readouterr().err
        assert err.startswith("vaekit: error:") and len(err.strip().splitlines()) == 1, err
    assert {q.name: q.stat().st_mtime_ns for q in digits_run.iterdir()} == before


def test_mnist_from_local_idx_files(shared_data, tmp_path):
    proc = run_cli("train", "--data", "mnist", "--data-dir", shared_data / "mnist", "--epochs", "1",
                   "--no-progress", "--out", tmp_path / "m")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("evaluate", tmp_path / "m", "--json", "--num-samples", "5")  # CI time
    result = json.loads(proc.stdout)
    assert result["num_examples"] == 10000
    assert -140 < result["elbo"] < -90  # one epoch of the 784-400-20 MLP


@pytest.mark.parametrize("args,needle", [
    (["train", "--epochz", "3"], "did you mean --epochs"),
    (["train", "--latent-dim", "0"], "latent_dim"),
    (["train", "--lr", "-1"], "lr"),
    (["train", "--data", "/no/such/file.npy"], "no/such"),
    (["train", "--likelihood", "bernoulli", "--binarize", "none"], "binary"),
    (["train", "--prior", "wishful"], "valid: normal"),
    (["evaluate", "/no/such/run"], "no such run"),
])
def test_bad_input_one_line_no_traceback(args, needle, tmp_path):
    proc = run_cli(*args, "--out", tmp_path / "x") if args[0] == "train" else run_cli(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_not_a_run_directory(tmp_path):
    proc = run_cli("sample", tmp_path, "--out", tmp_path / "s.png")
    assert proc.returncode == 2 and "not a vaekit run directory" in proc.stderr


def test_evaluate_with_data_of_another_shape(digits_run, shared_data):
    proc = run_cli("evaluate", digits_run, "--data", "mnist", "--data-dir", shared_data / "mnist")
    assert proc.returncode == 2 and "shape" in proc.stderr and "Traceback" not in proc.stderr
