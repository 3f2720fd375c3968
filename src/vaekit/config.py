"""Typed, validated run configuration.

A run is described by :class:`RunConfig` (``data``, ``model``, ``train`` sections). Configs are
strict pydantic models: unknown keys and wrong types are rejected with a message naming the key,
and they round-trip through JSON/TOML. Fields left as ``None``/``"auto"`` are filled by
:func:`resolve` from the data set (the resolved config is what a run directory stores)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

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


# The valid values of every choice live in the registry that implements them; configs, the
# command line's choices and error messages all read them from there.
def choices(section: str, key: str) -> tuple[str, ...]:
    """The valid names of the option ``section.key`` (e.g. ``("model", "prior")``), from its
    registry."""
    from .conditional import CONDITIONAL_PRIORS
    from .data.preparation import BINARIZATIONS
    from .hierarchy import INFERENCES
    from .likelihoods import LIKELIHOODS, GaussianLikelihood
    from .model import NETWORKS
    from .nets import ACTIVATIONS, INITIALIZATIONS
    from .objectives import GRADIENT_ESTIMATORS, OBJECTIVES
    from .posteriors import POSTERIORS
    from .priors import PRIORS
    from .training.precision import PRECISIONS
    from .training.schedules import LR_SCHEDULES

    registries = {
        ("data", "binarize"): BINARIZATIONS,
        ("model", "arch"): NETWORKS,
        ("model", "activation"): ACTIVATIONS,
        ("model", "likelihood"): ("auto", *LIKELIHOODS),
        ("model", "gaussian_scale"): GaussianLikelihood.SCALE_MODES,
        ("model", "prior"): PRIORS,
        ("model", "posterior"): POSTERIORS,
        ("train", "objective"): OBJECTIVES,
        ("train", "gradient_estimator"): GRADIENT_ESTIMATORS,
        ("train", "precision"): PRECISIONS,
        ("train", "lr_schedule"): LR_SCHEDULES,
        ("model", "init"): INITIALIZATIONS,
        ("model", "inference"): INFERENCES,
        ("model", "conditional_prior"): CONDITIONAL_PRIORS,
    }
    return tuple(registries[section, key])


def _registered(section: str, key: str, name: str) -> str:
    valid = choices(section, key)
    if name not in valid:
        raise ValueError(f"unknown {key.replace('_', ' ')} '{name}' (valid: {', '.join(valid)})")
    return name


class DataConfig(_Strict):
    name: str = Field("digits", min_length=1)  # a registered data set (digits, mnist, ...) or a path to user data
    data_dir: str | None = None  # where the data set's files are (else a cache directory)
    binarize: str = "auto"  # auto: dynamic for grey levels under Bernoulli; dynamic, static, none
    val_fraction: float = Field(0.1, gt=0, lt=0.5)  # held out from the training split
    split_seed: int = Field(0, ge=0, le=MAX_SEED)  # seed of the train/validation split and of the fixed binarization
    download: bool = True  # download registered data sets when their files are missing
    # quantize grey levels to 2^bits levels for a discrete likelihood (None: the data's own levels)
    bits: int | None = None
    # a CSV read as a mixed-type table: "auto" (types from the values) or declared types,
    # "age=numeric,city=categorical" (numeric, binary, count, categorical); None: numbers only
    column_types: str | None = None
    # CSV columns taken out of x to be the condition y of a conditional model (--conditional):
    # numeric covariates, standardized with the training split's mean and std; None: y is the
    # class label
    condition_columns: tuple[str, ...] | None = None
    # the condition columns' mean and standard deviation over the training split (filled in
    # when training; load, evaluate and sample standardize with them)
    condition_mean: tuple[float, ...] | None = None
    condition_std: tuple[Annotated[float, Field(gt=0)], ...] | None = None

    @field_validator("condition_columns")
    @classmethod
    def _named_columns(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if names is None:
            return None
        names = tuple(name.strip() for name in names)
        if not names or not all(names):
            raise ValueError("condition_columns needs one or more column names, e.g. "
                             "--condition-columns age,income")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"condition_columns names {', '.join(repeated)} more than once")
        return names

    @model_validator(mode="after")
    def _statistics_of_the_condition_columns(self) -> "DataConfig":
        for key in ("condition_mean", "condition_std"):
            values = getattr(self, key)
            if values is None:
                continue
            if self.condition_columns is None:
                raise ValueError(f"{key} is a statistic of the condition columns; set "
                                 "condition_columns (--condition-columns) too")
            if len(values) != len(self.condition_columns):
                raise ValueError(f"{key} has {len(values)} values for "
                                 f"{len(self.condition_columns)} condition columns")
        if (self.condition_mean is None) != (self.condition_std is None):
            raise ValueError("condition_mean and condition_std come together (both filled in "
                             "from the training split)")
        return self

    @field_validator("column_types")
    @classmethod
    def _known_column_types(cls, spec: str | None) -> str | None:
        from .data.tabular import parse_column_types
        from .errors import DataError

        try:
            parse_column_types(spec)
        except DataError as err:
            raise ValueError(str(err)) from None
        return spec

    @field_validator("binarize")
    @classmethod
    def _known(cls, name: str, info) -> str:
        return _registered("data", info.field_name, name)

    @field_validator("bits")
    @classmethod
    def _bits(cls, bits: int | None) -> int | None:
        if bits is not None and not 1 <= bits <= 8:
            raise ValueError(f"bits must be between 1 and 8 (grey levels are 8-bit at most), "
                             f"got {bits}")
        return bits


class ModelConfig(_Strict):
    arch: str = "mlp"  # network family of encoder and decoder: mlp, conv
    hidden: tuple[PositiveInt, ...] | None = None  # MLP hidden sizes (None: the data set's default)
    # size of z (None: the data set's default); a list for several stochastic layers, bottom
    # (next to x) first: [100, 50] is z1 of 100 units under z2 of 50
    latent_dim: PositiveInt | tuple[PositiveInt, ...] | None = None
    layer_hidden: tuple[PositiveInt, ...] = (100, 100)  # MLP hidden sizes between stochastic layers
    inference: str = "bottom-up"  # posterior of several layers: bottom-up (IWAE paper), top-down (Ladder VAE)
    # several layers: the decoder reads every layer, p(x | z_1, ..., z_L) (the skip connections of
    # Tomczak & Welling's HVAE), not z_1 alone as in the IWAE paper
    skip_decoder: bool = False
    activation: str = "relu"  # relu, elu, gelu, tanh, silu
    # MLP hidden layers gated, h = (W x + b) * sigmoid(V x + c) (Tomczak & Welling's networks);
    # the activation is then unused
    gated: bool = False
    init: str = "default"  # weights of the encoder and decoder networks: default (PyTorch's), xavier (Glorot), he
    conv_channels: int = Field(32, gt=0)  # channels of the first conv layer (doubling after)
    conv_hidden: int = Field(256, gt=0)  # width of the dense layer after the convolutions
    # auto, bernoulli, gaussian, continuous-bernoulli, table (mixed-type columns); discrete grey
    # levels: discretized-logistic, discretized-logistic-mixture, categorical
    likelihood: str = "auto"
    likelihood_components: int = Field(10, gt=0)  # logistics per pixel of discretized-logistic-mixture
    # levels n of a discrete grey-level likelihood (None: filled from data.bits or the data set)
    levels: int | None = Field(None, ge=2, le=256)
    gaussian_scale: str = "learned-global"  # fixed, learned-global, learned-per-dim
    gaussian_init_scale: float = Field(1.0, gt=0)  # initial (or fixed) Gaussian sigma
    gaussian_min_scale: float = Field(1e-3, gt=0)  # floor of a learned Gaussian sigma
    standardize: bool | None = None  # standardize inputs per dimension (None: for real-valued data)
    prior: str = "normal"  # registered prior
    posterior: str = "gaussian"  # registered posterior
    prior_components: int = Field(10, gt=0)  # K of the mog prior / pseudo-inputs of the vamp prior
    flow_steps: int = Field(4, gt=0)  # steps of the flow prior and of planar/iaf posteriors
    flow_hidden: int = Field(64, gt=0)  # hidden width of coupling (flow prior) and MADE (iaf) nets
    vamp_init_from_data: bool = True  # vamp: start pseudo-inputs at random training examples
    # vamp: use hardtanh(u) in [0, 1] as the pseudo-inputs, as Tomczak & Welling's code does, so
    # they stay in the range of [0, 1] image data (the parameters beyond it stop moving)
    vamp_clip_pseudo_inputs: bool = False
    # a table's column types, one per column: numeric, binary, count, categorical:K (with the
    # likelihood 'table'; vaekit.tables); None for arrays and images
    columns: tuple[str, ...] | None = None
    conditional: bool = False  # conditional VAE: q(z|x,y), p(x|z,y) with y the class label
    # p(z|y) of a conditional model: none (the prior p(z)), class (a Gaussian per class), net
    conditional_prior: str = "none"
    semi_supervised: bool = False  # M2 (Kingma et al. 2014): a conditional VAE with a classifier q(y|x)
    num_classes: int | None = Field(None, gt=0)  # classes y of a conditional model (filled in from the data)
    # width C of a condition y of covariates, y in R^C (filled in: the number of
    # data.condition_columns); None for a model conditioned on class labels (one-hot, num_classes)
    condition_dim: int | None = Field(None, gt=0)

    @field_validator("latent_dim")
    @classmethod
    def _one_number_is_one_layer(cls, value):
        if isinstance(value, tuple) and len(value) == 1:
            return value[0]
        if isinstance(value, tuple) and len(value) == 0:
            raise ValueError("latent_dim needs at least one layer size")
        return value

    @property
    def latent_sizes(self) -> tuple[int, ...]:
        """The stochastic layers' sizes, bottom first (one entry for a one-layer model)."""
        dim = self.latent_dim
        return tuple(dim) if isinstance(dim, tuple) else (dim,)

    @field_validator("arch", "activation", "init", "likelihood", "gaussian_scale", "prior",
                     "posterior", "inference", "conditional_prior")
    @classmethod
    def _known(cls, name: str, info) -> str:
        return _registered("model", info.field_name, name)

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, columns: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from .tables import Column

        if columns is not None:
            if not columns:
                raise ValueError("a table needs at least one column")
            for text in columns:
                Column.parse(text)
        return columns

    @model_validator(mode="after")
    def _gated_layers_are_dense(self) -> "ModelConfig":
        if self.gated and self.arch != "mlp":
            raise ValueError(f"gated layers (--gated) are dense layers of --arch mlp, not "
                             f"'{self.arch}'")
        return self

    @model_validator(mode="after")
    def _table_options(self) -> "ModelConfig":
        if self.columns is None and self.likelihood == "table":
            raise ValueError("likelihood 'table' needs the column types (model.columns, "
                             "--column-types)")
        if self.columns is not None:
            if self.likelihood not in ("auto", "table"):
                raise ValueError(f"a table with column types is modelled by likelihood 'table', "
                                 f"not '{self.likelihood}'")
            if self.arch != "mlp":
                raise ValueError(f"tables use --arch mlp, not '{self.arch}'")
            if self.standardize:
                raise ValueError("a table standardizes its numeric columns inside the model; "
                                 "drop standardize (--standardize)")
            if self.prior == "vamp":
                raise ValueError("prior 'vamp' learns pseudo-inputs in data space, which a table's "
                                 "categories are not; use another prior")
        return self

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
        if isinstance(self.latent_dim, tuple) and self.posterior != "gaussian":
            raise ValueError(
                f"posterior '{self.posterior}' has one stochastic layer; a model with several "
                f"(--latent-dim {','.join(map(str, self.latent_dim))}) uses diagonal Gaussian "
                "layers chosen with --inference (top-down or bottom-up)")
        if self.skip_decoder and not isinstance(self.latent_dim, tuple):
            raise ValueError("skip_decoder (--skip-decoder) lets the decoder read every stochastic "
                             "layer; a one-layer model has one: give --latent-dim a comma list")
        if self.conditional_prior != "none" and not (self.conditional or self.semi_supervised):
            raise ValueError("conditional_prior (--conditional-prior) is the prior p(z|y) of a "
                             "conditional model: add --conditional")
        if self.condition_dim is not None:
            if self.num_classes is not None:
                raise ValueError("a conditional model's y is one-hot over num_classes classes or "
                                 "a vector of condition_dim covariates, not both")
            if self.semi_supervised:
                raise ValueError("a semi-supervised model classifies class labels; its y cannot "
                                 "be covariates (condition_dim)")
            if self.conditional_prior == "class":
                raise ValueError("conditional_prior 'class' is one Gaussian per class; a model "
                                 "conditioned on covariates (condition_dim) takes 'net' or 'none'")
        if self.conditional_prior != "none" and self.prior != "normal":
            raise ValueError(f"conditional_prior '{self.conditional_prior}' replaces the prior "
                             f"p(z) by p(z|y); it cannot be combined with prior '{self.prior}'")
        return self

    @model_validator(mode="after")
    def _levels_for_discrete_likelihoods(self) -> "ModelConfig":
        from .likelihoods import needs_levels

        if self.likelihood != "auto" and not needs_levels(self.likelihood):
            if self.levels is not None:
                raise ValueError(f"levels applies to the discrete grey-level likelihoods; "
                                 f"likelihood '{self.likelihood}' is not one")
        if needs_levels(self.likelihood) and self.standardize:
            raise ValueError(f"likelihood '{self.likelihood}' models integer levels, which are "
                             "not standardized (the encoder sees them scaled to [0, 1])")
        return self


