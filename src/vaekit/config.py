"""Typed, validated run configuration.

A run is described by :class:`RunConfig` (``data``, ``model``, ``train`` sections). Configs are
strict pydantic models: unknown keys and wrong types are rejected with a message naming the key,
and they round-trip through JSON/TOML. Fields left as ``None``/``"auto"`` are filled by
:func:`resolve` from the data set (the resolved config is what a run directory stores)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from .errors import ConfigError

CONFIG_VERSION = 1
MAX_SEED = 2**32 - 1  # seeds are combined with epoch numbers and split offsets in 64-bit RNG seeds

PositiveInt = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    # allow_inf_nan=False: an lr of inf or a scale of nan is a typo, not a setting
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True,
                              allow_inf_nan=False)


class DataConfig(_Strict):
    name: str = Field("digits", min_length=1)  # a registered data set (digits, mnist, ...) or a path to user data
    data_dir: str | None = None  # where the data set's files are (else a cache directory)
    binarize: Literal["auto", "dynamic", "static", "none"] = "auto"  # auto: dynamic for grey under Bernoulli
    val_fraction: float = Field(0.1, gt=0, lt=0.5)  # held out from the training split
    split_seed: int = Field(0, ge=0, le=MAX_SEED)  # seed of the train/validation split and of the fixed binarization
    download: bool = True  # download registered data sets when their files are missing


class ModelConfig(_Strict):
    arch: Literal["mlp", "conv"] = "mlp"  # network family of encoder and decoder
    hidden: tuple[PositiveInt, ...] | None = None  # MLP hidden sizes (None: the data set's default)
    latent_dim: int | None = Field(None, gt=0)  # dimension of z (None: the data set's default)
    activation: Literal["relu", "elu", "gelu", "tanh", "silu"] = "relu"
    conv_channels: int = Field(32, gt=0)  # channels of the first conv layer (doubling after)
    conv_hidden: int = Field(256, gt=0)  # width of the dense layer after the convolutions
    likelihood: Literal["auto", "bernoulli", "gaussian", "continuous-bernoulli"] = "auto"
    gaussian_scale: Literal["fixed", "learned-global", "learned-per-dim"] = "learned-global"
    gaussian_init_scale: float = Field(1.0, gt=0)  # initial (or fixed) Gaussian sigma
    gaussian_min_scale: float = Field(1e-3, gt=0)  # floor of a learned Gaussian sigma
    standardize: bool | None = None  # standardize inputs per dimension (None: for real-valued data)
    prior: str = "normal"  # registered prior
    posterior: str = "gaussian"  # registered posterior
    prior_components: int = Field(10, gt=0)  # K of the mog prior / pseudo-inputs of the vamp prior
    flow_steps: int = Field(4, gt=0)  # steps of the flow prior and of planar/iaf posteriors
    flow_hidden: int = Field(64, gt=0)  # hidden width of coupling (flow prior) and MADE (iaf) nets
    vamp_init_from_data: bool = True  # vamp: start pseudo-inputs at random training examples

    @field_validator("prior")
    @classmethod
    def _known_prior(cls, name: str) -> str:
        from .priors import PRIORS

        return _registered(name, PRIORS, "prior")

    @field_validator("posterior")
    @classmethod
    def _known_posterior(cls, name: str) -> str:
        from .posteriors import POSTERIORS

        return _registered(name, POSTERIORS, "posterior")

    @model_validator(mode="after")
    def _compatible_prior_and_posterior(self) -> "ModelConfig":
        from .posteriors import POSTERIORS
        from .priors import PRIORS

        if (getattr(PRIORS[self.prior], "needs_posterior_density", False)
                and not POSTERIORS[self.posterior].has_inverse):
            valid = [n for n, cls in POSTERIORS.items() if cls.has_inverse]
            raise ValueError(
                f"prior '{self.prior}' evaluates q(z|x) at arbitrary z, which posterior "
                f"'{self.posterior}' cannot (valid posteriors with it: {', '.join(valid)})")
        return self


def _registered(name: str, registry: dict, what: str) -> str:
    if name not in registry:
        raise ValueError(f"unknown {what} '{name}' (valid: {', '.join(registry)})")
    return name


class TrainConfig(_Strict):
    epochs: int | None = Field(None, gt=0)  # None: the data set's default
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)  # Adam learning rate
    beta: float = Field(1.0, ge=0)  # weight of the KL term in the loss (reported ELBO stays true)
    kl_warmup_epochs: float = Field(0.0, ge=0)  # beta rises linearly from 0 over this many epochs
    free_bits: float = Field(0.0, ge=0)  # minimum KL per latent dimension in nats (0: off)
    # elbo; iwae: the IWAE bound (Burda et al. 2016); iwae-dreg: IWAE with the doubly
    # reparameterized encoder gradient (Tucker et al. 2019)
    objective: Literal["elbo", "iwae", "iwae-dreg"] = "elbo"
    num_samples: int = Field(1, gt=0)  # Monte Carlo samples of z per example in the objective
    # how the encoder gradient of E_q[log p(x|z)] is estimated (decoder gradients are pathwise)
    gradient_estimator: Literal["reparameterization", "score", "score-baseline"] = "reparameterization"
    seed: int = Field(0, ge=0, le=MAX_SEED)  # seeds initialisation, shuffling and dynamic binarization
    device: str = "auto"  # auto (cuda when available), cpu, cuda, cuda:1, ...
    eval_batch_size: int = Field(1000, gt=0)
    checkpoint_every_steps: int = Field(0, ge=0)  # also checkpoint mid-epoch every N steps (0: per epoch)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast of the training step's networks
    compile: bool = False  # torch.compile the training loss (first steps slower, later faster)
    report: bool = True  # write report.html into the run directory at the end
    tensorboard: bool = False  # also log scalars and image grids for TensorBoard

    @model_validator(mode="after")
    def _iwae_is_a_plain_bound(self):
        if self.objective != "elbo" and (self.beta != 1.0 or self.kl_warmup_epochs > 0
                                         or self.free_bits > 0):
            raise ValueError(f"objective '{self.objective}' optimises the IWAE bound itself; "
                             "beta, kl_warmup_epochs and free_bits apply to the ELBO only")
        return self


class RunConfig(_Strict):
    version: int = CONFIG_VERSION
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @field_validator("version")
    @classmethod
    def _known_version(cls, version: int) -> int:
        if not 1 <= version <= CONFIG_VERSION:
            raise ValueError(f"config version {version} is not supported by this vaekit (it reads "
                             f"version {CONFIG_VERSION}); upgrade vaekit or write a version "
                             f"{CONFIG_VERSION} config")
        return version


# Defaults that depend on the data set: small images want a small model and many epochs.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    # 8x8 digits have 17 grey levels: binarizing such tiny images destroys the strokes, so the
    # default is a Gaussian likelihood on the grey levels (samples look like digits).
    "digits": {"hidden": (256,), "latent_dim": 8, "epochs": 200, "likelihood": "gaussian"},
    "mnist": {"hidden": (400,), "latent_dim": 20, "epochs": 10},
    "fashion-mnist": {"hidden": (400,), "latent_dim": 20, "epochs": 10},
    "binarized-mnist": {"hidden": (400,), "latent_dim": 20, "epochs": 10},
}
USER_DATA_DEFAULTS: dict[str, Any] = {"hidden": (256, 256), "latent_dim": 10, "epochs": 50}


def _format_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = _one_line(".".join(str(p) for p in e["loc"]) or "config")
        if e["type"] == "extra_forbidden":
            parent = _section_fields(e["loc"][:-1])
            valid = ", ".join(parent) if parent else ""
            parts.append(f"unknown key '{key}'" + (f" (valid keys: {valid})" if valid else ""))
        else:
            parts.append(f"{key}: {_one_line(e['msg'])}")
    return "invalid config: " + "; ".join(parts)


def _one_line(text: str) -> str:
    """Keys and values from a user's file may hold line breaks; error messages must not."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def _section_fields(loc: tuple) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type)
                                 and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Validates a nested dict into a :class:`RunConfig`; raises ConfigError naming the key."""
    if not isinstance(values, dict):
        raise ConfigError("invalid config: expected a table/object at the top level")
    try:
        return RunConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_config_file(path: str | Path) -> RunConfig:
    """Reads a TOML (``.toml``) or JSON (``.json``) config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            values = tomllib.loads(text)
        elif path.suffix == ".json":
            values = json.loads(text)
        else:
            raise ConfigError(f"{path}: unsupported config type '{path.suffix}' (use .toml or .json)")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ConfigError(f"{path}: cannot parse config ({_one_line(str(err))})") from None
    return config_from_dict(values)


