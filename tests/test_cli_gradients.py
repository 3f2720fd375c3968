"""`vaekit gradients` and `vaekit train --gradient-estimator`, end to end."""

import json
import math

import pytest

from vaekit.cli import main

FAST = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--no-progress"]


@pytest.fixture(scope="module")
def score_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("grad") / "run"
    assert main(["train", *FAST, "--gradient-estimator", "score", "--out", str(out)]) == 0
    return out


def test_train_with_score_function_estimator(score_run):
    config = json.loads((score_run / "config.json").read_text())
    assert config["train"]["gradient_estimator"] == "score"
    metrics = [json.loads(line) for line in (score_run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and metrics[-1]["skipped_steps"] == 0
    for m in metrics:
        assert all(math.isfinite(m[k]) for k in ("train_elbo", "val_elbo", "train_kl"))


def test_gradients_json_toy_and_run(score_run, tmp_path, capsys):
    # the toy's own sample count is --toy-samples (default 1,000,000); --num-samples is the VAE's
    assert main(["gradients", str(score_run), "--num-samples", "200", "--toy-samples", "200",
                 "--out", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for name in ("reparameterization", "score_function", "score_function_baseline"):
        toy = report["toy"][name]
        assert toy["exact_mean"] == 2.0 and toy["num_samples"] == 200
        assert abs(toy["mean"] - 2.0) < 5 * math.sqrt(toy["exact_variance"] / 200)
        assert set(report["vae"][name]) >= {"mean_abs", "variance", "snr", "num_samples"}
    assert report["toy"]["reparameterization"]["exact_variance"] == 4.0
    assert report["toy"]["score_function"]["exact_variance"] == 30.0
    assert report["variance_ratio"]["vae"] > 1
    assert (tmp_path / "gradient_variance.png").stat().st_size > 1000
    # standard errors of every measured mean and variance, and of the ratio
    for name in ("reparameterization", "score_function", "score_function_baseline"):
        toy, vae = report["toy"][name], report["vae"][name]
        assert toy["mean_stderr"] == pytest.approx(math.sqrt(toy["variance"] / 200))
        assert 0 < toy["variance_stderr"] < toy["variance"]
        assert toy["exact_variance_stderr"] > 0
        assert vae["num_samples"] == 200
        assert vae["mean_stderr"] > 0 and 0 < vae["variance_stderr"] < vae["variance"]
        assert vae["variance_stderr_per_parameter"] > 0
    for key in ("toy", "vae"):
        ratio, stderr = report["variance_ratio"][key], report["variance_ratio_stderr"][key]
        low, high = report["variance_ratio_interval"][key]
        assert 0 < stderr < ratio and low < ratio < high


def test_gradients_table_without_run(tmp_path, capsys):
    assert main(["gradients", "--num-samples", "100", "--theta", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "score_function_baseline" in out and "exact gradient 4" in out
    assert (tmp_path / "gradient_variance.png").exists()


def test_gradients_tables_show_standard_errors(score_run, tmp_path, capsys):
    assert main(["gradients", str(score_run), "--num-samples", "50", "--toy-samples", "1000",
                 "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.split(" ")[0] in
            ("reparameterization", "score_function", "score_function_baseline")]
    assert len(rows) == 6  # the toy table and the VAE table
    assert all(row.count("±") == 2 for row in rows[:3])  # mean and variance
    assert all(row.count("±") == 1 for row in rows[3:])  # variance (means: stderr/param column)
    assert any("stderr/param" in line for line in lines)
    ratio = next(i for i, line in enumerate(lines) if line.startswith("variance ratio"))
    assert lines[ratio].count("±") == 2 and "(exact 7.5)" in lines[ratio]
    assert "delta-method standard error" in lines[ratio + 1] and "95% interval" in lines[ratio + 1]


@pytest.mark.parametrize("args,needle", [
    (["gradients", "--num-samples", "1"], "at least 2"),
    (["gradients", "--toy-samples", "1"], "--toy-samples must be at least 2"),
    (["train", "--gradient-estimator", "reinforce"], "unknown gradient estimator"),
    (["train", *FAST, "--gradient-estimator", "score-baseline"], "num-samples 2"),
])
def test_bad_input_is_one_line(args, needle, tmp_path, capsys):
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
