"""Noisy features: an .npz whose ``train_scale`` makes every training example the Gaussian
N(train[i], train_scale[i]^2), drawn afresh in every batch (Kingma et al. 2014's M1+M2 reads
z ~ q(z|x) of M1 this way), while validation and test are read at their means."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaekit.config import config_from_dict
from vaekit.data import load_dataset
from vaekit.errors import DataError

N, D = 300, 4


def features_file(tmp_path, **changes) -> str:
    rng = np.random.default_rng(0)
    labels = {split: rng.integers(0, 3, n) for split, n in (("train", N), ("val", 60),
                                                              ("test", 60))}
    centres = 3.0 * rng.normal(size=(3, D))
    arrays = {split: (centres[y] + rng.normal(size=(len(y), D))).astype(np.float32)
              for split, y in labels.items()}
    arrays.update({f"{split}_labels": y for split, y in labels.items()})
    arrays["train_scale"] = rng.uniform(0.2, 2.0, size=(N, D)).astype(np.float32)
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / "features.npz"
    np.savez(path, **arrays)
    return str(path)


def trainer(path, tmp_path, name="run", **model):
    from vaekit.training import Trainer

    train = {"epochs": 2, "report": False, "batch_size": 50}
    if model.get("semi_supervised"):
        train["labels_per_class"] = 2
    cfg = config_from_dict({"data": {"name": path},
                            "model": {"hidden": [16], "latent_dim": 2, **model}, "train": train})
    return Trainer(cfg, tmp_path / name, progress=False, log=lambda _m: None, callbacks=[])


def recorded_batches(t, epochs=1):
    """The x of every training step, as the step sees it."""
    seen, step = [], t.train_step

    def recording(x, *y):
        seen.append(x.clone())
        return step(x, *y)

    t.train_step = recording
    for _ in range(epochs):
        t.run_epoch()
    return seen


def test_every_batch_is_a_fresh_draw_around_the_means(tmp_path):
    path = features_file(tmp_path)
    stored = np.load(path)
    mean, scale = torch.from_numpy(stored["train"]), torch.from_numpy(stored["train_scale"])
    t = trainer(path, tmp_path)
    assert torch.equal(t.data.val, torch.from_numpy(stored["val"]))  # evaluated at the means
    assert torch.equal(t.data.test, torch.from_numpy(stored["test"]))
    seen = recorded_batches(t, epochs=2)
    per_epoch = len(t.batches)
    residuals = []
    for epoch in range(2):
        idx = t.batches.indices(epoch)
        for b, x in enumerate(seen[epoch * per_epoch : (epoch + 1) * per_epoch]):
            rows = idx[b * 50 : (b + 1) * 50]
            assert x.shape == (len(rows), D)
            residuals.append((x - mean[rows]) / scale[rows])
    eps = torch.cat(residuals)  # should be N(0, 1): 2 N D = 2400 values
    assert abs(float(eps.mean())) < 0.1 and abs(float(eps.std()) - 1) < 0.06
    # the same example is drawn anew in the second epoch, not repeated
    first = {int(i): x for i, x in zip(t.batches.indices(0)[:50], seen[0])}
    again = [(first[int(i)], x) for i, x in zip(t.batches.indices(1)[:50], seen[per_epoch])
             if int(i) in first]
    assert again and all(not torch.allclose(a, b) for a, b in again)


def test_the_labelled_examples_of_a_semi_supervised_run_are_drawn_too(tmp_path):
    path = features_file(tmp_path)
    stored = np.load(path)
    mean, scale = torch.from_numpy(stored["train"]), torch.from_numpy(stored["train_scale"])
    t = trainer(path, tmp_path, semi_supervised=True)
    labelled = t.condition.labelled
    seen = recorded_batches(t)
    residuals = []
    for step, x in enumerate(seen):  # each step's batch ends with a batch of the labelled examples
        per_epoch = len(t.condition.labelled_batches)
        index = next(t.condition.labelled_batches.iterate(step // per_epoch, step % per_epoch,
                                                             step % per_epoch + 1))
        tail = x[-len(index):]
        assert set(index.tolist()) <= set(labelled.tolist())
        residuals.append((tail - mean[index]) / scale[index])
    eps = torch.cat(residuals)
    assert abs(float(eps.mean())) < 0.2 and abs(float(eps.std()) - 1) < 0.15
    assert not torch.allclose(seen[0][-len(labelled):], seen[1][-len(labelled):])


def test_a_run_on_noisy_features_resumes_exactly(tmp_path):
    path = features_file(tmp_path)
    straight = trainer(path, tmp_path, "a", semi_supervised=True)
    straight.run_epoch()
    straight.run_epoch()
    interrupted = trainer(path, tmp_path, "b", semi_supervised=True)
    interrupted.train_epoch(num_batches=3)
    interrupted.save_checkpoint()
    from vaekit.training import Trainer

    resumed = Trainer(interrupted.config, tmp_path / "b", resume=True, progress=False,
                      log=lambda _m: None, callbacks=[])
    resumed.run_epoch()
    resumed.run_epoch()
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("changes, message", [
    ({"val": None, "val_labels": None}, "needs the splits train, val"),
    ({"train_scale": np.ones((N, D + 1), np.float32)}, "shape of 'train'"),
    ({"train_scale": -np.ones((N, D), np.float32)}, "negative or non-finite"),
    ({"train_scale": np.full((N, D), np.nan, np.float32)}, "negative or non-finite"),
])
def test_bad_scales_are_refused(tmp_path, changes, message):
    with pytest.raises(DataError, match=message):
        load_dataset(features_file(tmp_path, **changes), None, val_fraction=0.1, split_seed=0,
                     download=False)


def test_noisy_features_refuse_binarization(tmp_path, capsys):
    from vaekit.cli import main

    path = features_file(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--data", path, "--binarize", "dynamic", "--epochs", "1",
                 "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--binarize none" in err[0], err