def merge(config: RunConfig, overrides: dict[str, dict[str, Any]]) -> RunConfig:
    """Returns ``config`` with ``overrides`` (``{"train": {"epochs": 3}, ...}``) applied and
    validated."""
    values = config.model_dump()
    for section, fields in overrides.items():
        values.setdefault(section, {}).update(fields)
    return config_from_dict(values)


def resolve(config: RunConfig, *, dataset_name: str, value_kind: str) -> RunConfig:
    """Fills every ``None``/``"auto"`` field from the data set:

    - likelihood: the data set's default, else Bernoulli for binary and grey-level [0, 1] data
      and Gaussian for real values;
    - binarize: ``dynamic`` for grey-level data under a Bernoulli likelihood, else ``none``;
    - standardize: on for real-valued data (tables), whose columns come in arbitrary units;
    - hidden sizes, latent dimension and epochs from :data:`DATASET_DEFAULTS`."""
    defaults = DATASET_DEFAULTS.get(dataset_name, USER_DATA_DEFAULTS)
    model, train, data = config.model, config.train, config.data
    likelihood = model.likelihood
    if likelihood == "auto":
        likelihood = defaults.get("likelihood") or (
            "gaussian" if value_kind == "real" else "bernoulli")
    binarize = data.binarize
    if binarize == "auto":
        binarize = "dynamic" if (likelihood == "bernoulli" and value_kind == "unit") else "none"
    return merge(config, {
        "data": {"binarize": binarize},
        "model": {
            "likelihood": likelihood,
            "hidden": model.hidden if model.hidden is not None else defaults["hidden"],
            "latent_dim": model.latent_dim or defaults["latent_dim"],
            "standardize": (value_kind == "real") if model.standardize is None else model.standardize,
        },
        "train": {"epochs": train.epochs or defaults["epochs"]},
    })


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