class TrainConfig(_Strict):
    epochs: int | None = Field(None, gt=0)  # None: the data set's default
    batch_size: int = Field(128, gt=0)
    lr: float = Field(1e-3, gt=0)  # Adam learning rate (at the start of the schedule)
    # learning-rate schedule, stepped per epoch: constant, exponential, cosine, plateau, iwae
    lr_schedule: str = "constant"
    lr_gamma: float = Field(0.99, gt=0, le=1)  # exponential: lr * lr_gamma^epoch
    lr_min: float = Field(0.0, ge=0)  # cosine: the final lr; plateau: the lowest lr
    lr_factor: float = Field(0.5, gt=0, lt=1)  # plateau: lr *= lr_factor on a plateau
    lr_patience: int = Field(10, ge=0)  # plateau: epochs without a better val ELBO first
    adam_betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)  # Adam's epsilon (the IWAE paper used 1e-4)
    clip_grad_norm: float = Field(0.0, ge=0)  # clip the gradient's global L2 norm to this (0: off)
    ema: float = Field(0.0, ge=0, lt=1)  # decay of an average of the weights used for evaluation (0: off)
    early_stopping: int = Field(0, ge=0)  # stop after this many epochs without a better val bound (0: off)
    early_stopping_samples: int = Field(1, gt=0)  # K of that bound: 1 is the ELBO, K > 1 IWAE_K
    beta: float = Field(1.0, ge=0)  # weight of the KL term in the loss (reported ELBO stays true)
    kl_warmup_epochs: float = Field(0.0, ge=0)  # beta rises linearly from 0 over this many epochs
    free_bits: float = Field(0.0, ge=0)  # minimum KL per latent dimension in nats (0: off)
    # elbo; iwae: the IWAE bound (Burda et al. 2016); iwae-dreg: IWAE with the doubly
    # reparameterized encoder gradient (Tucker et al. 2019)
    objective: str = "elbo"
    num_samples: int = Field(1, gt=0)  # Monte Carlo samples of z per example in the objective
    # how the encoder gradient of E_q[log p(x|z)] is estimated (decoder gradients are pathwise):
    # reparameterization, score, score-baseline
    gradient_estimator: str = "reparameterization"
    seed: int = Field(0, ge=0, le=MAX_SEED)  # seeds initialisation, shuffling and dynamic binarization
    device: str = "auto"  # auto (cuda when available), cpu, cuda, cuda:1, ...
    eval_batch_size: int = Field(1000, gt=0)
    checkpoint_every_steps: int = Field(0, ge=0)  # also checkpoint mid-epoch every N steps (0: per epoch)
    precision: str = "fp32"  # autocast of the training step's networks: fp32, bf16, fp16
    compile: bool = False  # torch.compile the training loss (first steps slower, later faster)
    report: bool = True  # write report.html into the run directory at the end
    tensorboard: bool = False  # also log scalars and image grids for TensorBoard
    labels_per_class: int | None = Field(None, gt=0)  # semi-supervised: labelled training examples per class
    # semi-supervised: weight alpha of the mean classification loss (None: 0.1 N / N_labelled)
    classification_weight: float | None = Field(None, ge=0)

    @field_validator("objective", "gradient_estimator", "precision", "lr_schedule")
    @classmethod
    def _known(cls, name: str, info) -> str:
        return _registered("train", info.field_name, name)

    @model_validator(mode="after")
    def _compatible_objective_options(self):
        if self.objective != "elbo" and (self.beta != 1.0 or self.kl_warmup_epochs > 0
                                         or self.free_bits > 0):
            raise ValueError(f"objective '{self.objective}' optimises the IWAE bound itself; "
                             "beta, kl_warmup_epochs and free_bits apply to the ELBO only")
        if self.objective != "elbo" and self.gradient_estimator != "reparameterization":
            raise ValueError(f"objective '{self.objective}' uses reparameterized gradients; "
                             "gradient_estimator (--gradient-estimator) applies to objective "
                             "'elbo' only")
        if self.gradient_estimator == "score-baseline" and self.num_samples < 2:
            raise ValueError("gradient_estimator 'score-baseline' subtracts a leave-one-out mean "
                             "over samples: use --num-samples 2 or more (num_samples in a config)")
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

    @model_validator(mode="after")
    def _compatible_sections(self) -> "RunConfig":
        from .likelihoods import needs_levels
        from .posteriors import POSTERIORS

        likelihood, data = self.model.likelihood, self.data
        if needs_levels(likelihood) and data.binarize not in ("auto", "none"):
            raise ValueError(f"likelihood '{likelihood}' models grey levels; the data cannot "
                             f"be binarized (--binarize {data.binarize}): use --likelihood "
                             "bernoulli for binarized data")
        if data.bits is not None and likelihood != "auto" and not needs_levels(likelihood):
            raise ValueError(f"--bits {data.bits} quantizes the data for a discrete grey-level "
                             f"likelihood (discretized-logistic, discretized-logistic-mixture, "
                             f"categorical); likelihood '{likelihood}' does not model levels")
        if (data.bits is not None and self.model.levels is not None
                and self.model.levels != 2**data.bits):
            raise ValueError(f"levels {self.model.levels} disagrees with bits {data.bits} "
                             f"(2^{data.bits} = {2**data.bits} levels)")
        posterior = self.model.posterior
        if self.train.objective == "iwae-dreg" and not POSTERIORS[posterior].detachable:
            valid = [n for n, cls in POSTERIORS.items() if cls.detachable]
            raise ValueError(f"objective 'iwae-dreg' evaluates q(z|x) with its parameters "
                             f"detached, which posterior '{posterior}' (learned transforms) "
                             f"cannot; use objective 'iwae' or posterior {' or '.join(valid)}")
        self._condition_columns_rules()
        if self.model.semi_supervised and self.train.labels_per_class is None:
            raise ValueError("a semi-supervised model (--semi-supervised) needs "
                             "--labels-per-class N (train.labels_per_class)")
        if not self.model.semi_supervised and (self.train.labels_per_class is not None
                                               or self.train.classification_weight is not None):
            raise ValueError("labels_per_class and classification_weight (--labels-per-class, "
                             "--classification-weight) apply to --semi-supervised only")
        if self.model.semi_supervised and (self.train.objective != "elbo"
                                           or self.train.gradient_estimator != "reparameterization"
                                           or self.train.beta != 1.0 or self.train.free_bits > 0
                                           or self.train.kl_warmup_epochs > 0):
            raise ValueError("a semi-supervised model trains the M2 bound (ELBO terms summed over "
                             "the classes): objective elbo, reparameterized, without beta, "
                             "KL warm-up or free bits")
        return self


    def _condition_columns_rules(self) -> None:
        """--condition-columns names the covariates y of a --conditional model (required, not
        implied, as with --conditional-prior)."""
        names, model = self.data.condition_columns, self.model
        if names is None:
            if model.condition_dim is not None:
                raise ValueError("model.condition_dim is the number of condition columns; set "
                                 "data.condition_columns (--condition-columns) too")
            return
        if model.semi_supervised:
            raise ValueError("--condition-columns conditions on covariates, --semi-supervised "
                             "classifies class labels: use one or the other")
        if not model.conditional:
            raise ValueError("--condition-columns names the condition y of a conditional model: "
                             "add --conditional")
        if model.conditional_prior == "class":
            raise ValueError("--conditional-prior class is one Gaussian per class; covariates "
                             "(--condition-columns) take --conditional-prior net, or none")
        if model.num_classes is not None:
            raise ValueError("model.num_classes applies to class labels; a model conditioned on "
                             "--condition-columns has condition_dim covariates instead")
        if model.condition_dim not in (None, len(names)):
            raise ValueError(f"model.condition_dim is {model.condition_dim} but "
                             f"{len(names)} condition columns are named")


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


