import json

import pytest

from vaekit.config import RunConfig, config_from_dict, load_config_file, merge, resolve, save_config
from vaekit.data import dataset_defaults
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
    grey = resolve(RunConfig(), defaults=dataset_defaults("mnist"), value_kind="unit")
    assert (grey.model.likelihood, grey.data.binarize) == ("bernoulli", "dynamic")
    assert grey.model.hidden == (400,) and grey.model.latent_dim == 20 and grey.train.epochs == 10
    real = resolve(RunConfig(), defaults=dataset_defaults("table.csv"), value_kind="real")
    assert (real.model.likelihood, real.data.binarize) == ("gaussian", "none")
    binary = resolve(RunConfig(), defaults=dataset_defaults("binarized-mnist"), value_kind="binary")
    assert binary.data.binarize == "none"
    # the embedded default: a discrete likelihood over digits' 17 grey levels (was gaussian)
    digits = resolve(RunConfig(), defaults=dataset_defaults("digits"), value_kind="unit",
                     levels=17)
    assert (digits.model.likelihood, digits.data.binarize) == ("discretized-logistic", "none")
    assert digits.model.levels == 17
    mnist_levels = resolve(merge(RunConfig(), {"model": {"likelihood": "categorical"}}),
                           defaults=dataset_defaults("mnist"), value_kind="unit", levels=256)
    assert (mnist_levels.model.levels, mnist_levels.data.binarize) == (256, "none")
    five_bits = resolve(merge(RunConfig(), {"model": {"likelihood": "categorical"},
                                            "data": {"bits": 5}}),
                        defaults=dataset_defaults("mnist"), value_kind="unit", levels=256)
    assert five_bits.model.levels == 32
    assert resolve(RunConfig(), defaults=dataset_defaults("mnist"), value_kind="unit",
                   levels=256).model.levels is None  # Bernoulli: no levels
    explicit = resolve(merge(RunConfig(), {"train": {"epochs": 2}}), defaults=dataset_defaults("digits"), value_kind="unit",
                       levels=17)  # digits' 17 grey levels, which its discrete default needs
    assert explicit.train.epochs == 2
    assert json.loads(explicit.model_dump_json())["model"]["latent_dim"] == 8


# ------------------------------------------------------------------------------------------
# property: any dict, value or file text gives a RunConfig (that round-trips) or a one-line
# ConfigError, never anything else

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vaekit.config import DataConfig, ModelConfig, TrainConfig  # noqa: E402

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
CHOICES = ["digits", "mlp", "conv", "relu", "tanh", "gaussian", "bernoulli", "continuous-bernoulli",
           "none", "dynamic", "static", "auto", "cpu", "elbo", "iwae", "normal", "fixed", "400"]
wild = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
        | st.sampled_from(CHOICES))
plausible = (st.integers(1, 64) | st.floats(0.01, 0.4) | st.sampled_from(CHOICES)
             | st.lists(st.integers(1, 64), max_size=2) | st.booleans())
values = st.recursive(wild | plausible | plausible, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def section(cls):
    """Mostly the section's own keys, sometimes a typo or a key from elsewhere."""
    own = st.sampled_from(list(cls.model_fields))
    return st.dictionaries(own | own | own | st.text(max_size=6), values, max_size=4)


configs = st.fixed_dictionaries({}, optional={
    **{name: section(cls) | values for name, cls in SECTIONS.items()},
    "version": st.integers(0, 2) | wild}) | st.dictionaries(st.text(max_size=6), values, max_size=2)
TOML_VALUES = ["1", "-3", "0", "7", "64", "1e400", "inf", "-inf", "nan", "0.2", "1e-3", '"x"',
               '""', "[1, 2]", "[]", "[0]", "[32]", "true", "false", "1979-05-27", '"digits"',
               '"gaussian"', '"bernoulli"', '"conv"', '"relu"', '"cpu"', "{a = 1}",
               "99999999999999999999", '"\\n"']


def toml_sections(draw_keys):
    return st.lists(st.tuples(draw_keys, st.sampled_from(TOML_VALUES)), max_size=4,
                    unique_by=lambda kv: kv[0])


toml_files = st.fixed_dictionaries({}, optional={
    name: toml_sections(st.sampled_from(list(cls.model_fields)) | st.sampled_from(["epoch", "x"]))
    for name, cls in SECTIONS.items()} | {"": toml_sections(st.sampled_from(["version", "seed"]))})


def config_or_one_line_error(parse):
    try:
        cfg = parse()
    except ConfigError as err:
        assert "\n" not in str(err) and str(err).strip()
        return None
    assert isinstance(cfg, RunConfig)
    assert config_from_dict(json.loads(cfg.model_dump_json())) == cfg
    return cfg


@settings(max_examples=200, deadline=None)
@given(values=configs | values)
def test_any_dict_gives_a_config_or_a_config_error(values):
    config_or_one_line_error(lambda: config_from_dict(values))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tables=toml_files)
def test_any_toml_gives_a_config_or_a_config_error(tmp_path, tables):
    text = "".join(f"{key} = {value}\n" for key, value in tables.get("", []))
    text += "".join(f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in lines)
                    for name, lines in tables.items() if name)
    (tmp_path / "c.toml").write_text(text)
    cfg = config_or_one_line_error(lambda: load_config_file(tmp_path / "c.toml"))
    if cfg is not None:
        save_config(cfg, tmp_path / "back.json")
        assert load_config_file(tmp_path / "back.json") == cfg


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
       suffix=st.sampled_from([".toml", ".json"]))
