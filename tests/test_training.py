"""The training loop: it learns, it is reproducible, its run directory round-trips, and a
resumed run continues exactly as the uninterrupted one."""

import json

import pytest
import torch

import vaekit
from vaekit.storage import load_tensors
from vaekit.config import RunConfig, merge
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation import evaluate_elbo
from vaekit.data import dynamic_binarize
from vaekit.training import Trainer


def tiny(epochs=2, **model):
    model = {"hidden": (32,), "latent_dim": 4, "likelihood": "bernoulli", **model}
    return merge(RunConfig(), {"train": {"epochs": epochs, "batch_size": 64}, "model": model})


def test_training_improves_the_elbo_and_writes_a_run(tmp_path):
    run = vaekit.train(tiny(epochs=8), tmp_path / "run", progress=False, log=lambda m: None)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, 9))
    assert history[-1]["val_elbo"] > history[0]["val_elbo"] + 3  # nats: it learned something
    for name in ["config.json", "model.safetensors", "checkpoint.safetensors", "results.json",
                 "samples.png", "reconstructions.png", "interpolation.png"]:
        assert (run / name).is_file(), name
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["likelihood"] == "bernoulli" and saved["data"]["binarize"] == "dynamic"


def test_load_round_trip_gives_identical_outputs(tmp_path):
    trainer = Trainer(tiny(epochs=1), tmp_path / "run", progress=False, log=lambda m: None)
    trainer.fit()
    model = vaekit.load(tmp_path / "run").model
    x = trainer.data.test[:16]
    torch.testing.assert_close(model.encode(x).mean, trainer.model.encode(x).mean)
    torch.testing.assert_close(model.reconstruct(x), trainer.model.reconstruct(x))
    assert model.sample(5).shape == (5, 1, 8, 8)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    again = evaluate_elbo(model, trainer.data.test)
    assert again["elbo"] == pytest.approx(results["elbo"], abs=1e-4)


def test_same_seed_same_run_different_seed_different_run(tmp_path):
    def final(seed, name):
        cfg = merge(tiny(epochs=1), {"train": {"seed": seed}})
        t = Trainer(cfg, tmp_path / name, progress=False, log=lambda m: None)
        t.fit()
        return torch.cat([p.flatten() for p in t.model.parameters()])

    a, b, c = final(0, "a"), final(0, "b"), final(1, "c")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    full = Trainer(tiny(epochs=3), tmp_path / "full", progress=False, log=lambda m: None)
    full.fit()
    Trainer(tiny(epochs=1), tmp_path / "part", progress=False, log=lambda m: None).fit()
    resumed = Trainer(tiny(epochs=3), tmp_path / "part", resume=True, progress=False,
                      log=lambda m: None)
    assert resumed.epoch == 1 and resumed.resumed
    resumed.fit()
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    _, meta = load_tensors(tmp_path / "part" / "checkpoint.safetensors")
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3]


@pytest.mark.parametrize("likelihood,binarize", [("gaussian", "none"), ("continuous-bernoulli", "none"),
                                                 ("bernoulli", "static")])
def test_every_likelihood_trains_to_finite_numbers(tmp_path, likelihood, binarize):
    cfg = merge(tiny(epochs=1, likelihood=likelihood), {"data": {"binarize": binarize}})
    run = vaekit.train(cfg, tmp_path / "r", progress=False, log=lambda m: None)
    results = json.loads((run / "results.json").read_text())
    assert all(torch.isfinite(torch.tensor(results[k])) for k in ("elbo", "reconstruction", "kl"))


def test_conv_architecture_trains(tmp_path):
    run = vaekit.train(tiny(epochs=1, arch="conv"), tmp_path / "r", progress=False, log=lambda m: None)
    assert vaekit.load(run).model.sample(2).shape == (2, 1, 8, 8)


def test_grey_levels_under_plain_bernoulli_are_refused(tmp_path):
    cfg = merge(tiny(likelihood="bernoulli"), {"data": {"binarize": "none"}})
    with pytest.raises(DataError, match="binary"):
        Trainer(cfg, tmp_path / "r", progress=False)


def test_batch_larger_than_data_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="batch"):
        Trainer(merge(tiny(), {"train": {"batch_size": 100_000}}), tmp_path / "r", progress=False)


