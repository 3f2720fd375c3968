"""The reproduction table (docs/reproduction.json) is built from run directories by
benchmarks/reproduction_table.py and can be checked by a program: these tests check the builder
on a synthetic run and the committed table against the evaluation files it was built from."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


table = load("reproduction_table")
ROWS = load("reproduce").ROWS


def fake_run(path: Path, *, log_px: float, epochs: int = 3) -> Path:
    """A finished one-layer IWAE-paper run: the config of a real run, a short learning curve,
    an evaluation at K = 5000 on 10,000 test images, and weights that must not be copied."""
    from vaekit.config import load_config_file, merge

    config = merge(load_config_file(ROOT / "presets" / "iwae-paper-vae-1layer.toml"),
                   {"train": {"epochs": epochs, "batch_size": 100}})
    path.mkdir(parents=True)
    (path / "config.json").write_text(config.model_dump_json())
    (path / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "step": 540 * e, "val_elbo": -120.0 + e, "seconds": 6.0}) + "\n"
        for e in range(1, epochs + 1)))
    (path / "evaluation.json").write_text(json.dumps({
        "split": "test", "elbo": log_px - 5, "log_likelihood": log_px,
        "log_likelihood_stderr": 0.25, "num_samples": 5000, "num_examples": 10000,
        "active_units": 20, "log_likelihood_seconds": 600.0}))
    (path / "model.safetensors").write_bytes(b"weights")
    return path


def docs_dir(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "reproduction.md").write_text(f"intro\n{table.TABLE_START}\nold table\n{table.TABLE_END}\nrest\n")
    return docs


def test_builds_every_row_from_the_runs(tmp_path):
    docs = docs_dir(tmp_path)
    run = fake_run(tmp_path / "vae-1layer-e3", log_px=-90.0)
    assert table.main([str(run), "--docs", str(docs)]) == 0
    rows = json.loads((docs / "reproduction.json").read_text())
    assert [r["row"] for r in rows] == list(ROWS)  # every published row, in order
    for r in rows:
        assert set(table.FIELDS) <= set(r)
    measured = rows[0]
    assert measured["status"] == "measured" and measured["run"] == "vae-1layer-e3"
    assert measured["vaekit_nll"] == 90.0 and measured["vaekit_nll_stderr"] == 0.25
    assert measured["gap"] == pytest.approx(90.0 - 86.76)
    assert (measured["dataset"], measured["stochastic_layers"]) == ("mnist-dynamic", 1)
    assert (measured["epochs"], measured["batch_size"], measured["paper_epochs"],
            measured["paper_batch_size"], measured["steps"]) == (3, 100, 3280, 20, 1620)
    assert "--epochs 3" in measured["command"] and "--batch-size 100" in measured["command"]
    for r in rows[1:]:  # a row without a run says why
        assert r["status"] == "not run" and r["vaekit_nll"] is None and r["note"]
    page = (docs / "reproduction.md").read_text()
    assert "old table" not in page and page.startswith("intro\n") and page.endswith("rest\n")
    assert "| `vae-1layer` | 86.76 | 90.00 ± 0.25 | +3.24 |" in page
    copied = docs / "reproduction" / "vae-1layer-e3"
    assert (copied / "evaluation.json").is_file() and not (copied / "model.safetensors").exists()
    assert (docs / "reproduction" / "curves-mnist-dynamic.png").stat().st_size > 0


def test_an_unfinished_run_is_refused_before_anything_is_written(tmp_path, capsys):
    docs = docs_dir(tmp_path)
    run = fake_run(tmp_path / "unfinished", log_px=-90.0)
    (run / "evaluation.json").unlink()
    before = (docs / "reproduction.md").read_text()
    assert table.main([str(run), "--docs", str(docs)]) == 2
    assert "no evaluation.json" in capsys.readouterr().err
    assert (docs / "reproduction.md").read_text() == before
    assert not (docs / "reproduction.json").exists() and not (docs / "reproduction").exists()


def test_the_committed_table_matches_its_run_files():
    rows = json.loads((ROOT / "docs" / "reproduction.json").read_text())
    assert {r["row"] for r in rows} == set(ROWS)
    for r in rows:
        assert set(table.FIELDS) <= set(r)
        assert r["dataset"] in ("mnist-dynamic", "mnist-static", "fashion-mnist-dynamic",
                                "omniglot", "caltech101-silhouettes", "frey-faces")
        if r["status"] != "measured":
            assert r["vaekit_nll"] is None and r["note"], r["row"]
            continue
        evaluation = json.loads(
            (ROOT / "docs" / "reproduction" / r["run"] / "evaluation.json").read_text())
        assert r["vaekit_nll"] == pytest.approx(-evaluation["log_likelihood"], abs=1e-3)
        assert r["vaekit_nll_stderr"] == pytest.approx(evaluation["log_likelihood_stderr"], abs=1e-3)
        # the papers' protocol: K = 5000 on the whole test set
        test_size = {"omniglot": 8070, "caltech101-silhouettes": 2307, "frey-faces": 200}
        assert (r["num_samples"], r["num_test_examples"]) == (5000,
                                                             test_size.get(r["dataset"], 10000))
        if r["published_nll"] is None:  # no published number confirmed: no gap
            assert r["gap"] is None
        else:
            assert r["gap"] == pytest.approx(r["vaekit_nll"] - r["published_nll"], abs=1e-3)