def test_random_file_contents_give_a_config_or_a_config_error(tmp_path, payload, suffix):
    (tmp_path / f"c{suffix}").write_bytes(payload)
    config_or_one_line_error(lambda: load_config_file(tmp_path / f"c{suffix}"))


@pytest.mark.parametrize("values,needle", [
    ({"train": {"lr": float("inf")}}, "train.lr: Input should be a finite number"),
    ({"train": {"beta": float("nan")}}, "train.beta"),
    ({"model": {"hidden": [400, -1]}}, "model.hidden.1"),
    ({"train": {"seed": -1}}, "train.seed"),
    ({"version": 2}, "config version 2 is not supported"),
    ({"data": {"name": ""}}, "data.name"),
    ({"train": {"checkpoint_every_steps": -5}}, "train.checkpoint_every_steps"),
    ({"train\n": {}}, "unknown key 'train\\n'"),
])
def test_values_found_by_fuzzing_are_rejected(values, needle):
    with pytest.raises(ConfigError) as err:
        config_from_dict(values)
    assert needle in str(err.value) and "\n" not in str(err.value)


# -- cross-field rules: refused by the config, before any data is loaded or file written -------
@pytest.mark.parametrize("args,needle", [
    (["--objective", "iwae", "--num-samples", "5", "--gradient-estimator", "score"],
     "uses reparameterized gradients"),
    (["--gradient-estimator", "score-baseline", "--num-samples", "1"], "--num-samples 2 or more"),
    (["--objective", "iwae-dreg", "--num-samples", "5", "--posterior", "iaf"], "iwae-dreg"),
    (["--objective", "iwae-dreg", "--num-samples", "5", "--posterior", "planar"], "iwae-dreg"),
    (["--objective", "iwae", "--beta", "0.5"], "ELBO only"),
    (["--prior", "vamp", "--posterior", "planar"], "evaluates q(z|x) at arbitrary z"),
    (["--precision", "fp8"], "unknown precision 'fp8' (valid: fp32, bf16, fp16)"),
    (["--arch", "transformer"], "unknown arch 'transformer' (valid: mlp, conv)"),
    (["--bits", "9"], "bits must be between 1 and 8"),
    (["--bits", "0"], "bits must be between 1 and 8"),
    (["--likelihood", "gaussian", "--bits", "4"], "likelihood 'gaussian' does not model levels"),
    (["--likelihood", "bernoulli", "--bits", "1"], "likelihood 'bernoulli' does not model levels"),
    (["--likelihood", "categorical", "--binarize", "dynamic"], "cannot be binarized"),
    (["--likelihood", "discretized-logistic", "--binarize", "static"], "cannot be binarized"),
    (["--likelihood", "discretized-logistic-mixture", "--standardize"], "not standardized"),
    (["--likelihood", "discretized-logistic-mixture", "--likelihood-components", "0"],
     "model.likelihood_components"),
])
def test_invalid_combinations_exit_2_with_one_line_before_anything_is_written(
        args, needle, tmp_path, capsys, monkeypatch):
    from vaekit import data
    from vaekit.cli import main

    def no_data(*a, **k):
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setattr(data.registry, "load_dataset", no_data)
    monkeypatch.setattr("vaekit.training.setup.load_dataset", no_data)
    out = tmp_path / "run"
    assert main(["train", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vaekit: error: ") and needle in err, err
    assert not out.exists()


@pytest.mark.parametrize("overrides,kwargs,needle", [
    ({"data": {"bits": 5}}, dict(levels=17, name="'digits'"), "--bits 5 asks for 32 levels"),
    ({}, dict(value_kind="binary", levels=2), "is binary; use --likelihood bernoulli"),
    ({}, dict(value_kind="real", levels=None), "has real values"),
    ({}, dict(levels=None), "pass --bits N"),
])
def test_discrete_likelihoods_need_grey_levels_they_can_count(overrides, kwargs, needle):
    config = merge(RunConfig(), {**overrides, "model": {"likelihood": "discretized-logistic"}})
    with pytest.raises(ConfigError, match=needle):
        resolve(config, defaults=dataset_defaults("mnist"), **{"value_kind": "unit", **kwargs})


def test_a_config_without_the_new_fields_reads_as_before():
    """Configs written before discrete likelihoods (no bits, levels, likelihood_components)
    keep their meaning: no quantization, no levels."""
    old = config_from_dict({"model": {"likelihood": "gaussian", "hidden": [64], "latent_dim": 4},
                            "data": {"binarize": "none"}})
    assert old.data.bits is None and old.model.levels is None


def test_valid_values_come_from_the_registries():
    from vaekit.cli import build_parser
    from vaekit.config import choices
    from vaekit.objectives import OBJECTIVES
    from vaekit.priors import PRIORS

    assert choices("model", "prior") == tuple(PRIORS)
    assert choices("train", "objective") == tuple(OBJECTIVES)
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "{" + ",".join(PRIORS) + "}" in help_text