def test_mnist_ten_epochs_reach_the_reference_elbo(shared_data, tmp_path):
    """The core issue's bar: the 784-400-20 MLP VAE, Bernoulli likelihood with dynamic
    binarization, 10 epochs on MNIST, has a test ELBO above -105 nats (measured -102.6)."""
    cfg = merge(RunConfig(), {"data": {"name": "mnist", "data_dir": str(shared_data / "mnist")},
                              "train": {"epochs": 10}})
    run = vaekit.train(cfg, tmp_path / "mnist", progress=False, log=lambda m: None)
    results = json.loads((run / "results.json").read_text())
    assert results["num_examples"] == 10_000
    assert results["elbo"] > -105.0, results


def test_a_table_in_mixed_units_is_standardized_and_trains(tmp_path):
    from sklearn.datasets import load_wine

    wine = load_wine()  # 13 columns from ~0.1 (hue) to ~1000 (proline)
    lines = [",".join(wine.feature_names + ["label"])]
    lines += [",".join(f"{v:.6g}" for v in row) + f",{y}" for row, y in zip(wine.data, wine.target)]
    (tmp_path / "wine.csv").write_text("\n".join(lines) + "\n")
    cfg = merge(RunConfig(), {"data": {"name": str(tmp_path / "wine.csv")},
                              "train": {"epochs": 30, "batch_size": 32}, "model": {"latent_dim": 2}})
    trainer = Trainer(cfg, tmp_path / "run", progress=False, log=lambda m: None)
    assert trainer.config.model.standardize and trainer.config.model.likelihood == "gaussian"
    trainer.fit()
    model = vaekit.load(tmp_path / "run").model
    x = trainer.data.test
    # the scaling was saved with the weights: same ELBO after loading, in the data's own units
    torch.manual_seed(0)
    a = vaekit.elbo(model, x)
    torch.manual_seed(0)
    b = vaekit.elbo(trainer.model.eval(), x)
    torch.testing.assert_close(a, b)
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert history[-1]["val_elbo"] > history[0]["val_elbo"]


# ------------------------------------------------------------------------------------------
# robustness (issue 8): mid-epoch checkpoints, stop signals, non-finite steps

import os  # noqa: E402
import signal  # noqa: E402

from vaekit.training import checkpoint as checkpoint_module  # noqa: E402
from vaekit.training import loop as training  # noqa: E402
from vaekit.errors import TrainingDiverged, TrainingInterrupted  # noqa: E402
from vaekit.model import VAE  # noqa: E402

QUIET = dict(progress=False, log=lambda m: None)
TIMING = {"seconds", "images_per_second"}


def without_timing(history):
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def count_calls(monkeypatch, on_call, trainer=None):
    """Wraps the model's training loss (:meth:`vaekit.model.VAE.training_loss`; of ``trainer``'s
    model when it is built already, else of every model built next); ``on_call(n, model, loss,
    terms)`` may replace the result of the n-th call (0-based)."""
    real = VAE.training_loss
    calls = []

    def wrapped(model, x, y=None, **kwargs):
        loss, terms = real(model, x, y, **kwargs)
        calls.append(len(calls))
        return on_call(len(calls) - 1, model, loss, terms) or (loss, terms)

    if trainer is not None:
        monkeypatch.setattr(trainer.model, "training_loss", wrapped.__get__(trainer.model))
    else:
        monkeypatch.setattr(VAE, "training_loss", wrapped)
    return calls


def test_sigterm_mid_epoch_saves_and_resume_is_exact(tmp_path, monkeypatch):
    """A real SIGTERM in the middle of epoch 2 (23 batches of 64 per epoch): the loop saves at
    that step and raises TrainingInterrupted; resuming gives the uninterrupted run's weights
    and the same epoch-2 train ELBO (the running sums were checkpointed)."""
    cfg = tiny(epochs=2)
    full = Trainer(cfg, tmp_path / "full", **QUIET)
    full.fit()

    def send_sigterm(n, model, loss, terms):
        if n == 30:  # batch 7 of epoch 2
            os.kill(os.getpid(), signal.SIGTERM)

    count_calls(monkeypatch, send_sigterm)
    part = Trainer(cfg, tmp_path / "part", **QUIET)
    with pytest.raises(TrainingInterrupted, match="SIGTERM: stopped at epoch 2, step 31") as stop:
        part.fit()
    assert stop.value.exit_status == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    _, meta = load_tensors(tmp_path / "part" / "checkpoint.safetensors")
    assert (meta["epoch"], meta["step"], meta["in_epoch"]["batch"]) == (1, 31, 8)
    monkeypatch.undo()
    resumed = Trainer(cfg, tmp_path / "part", resume=True, **QUIET)
    assert resumed.state.progress.batch == 8 and resumed.state.progress.seen == 8 * 64
    resumed.fit()
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert without_timing(resumed.history) == without_timing(full.history)