def resolve(config: RunConfig, *, defaults: dict[str, Any], value_kind: str,
            levels: int | None = None, name: str = "the data") -> RunConfig:
    """Fills every ``None``/``"auto"`` field from the data set:

    - likelihood: the data set's default, else Bernoulli for binary and grey-level [0, 1] data
      and Gaussian for real values;
    - binarize: ``dynamic`` for grey-level data under a Bernoulli likelihood, else ``none``;
    - likelihood ``table`` when the column types are given (``model.columns``);
    - standardize: on for real-valued data (tables), whose columns come in arbitrary units,
      except under the table likelihood, which standardizes its numeric columns itself;
    - hidden sizes, latent dimension and epochs from the data set's ``defaults``
      (:func:`vaekit.data.dataset_defaults`);
    - levels of a discrete grey-level likelihood: 2^bits with ``data.bits``, else the data
      set's own number of grey levels ``levels`` (17 for digits, 256 for 8-bit images)."""
    model, train, data = config.model, config.train, config.data
    likelihood = model.likelihood
    if likelihood == "auto" and model.columns is not None:
        likelihood = "table"
    if likelihood == "auto":
        likelihood = defaults.get("likelihood") or (
            "gaussian" if value_kind == "real" else "bernoulli")
    binarize = data.binarize
    if binarize == "auto":
        binarize = "dynamic" if (likelihood == "bernoulli" and value_kind == "unit") else "none"
    from .likelihoods import needs_levels

    num_levels = model.levels
    if needs_levels(likelihood):
        if value_kind == "binary" or levels == 2:
            raise ConfigError(f"likelihood '{likelihood}' models grey levels but {name} is "
                              "binary; use --likelihood bernoulli")
        if value_kind == "real":
            raise ConfigError(f"likelihood '{likelihood}' models grey levels in [0, 1] but "
                              f"{name} has real values; use --likelihood gaussian")
        if data.bits is not None:
            if levels is not None and 2**data.bits > levels:
                raise ConfigError(f"--bits {data.bits} asks for {2**data.bits} levels but "
                                  f"{name} has only {levels}; use --bits "
                                  f"{max(1, levels.bit_length() - 1)} or fewer")
            num_levels = 2**data.bits
        elif num_levels is None:
            if levels is None:
                raise ConfigError(f"likelihood '{likelihood}' needs the number of grey levels "
                                  f"of {name}, which is not known: pass --bits N (2^N levels)")
            num_levels = levels
    return merge(config, {
        "data": {"binarize": binarize},
        "model": {
            "likelihood": likelihood,
            "levels": num_levels,
            "hidden": model.hidden if model.hidden is not None else defaults["hidden"],
            "latent_dim": model.latent_dim or defaults["latent_dim"],
            "standardize": (value_kind == "real" and model.columns is None)
                           if model.standardize is None else model.standardize,
        },
        "train": {"epochs": train.epochs or defaults["epochs"]},
    })


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
