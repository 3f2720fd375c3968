import json

import pytest

from vaekit.config import RunConfig, config_from_dict, load_config_file, merge, resolve, save_config
from vaekit.errors import ConfigError


def test_round_trip_through_json(tmp_path):
    cfg = merge(RunConfig(), {"train": {"epochs": 3, "beta": 0.5}, "model": {"hidden": (64, 32)}})
    save_config(cfg, tmp_path / "c.json")
    assert load_config_file(tmp_path / "c.json") == cfg


def test_toml_file(tmp_path):
    (tmp_path / "c.toml").write_text('[train]\nepochs = 4\n[model]\nlatent_dim = 3\n')
    cfg = load_config_file(tmp_path / "c.toml")
    assert cfg.train.epochs == 4 and cfg.model.latent_dim == 3


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'.*valid keys: epochs"):
        config_from_dict({"train": {"epoch": 3}})


@pytest.mark.parametrize("section,key,value", [
    ("model", "latent_dim", 0), ("train", "lr", -1.0), ("train", "batch_size", 0),
    ("train", "epochs", "many"), ("model", "likelihood", "poisson"), ("model", "prior", "nope"),
])
def test_invalid_values_are_rejected_with_the_key(section, key, value):
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        config_from_dict({section: {key: value}})


def test_bad_file(tmp_path):
    (tmp_path / "c.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config_file(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "missing.toml")
    (tmp_path / "c.yaml").write_text("a: 1")
    with pytest.raises(ConfigError, match="unsupported"):
        load_config_file(tmp_path / "c.yaml")


def test_resolve_fills_auto_fields_from_the_data():
    grey = resolve(RunConfig(), dataset_name="mnist", value_kind="unit")
    assert (grey.model.likelihood, grey.data.binarize) == ("bernoulli", "dynamic")
    assert grey.model.hidden == (400,) and grey.model.latent_dim == 20 and grey.train.epochs == 10
    real = resolve(RunConfig(), dataset_name="table.csv", value_kind="real")
    assert (real.model.likelihood, real.data.binarize) == ("gaussian", "none")
    binary = resolve(RunConfig(), dataset_name="binarized-mnist", value_kind="binary")
    assert binary.data.binarize == "none"
    digits = resolve(RunConfig(), dataset_name="digits", value_kind="unit")
    assert (digits.model.likelihood, digits.data.binarize) == ("gaussian", "none")
    explicit = resolve(merge(RunConfig(), {"train": {"epochs": 2}}), dataset_name="digits", value_kind="unit")
    assert explicit.train.epochs == 2
    assert json.loads(explicit.model_dump_json())["model"]["latent_dim"] == 8