def test_checkpoint_every_steps_writes_mid_epoch_checkpoints(tmp_path, monkeypatch):
    saved = []
    real_save = checkpoint_module.save_tensors
    monkeypatch.setattr(checkpoint_module, "save_tensors",
                        lambda path, tensors, meta: (saved.append((meta["step"], meta["in_epoch"]["batch"])),
                                                     real_save(path, tensors, meta)))
    cfg = merge(tiny(epochs=1), {"train": {"checkpoint_every_steps": 10}})
    Trainer(cfg, tmp_path / "r", **QUIET).fit()
    assert saved == [(10, 10), (20, 20), (23, 0)]  # two mid-epoch, then the end of epoch 1


def test_non_finite_losses_are_skipped_counted_and_leave_the_model_untouched(tmp_path, monkeypatch):
    trainer = Trainer(tiny(epochs=1), tmp_path / "r", **QUIET)
    snapshots = {}

    def poison(n, model, loss, terms):
        if n in (3, 4):  # the state before and after the poisoned call 3
            adam = [t.clone() for s in trainer.optimizer.state.values() for t in s.values()]
            snapshots[n] = [p.detach().clone() for p in model.parameters()] + adam
        if n == 3:
            return loss * float("nan"), terms
        if n == 10:
            return loss * float("inf"), terms

    count_calls(monkeypatch, poison, trainer)
    trainer.fit()
    assert trainer.skipped_steps == 2 and trainer.step == len(trainer.batches) - 2
    assert trainer.history[-1]["skipped_steps"] == 2
    assert len(snapshots[3]) == len(snapshots[4]) > 2 * len(list(trainer.model.parameters()))
    for before, after in zip(snapshots[3], snapshots[4]):  # parameters and Adam moments
        assert torch.equal(before, after)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_nan_gradients_are_caught_and_repeated_failures_stop_naming_the_term(tmp_path, monkeypatch):
    """Finite loss, NaN gradient in the decoder (which only the reconstruction term reaches):
    the steps are skipped; after MAX_BAD_STEPS in a row training stops, names the
    reconstruction term, and the last good checkpoint is kept byte for byte."""
    monkeypatch.setattr(training, "MAX_BAD_STEPS", 5)
    Trainer(tiny(epochs=1), tmp_path / "r", **QUIET).fit()
    checkpoint = tmp_path / "r" / "checkpoint.safetensors"
    good = checkpoint.read_bytes()
    trainer = Trainer(tiny(epochs=2), tmp_path / "r", resume=True, **QUIET)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.model.decoder.net.layers[-1].bias.register_hook(lambda g: g * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"the reconstruction term .* 5 steps in a row after "
                                               r"step 23; lower --lr .*last good checkpoint kept"):
        trainer.fit()
    assert checkpoint.read_bytes() == good
    assert trainer.skipped_steps == 5
    for p, q in zip(before, trainer.model.parameters()):
        assert torch.equal(p, q)


def test_exploding_kl_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(training, "MAX_BAD_STEPS", 3)

    def inf_kl(n, model, loss, terms):
        kl = terms.kl * float("inf")
        return loss + kl.mean(), terms._replace(kl=kl, elbo=terms.elbo - kl)

    count_calls(monkeypatch, inf_kl)
    with pytest.raises(TrainingDiverged, match="the KL term"):
        Trainer(tiny(epochs=1), tmp_path / "r", **QUIET).fit()
    assert not (tmp_path / "r" / "checkpoint.safetensors").exists()  # nothing good to keep


