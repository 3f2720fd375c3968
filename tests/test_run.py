"""The Run object: a run directory written by vaekit 0.1.0 before the Run existed (committed in
tests/fixtures) still loads, evaluates to the numbers it had then, resumes and reports; the
pre-Run API (load() giving the model) keeps working with a warning; class names reach the
report of a run loaded from disk."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import vaekit
from vaekit.data import Dataset
from vaekit.run import DataInfo, Run, load
from vaekit.training import Trainer

FIXTURE = Path(__file__).parent / "fixtures" / "digits-run-0.1.0"


@pytest.fixture
def old_run(tmp_path) -> Path:
    """A copy of the committed run (its files are never modified in place)."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "old"))


def test_a_run_written_by_version_0_1_0_loads_with_everything_it_had(old_run):
    run = vaekit.load(old_run)
    assert isinstance(run, Run) and isinstance(run.model, torch.nn.Module)
    assert not run.model.training
    assert run.data == DataInfo("digits", (1, 8, 8), "unit", True, tuple("0123456789"))
    assert run.config.model.hidden == (64,) and run.config.model.latent_dim == 4
    assert [h["epoch"] for h in run.history] == list(range(1, 61))
    assert run.results["elbo"] == pytest.approx(13.902, abs=1e-3)
    assert run.versions["vaekit"] == "0.1.0"
    x, labels = run.split("test")
    assert x.shape == (180, 1, 8, 8) and labels.shape == (180,)


def test_the_old_run_evaluates_to_the_numbers_its_version_wrote(old_run):
    """evaluation.json was written by 0.1.0's `vaekit evaluate --num-samples 20`: the same
    evaluation today gives the same numbers (same seeds, same math). One number is gone on
    purpose: 0.1.0 printed -log p(x) / (D ln 2) as bits/dim for this Gaussian likelihood (a
    density, so it was negative); now the evaluation says why there is no bits/dim."""
    before = json.loads((old_run / "evaluation.json").read_text())
    after = vaekit.evaluate(old_run, num_samples=20)
    assert before["bits_per_dim"] < 0 and "bits_per_dim" not in after
    assert "continuous" in after["bits_per_dim_absent"]
    for key, value in before.items():
        if key == "bits_per_dim":
            continue
        if isinstance(value, str) or value is None:
            assert after[key] == value, key
        elif key != "log_likelihood_seconds":
            assert after[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert json.loads((old_run / "evaluation.json").read_text())["elbo"] == after["elbo"]


def test_the_old_run_resumes_and_reports(old_run):
    config = vaekit.load(old_run).config
    more = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 62})})
    Trainer(more, old_run, resume=True, progress=False, log=lambda m: None).fit()
    run = vaekit.load(old_run)
    assert [h["epoch"] for h in run.history][-3:] == [60, 61, 62]
    from vaekit.view.report import write_report

    page = write_report(old_run).read_text()
    assert "Latent space" in page and "log-likelihood" in page  # the evaluation is reported


def test_load_keeps_the_pre_run_api_with_a_deprecation_warning(old_run):
    run = vaekit.load(old_run)
    x, _ = run.split()
    with pytest.warns(DeprecationWarning, match="run.model"):
        q_z = run.encode(x[:4])
    torch.testing.assert_close(q_z.mean, run.model.encode(x[:4]).mean)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.manual_seed(3)
        through_run = vaekit.elbo(run, x[:4])
        torch.manual_seed(3)
        torch.testing.assert_close(through_run, vaekit.elbo(run.model, x[:4]))
        assert run.sample(3).shape == (3, 1, 8, 8)
    assert run.info["is_image"] is True
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        run.nonsense


def test_class_names_are_stored_with_the_run_and_reach_a_report_written_later(tmp_path,
                                                                              monkeypatch):
    """A Fashion-MNIST-like run: class names come from the data set at training time; the
    report written later from disk (not by the trainer) still shows them on the latent map."""
    names = ("T-shirt/top", "Trouser", "Pullover")
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(300, 1, 8, 8, generator=g) < 0.3).float()
    y = torch.arange(300) % 3
    dataset = Dataset("fashionish", x[:200], x[200:250], x[250:], y[:200], y[200:250], y[250:],
                      "binary", True, names)
    config = vaekit.RunConfig.model_validate({"data": {"name": "fashionish"},
                                              "model": {"hidden": [16], "latent_dim": 2},
                                              "train": {"epochs": 1, "report": False}})
    Trainer(config, tmp_path / "run", dataset=dataset, progress=False, log=lambda m: None,
            callbacks=[]).fit()
    meta = json.loads(_safetensors_metadata(tmp_path / "run" / "model.safetensors"))
    assert meta["class_names"] == list(names)
    run = load(tmp_path / "run")
    assert run.data.class_names == names
    from vaekit.view import plots
    from vaekit.view.report import render_report

    seen = []
    real = plots.latent_map
    monkeypatch.setattr(plots, "latent_map", lambda p, labels, class_names=None, **kw: (
        seen.append(class_names), real(p, labels, class_names, **kw))[1])
    render_report(run, x[250:], y[250:])
    assert seen == [names]


def _safetensors_metadata(path: Path) -> str:
    data = path.read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return header["__metadata__"]["vaekit"]
