"""Mixed precision: under autocast the networks compute in bfloat16/float16 while the
distributions, the loss and the reported terms stay float32; a mixed-precision run trains to
finite numbers close to the float32 run."""

import json

import pytest
import torch

import vaekit
from vaekit.config import RunConfig, merge
from vaekit.training.step import LossModule
from vaekit.families import build_model
from vaekit.precision import PRECISIONS, grad_scaler


def tiny_config(**train):
    return merge(RunConfig(), {"model": {"hidden": (32,), "latent_dim": 4, "likelihood": "gaussian"},
                               "data": {"binarize": "none"},
                               "train": {"epochs": 2, "batch_size": 64, **train}})


@pytest.mark.parametrize("precision", [p for p in PRECISIONS if p != "fp32"])
def test_networks_run_in_low_precision_and_the_loss_in_float32(precision):
    model = build_model(tiny_config().model, (1, 8, 8))
    linear_dtypes = set()
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda _m, _i, out: linear_dtypes.add(out.dtype))
    x = torch.rand(32, 1, 8, 8)
    torch.manual_seed(0)
    loss32, _ = LossModule(model, "fp32")(x)
    torch.manual_seed(0)
    loss, terms = LossModule(model, precision)(x)
    assert PRECISIONS[precision] in linear_dtypes
    assert loss.dtype == terms.elbo.dtype == terms.kl.dtype == torch.float32
    # same noise, same weights: only rounding of the matrix products differs (bf16 keeps 8 bits)
    loss, loss32 = float(loss.detach()), float(loss32.detach())
    assert loss == pytest.approx(loss32, rel=2e-2)
    assert loss != loss32  # it really did compute in low precision


def train_run(path, precision):
    run = vaekit.train(tiny_config(precision=precision), path, progress=False, log=lambda m: None)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return history, json.loads((run / "results.json").read_text())


@pytest.fixture(scope="module")
def fp32_results(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("fp32") / "run", "fp32")[1]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_run_trains_to_finite_numbers_near_float32(tmp_path, precision,
                                                                  fp32_results):
    history, results = train_run(tmp_path / "run", precision)
    assert history[-1]["val_elbo"] > history[0]["val_elbo"]  # it learns
    assert all(torch.isfinite(torch.tensor(results[k])) for k in ("elbo", "reconstruction", "kl"))
    # two epochs; fp16 loses its first steps while the loss scale settles (observed: bf16
    # within 0.01 nats of fp32, fp16 within 0.15)
    assert results["elbo"] == pytest.approx(fp32_results["elbo"], abs=0.5)


def test_only_fp16_scales_the_loss():
    cpu = torch.device("cpu")
    assert grad_scaler(cpu, "fp16").is_enabled()
    assert not grad_scaler(cpu, "bf16").is_enabled() and not grad_scaler(cpu, "fp32").is_enabled()