def test_absurd_learning_rate_stops_with_finite_last_checkpoint(tmp_path):
    cfg = merge(tiny(epochs=2), {"train": {"lr": 1e10, "checkpoint_every_steps": 1}})
    with pytest.raises(TrainingDiverged, match="reconstruction term"):
        Trainer(cfg, tmp_path / "r", **QUIET).fit()
    tensors, meta = load_tensors(tmp_path / "r" / "checkpoint.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert meta["step"] >= 1


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint.safetensors").write_bytes(b"a previous run")
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        Trainer(tiny(epochs=1), tmp_path / "r", **QUIET)


def test_damaged_checkpoint_state_gives_a_checkpoint_error(tmp_path):
    """A checksummed file whose contents do not fit the model (written by a faulty tool)."""
    from vaekit.storage import save_tensors
    from vaekit.errors import CheckpointError

    trainer = Trainer(tiny(epochs=1), tmp_path / "r", **QUIET)
    trainer.run_dir.mkdir()
    trainer.save_checkpoint()
    path = tmp_path / "r" / "checkpoint.safetensors"
    tensors, meta = load_tensors(path)
    del meta["format"], meta["format_version"]
    key = next(k for k in tensors if k.startswith("state.model."))
    save_tensors(path, {**tensors, key: torch.zeros(3)}, meta)
    with pytest.raises(CheckpointError, match="does not match the model"):
        Trainer(tiny(epochs=2), tmp_path / "r", resume=True, **QUIET)
    save_tensors(path, {k: v for k, v in tensors.items() if k != key}, meta)
    with pytest.raises(CheckpointError, match=f"missing tensor '{key}'"):
        Trainer(tiny(epochs=2), tmp_path / "r", resume=True, **QUIET)


def test_compiled_training_follows_the_eager_run_and_compiles_once_per_batch_shape(tmp_path,
                                                                                    monkeypatch):
    """--compile (torch.compile of the loss) trains the same model as eager execution: with
    inductor drawing its random numbers through the eager generator, the weights after two
    epochs with KL warm-up agree to float tolerance. Warm-up changes beta every step and the
    last batch of an epoch is smaller; neither may compile the loss again beyond one graph per
    batch shape, and the loss must compile whole (a graph break in torch's KL dispatch split it
    into three graphs and cost a third of the speed)."""
    import torch._dynamo
    import torch._inductor.config
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    config = merge(tiny(epochs=2), {"train": {"kl_warmup_epochs": 2, "batch_size": 256}})
    eager = Trainer(config, tmp_path / "eager", progress=False, log=lambda m: None)
    eager.fit()
    torch._dynamo.reset()
    counters.clear()
    torch.distributions.kl._KL_MEMOIZE.clear()  # as in a fresh process: nothing resolved yet
    compiled = Trainer(merge(config, {"train": {"compile": True}}), tmp_path / "compiled",
                       progress=False, log=lambda m: None)
    compiled.fit()
    assert not counters["graph_break"], dict(counters["graph_break"])  # one graph per shape:
    assert counters["stats"]["unique_graphs"] == 2  # 1437 = 5 x 256 + 157, two batch shapes
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    assert compiled.history[-1]["val_elbo"] == pytest.approx(eager.history[-1]["val_elbo"], abs=1e-3)


def test_dynamic_binarization_draws_bernoulli_pixels_with_the_grey_level_as_probability():
    torch.manual_seed(0)
    levels = torch.tensor([0.0, 1.0, 0.5, 1 / 255, 254 / 255, 0.3, 0.9999])
    n = 300_003  # 7 n pixels, not a multiple of the 4 pixels each 64-bit draw covers
    x = levels.repeat_interleave(n).view(len(levels), n // 3, 3)
    draws = dynamic_binarize(x)
    assert draws.dtype == x.dtype and set(draws.unique().tolist()) <= {0.0, 1.0}
    frequency = draws.flatten(1).mean(1).double()
    assert frequency[0] == 0 and frequency[1] == 1  # exact at the ends
    p = levels.double()
    z = (frequency - p) / (p * (1 - p) / n).clamp_min(1e-30).sqrt()
    assert z[2:].abs().max() < 4.5, z  # within sampling error of Bernoulli(p)
    # fresh draws each call, reproducible from the seed
    torch.manual_seed(1)
    first = dynamic_binarize(x[2])
    assert not torch.equal(first, dynamic_binarize(x[2]))
    torch.manual_seed(1)
    assert torch.equal(first, dynamic_binarize(x[2]))
