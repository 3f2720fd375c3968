"""Training controls: learning-rate schedules (against their formulas and the IWAE paper's
table), Adam's betas and eps, Glorot initialisation, gradient clipping, the weight average used
for evaluation, early stopping with the best epoch's weights, and exact resume with all of
them on."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from vaekit.config import RunConfig, merge
from vaekit.training import Trainer
from vaekit.schedules import (IWAE_TOTAL_PASSES, LR_SCHEDULES, iwae_factor,
                                       iwae_stage_ends)

QUIET = dict(progress=False, log=lambda m: None, callbacks=[])


def tiny(epochs=3, latent_dim=2, **train):
    return merge(RunConfig(), {"model": {"hidden": (16,), "latent_dim": latent_dim},
                               "train": {"epochs": epochs, "batch_size": 256, **train}})


def lrs(trainer) -> list[float]:
    return [h["lr"] for h in trainer.history]


def test_the_iwae_schedule_is_the_papers_table_and_scales_down():
    # Burda et al. 2016: 3^i passes at 1e-3 * 10^(-i/7), i = 0..7
    assert IWAE_TOTAL_PASSES == 3280
    assert iwae_stage_ends(3280) == [1, 4, 13, 40, 121, 364, 1093, 3280]
    factor = iwae_factor(3280)
    for i, start in enumerate([0, 1, 4, 13, 40, 121, 364, 1093]):
        assert factor(start) == pytest.approx(10 ** (-i / 7))
    assert factor(3279) == pytest.approx(10 ** (-1))
    short = iwae_stage_ends(328)  # a tenth of the passes: every stage a tenth as long
    assert short[-1] == 328 and short[-2] == 109 and short[-3] == 36
    assert iwae_stage_ends(100) == [1, 2, 3, 4, 5, 11, 33, 100]  # every stage at least 1 epoch
    assert [iwae_factor(100)(e) for e in (0, 99)] == pytest.approx([1.0, 0.1])
    assert iwae_stage_ends(8) == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("schedule,options,expected", [
    ("constant", {}, lambda e: 1e-2),
    ("exponential", {"lr_gamma": 0.5}, lambda e: 1e-2 * 0.5**e),
    ("cosine", {"lr_min": 1e-3},
     lambda e: 1e-3 + (1e-2 - 1e-3) * (1 + math.cos(math.pi * e / 4)) / 2),
    ("iwae", {}, lambda e: 1e-2 * iwae_factor(4)(e)),
])
def test_each_schedule_follows_its_formula(schedule, options, expected, tmp_path):
    trainer = Trainer(tiny(4, lr=1e-2, lr_schedule=schedule, **options), tmp_path / "r", **QUIET)
    trainer.fit()
    assert lrs(trainer) == pytest.approx([expected(e) for e in range(4)], rel=1e-9)


def test_plateau_lowers_the_lr_when_the_validation_elbo_stops_improving(tmp_path):
    trainer = Trainer(tiny(5, lr=1e-2, lr_schedule="plateau", lr_patience=0, lr_factor=0.25),
                      tmp_path / "r", **QUIET)
    scripted = iter([-10.0, -12.0, -11.0, -9.0, -13.0])  # better, worse, worse, better, worse
    real = trainer.evaluate
    trainer.evaluate = lambda x, y=None: {**real(x, y), "elbo": next(scripted)} \
        if x is trainer.data.val else real(x, y)
    trainer.fit()
    assert lrs(trainer) == pytest.approx([1e-2, 1e-2, 2.5e-3, 6.25e-4, 6.25e-4])


def test_the_registry_names_every_schedule():
    assert set(LR_SCHEDULES) == {"constant", "exponential", "cosine", "plateau", "iwae"}


def test_adam_options_and_xavier_initialisation(tmp_path):
    # the Gaussian likelihood (the digits default before discrete likelihoods): the encoder net
    # is then the MLP itself, whose layers the test reads (a discrete likelihood puts the
    # parameter-free k / (n - 1) scaling in front of it)
    cfg = merge(tiny(1, adam_betas=(0.8, 0.99), adam_eps=1e-4),
                {"model": {"init": "xavier", "likelihood": "gaussian"}})
    trainer = Trainer(cfg, tmp_path / "r", **QUIET)
    group = trainer.optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.99) and group["eps"] == 1e-4
    for layer in trainer.model.encoder.net.layers:
        if isinstance(layer, torch.nn.Linear):
            bound = math.sqrt(6 / (layer.in_features + layer.out_features))  # Glorot uniform
            assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
            assert torch.all(layer.bias == 0)


def test_gradient_clipping_bounds_the_norm_of_every_step(tmp_path):
    trainer = Trainer(tiny(1, clip_grad_norm=0.5), tmp_path / "r", **QUIET)
    x = trainer.train_x[:256]
    assert trainer.train_step(x) is not None
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert float(torch.nn.utils.get_total_norm(grads)) <= 0.5 * (1 + 1e-5)


def test_the_weight_average_is_what_is_evaluated_and_saved(tmp_path):
    decay = 0.5
    trainer = Trainer(tiny(1, ema=decay), tmp_path / "r", **QUIET)
    x = trainer.train_x[:256]
    snapshots = []
    for _ in range(3):
        trainer.train_step(x)
        snapshots.append([p.detach().clone() for p in trainer.model.parameters()])
    # ema_1 = w_1, ema_t = decay * ema_{t-1} + (1 - decay) * w_t
    expected = [w1 * decay**2 + w2 * decay * (1 - decay) + w3 * (1 - decay)
                for w1, w2, w3 in zip(*snapshots)]
    for e, a in zip(expected, trainer.eval_model.parameters()):
        torch.testing.assert_close(a, e)
    trainer.fit()
    saved = load_file(tmp_path / "r" / "model.safetensors")
    for name, value in trainer.ema.module.state_dict().items():
        torch.testing.assert_close(saved[name], value)
    assert any(not torch.equal(saved[n], v) for n, v in trainer.model.state_dict().items())


@pytest.mark.parametrize("samples", [1, 4])  # the ELBO, or IWAE_4
def test_early_stopping_keeps_the_best_epochs_weights(tmp_path, samples, monkeypatch):
    import vaekit.training.loop as loop

    trainer = Trainer(tiny(10, early_stopping=2, early_stopping_samples=samples),
                      tmp_path / "r", **QUIET)
    bounds = iter([-10.0, -8.0, -9.0, -8.5, -7.0])  # best at epoch 2, then 2 worse: stop at 4
    at_epoch = {}

    class Snapshot:
        def on_epoch_end(self, t, metrics):
            at_epoch[metrics["epoch"]] = {k: v.clone() for k, v in t.model.state_dict().items()}

    trainer.callbacks = [Snapshot()]
    if samples == 1:  # the validation ELBO is the bound
        real = trainer.evaluate
        trainer.evaluate = lambda x, y=None: {**real(x, y), "elbo": next(bounds)} \
            if x is trainer.data.val else real(x, y)
    else:
        def iwae_bound(model, x, num_samples, y=None, seed=0):
            assert num_samples == 4 and x is trainer.data.val and y is None
            return torch.full((len(x),), next(bounds), dtype=torch.float64)

        monkeypatch.setattr(loop, "log_likelihood", iwae_bound)
    trainer.fit()
    assert [h["epoch"] for h in trainer.history] == [1, 2, 3, 4]
    assert [h["best_epoch"] for h in trainer.history] == [1, 2, 2, 2]
    assert trainer.history[1]["val_bound"] == -8.0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["best_epoch"] == 2 and results["stopped_early"] is True
    saved = load_file(tmp_path / "r" / "model.safetensors")
    for name, value in at_epoch[2].items():
        torch.testing.assert_close(saved[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("latent_dim", [2, (4, 2)])  # one and two stochastic layers
def test_resume_with_schedule_average_clipping_and_early_stopping_is_exact(tmp_path, latent_dim):
    cfg = tiny(4, latent_dim, lr_schedule="exponential", lr_gamma=0.7, ema=0.9,
               clip_grad_norm=5.0, early_stopping=3, batch_size=128)
    full = Trainer(cfg, tmp_path / "full", **QUIET)
    full.fit()
    part = Trainer(merge(cfg, {"train": {"epochs": 2}}), tmp_path / "part", **QUIET)
    part.fit()
    resumed = Trainer(cfg, tmp_path / "part", resume=True, **QUIET)
    resumed.fit()
    timing = {"seconds", "images_per_second"}
    strip = lambda hs: [{k: v for k, v in h.items() if k not in timing} for h in hs]  # noqa: E731
    assert strip(resumed.history) == strip(full.history)
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for p, q in zip(full.eval_model.parameters(), resumed.eval_model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert lrs(resumed) == pytest.approx([1e-3 * 0.7**e for e in range(4)])
