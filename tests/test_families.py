"""Model families (vaekit.families): every family trains, evaluates and resumes through the same
loop, evaluation and Run; run directories of the conditional and M2 families written before the
families seam (by main at 89b83a2, committed in tests/fixtures) load, evaluate to the numbers
they had, now with the two things that evaluation used to drop (bits/dim of a discrete
likelihood, the per-layer diagnostics), and resume."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import vaekit
from vaekit.config import ModelConfig, config_from_dict
from vaekit.errors import ConfigError
from vaekit.families import FAMILIES, build_model
from vaekit.training import Trainer
from vaekit.training.conditioning import CONDITIONS

FIXTURES = Path(__file__).parent / "fixtures"
CONDITIONAL = FIXTURES / "digits-conditional-89b83a2"  # --conditional-prior class --latent-dim 4,2
M2 = FIXTURES / "digits-m2-89b83a2"  # --semi-supervised --labels-per-class 10


@pytest.fixture(params=[CONDITIONAL, M2], ids=["conditional", "m2"])
def old_run(request, tmp_path) -> Path:
    """A copy of a committed run (its files are never modified in place)."""
    return Path(shutil.copytree(request.param, tmp_path / request.param.name))


def test_old_runs_evaluate_to_their_numbers(old_run):
    """evaluation.json was written by 89b83a2's `vaekit evaluate --num-samples 20`. The ELBO
    terms (one batch, the same seed) and M2's classification error and unlabelled bound are the
    same numbers; log p(x|y) is the same estimator under other per-batch seeds (the conditional
    path used to seed its batches apart from every other model's), so it agrees within its
    Monte Carlo error: here, within a tenth of its standard error across examples."""
    before = json.loads((old_run / "evaluation.json").read_text())
    after = vaekit.evaluate(old_run, num_samples=20)
    for key in ("elbo", "reconstruction", "kl", "elbo_given_label", "reconstruction_given_label",
                "kl_given_label", "elbo_labelled", "classification_error", "num_examples"):
        if key in before:
            assert after[key] == pytest.approx(before[key], rel=1e-9, abs=1e-9), key
    assert after["conditioned_on"] == before["conditioned_on"] == "label"
    assert abs(after["log_likelihood"] - before["log_likelihood"]) < 0.1 * before[
        "log_likelihood_stderr"]


def test_conditional_runs_report_bits_per_dim_of_their_discrete_likelihood(old_run):
    """The digits' default likelihood is a discretized logistic over 17 levels, a probability
    of the data: a conditional or M2 run reports bits/dim as every other run does (it used to
    say the likelihood was a density), bits/dim = -log p(x|y) / (D ln 2) with D = 64."""
    before = json.loads((old_run / "evaluation.json").read_text())
    assert "bits_per_dim" not in before and "continuous" in before["bits_per_dim_absent"]
    assert vaekit.load(old_run).config.model.likelihood == "discretized-logistic"
    after = vaekit.evaluate(old_run, num_samples=20)
    assert "bits_per_dim_absent" not in after
    assert after["bits_per_dim"] == pytest.approx(-after["log_likelihood"] / (64 * math.log(2)),
                                                  rel=1e-12)


def test_a_conditional_run_with_two_layers_gets_the_per_layer_diagnostics(tmp_path):
    """q(z|x,y) against p(z|y) layer by layer: two KLs and two active-unit counts, the KLs
    summing to the KL of the bound (Monte Carlo both, over the same 180 examples)."""
    run_dir = Path(shutil.copytree(CONDITIONAL, tmp_path / "run"))
    assert vaekit.load(run_dir).model.latent_dims == (4, 2)
    result = vaekit.evaluate(run_dir, num_samples=5)
    assert len(result["kl_per_layer"]) == 2 and len(result["active_units_per_layer"]) == 2
    assert sum(result["active_units_per_layer"]) == result["active_units"]
    assert sum(result["kl_per_layer"]) == pytest.approx(result["kl"], abs=0.1)
    assert len(result["posterior_mean_variance"]) == 6


def test_old_runs_resume(old_run):
    config = vaekit.load(old_run).config
    more = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 4})})
    Trainer(more, old_run, resume=True, progress=False, log=lambda m: None, callbacks=[]).fit()
    assert [h["epoch"] for h in vaekit.load(old_run).history] == [1, 2, 3, 4]


def test_the_flags_name_the_family_and_contradictions_are_refused():
    assert ModelConfig().family_name == "vae"
    assert ModelConfig(conditional=True).family_name == "conditional"
    assert ModelConfig(semi_supervised=True).family_name == "semi-supervised"
    assert ModelConfig(family="conditional").family_name == "conditional"
    with pytest.raises(ValueError, match="--conditional is the family 'conditional'"):
        ModelConfig(family="vae", conditional=True)
    with pytest.raises(ConfigError, match="unknown family 'nope'"):
        config_from_dict({"model": {"family": "nope"}})


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_trains_and_evaluates_through_the_same_loop(family, tmp_path):
    """Each registered family: one epoch of the embedded digits through the one loop, the one
    evaluation path (ELBO, log p(x), bits/dim, latent diagnostics) and a resume."""
    train = {"epochs": 1, "batch_size": 64, "report": False}
    if family == "semi-supervised":
        train["labels_per_class"] = 5
    config = config_from_dict({"model": {"family": family, "hidden": [16], "latent_dim": 2},
                               "train": train})
    kind = FAMILIES[family].condition_kind_of(config.model, config.data)
    assert kind in CONDITIONS
    run_dir = tmp_path / family
    Trainer(config, run_dir, progress=False, log=lambda m: None, callbacks=[]).fit()
    run = vaekit.load(run_dir)
    assert isinstance(run.model, FAMILIES[family])
    result = run.evaluate(num_samples=3)
    for key in ("elbo", "log_likelihood", "bits_per_dim", "active_units", "mutual_information"):
        assert math.isfinite(result[key]), key
    more = run.config.model_copy(update={"train": run.config.train.model_copy(
        update={"epochs": 2})})
    Trainer(more, run_dir, resume=True, progress=False, log=lambda m: None, callbacks=[]).fit()
    assert [h["epoch"] for h in vaekit.load(run_dir).history] == [1, 2]


def test_an_unconditional_model_takes_no_condition():
    model = build_model(ModelConfig(hidden=(8,), latent_dim=2, likelihood="bernoulli"),
                        (1, 8, 8))
    assert model.given(None) is model
    with pytest.raises(ConfigError, match="unconditional"):
        model.given(torch.zeros(3, dtype=torch.long))


def test_m2_refuses_the_options_of_other_objectives_instead_of_ignoring_them():
    config = config_from_dict({"model": {"family": "semi-supervised", "hidden": [8],
                                         "latent_dim": 2, "num_classes": 3, "likelihood":
                                         "bernoulli"}, "train": {"labels_per_class": 1}})
    model = build_model(config.model, (4,))
    x, y = torch.rand(5, 4).round(), torch.tensor([0, 1, -1, -1, 2])
    loss, _ = model.training_loss(x, y, classification_weight=1.0)
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="M2 bound"):
        model.training_loss(x, y, beta=0.5, classification_weight=1.0)


def test_a_family_added_as_the_architecture_docs_show(tmp_path, monkeypatch):
    """docs/architecture.md's worked example, run: a family is one class (here the annealed
    capacity objective of Burgess et al. 2018, a loss of its own) plus one registry entry, and
    the config, the loop, the evaluation and Run take it with no other change."""
    from vaekit.model import VAE
    from vaekit.objectives import elbo_terms

    class CapacityVAE(VAE):
        """loss = -E_q[log p(x|z)] + gamma |KL - C|: the KL held near a capacity C nats."""

        gamma, capacity = 100.0, 3.0

        def training_loss(self, x, y=None, *, objective="elbo", beta=1.0, free_bits=0.0,
                          num_samples=1, gradient_estimator="reparameterization"):
            terms = elbo_terms(self.given(y), x, num_samples)
            kl_gap = (terms.kl.mean() - self.capacity).abs()
            return -terms.reconstruction.mean() + self.gamma * kl_gap, terms

    monkeypatch.setitem(FAMILIES, "capacity", CapacityVAE)
    config = config_from_dict({"model": {"family": "capacity", "hidden": [32], "latent_dim": 4},
                               "train": {"epochs": 3, "report": False}})
    Trainer(config, tmp_path / "run", progress=False, log=lambda m: None, callbacks=[]).fit()
    run = vaekit.load(tmp_path / "run")
    assert type(run.model).__name__ == "CapacityVAE"
    result = run.evaluate(num_samples=3)
    assert abs(result["kl"] - CapacityVAE.capacity) < 1.0  # the loss held the KL at C
