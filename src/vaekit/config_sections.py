"""The three sections of a run's configuration (:class:`vaekit.config.RunConfig`): ``data``,
``model`` and ``train``, each a strict pydantic model whose fields have a default and a
one-line comment. Names of choices are checked against the registries that implement them
(:func:`choices`); rules between options are their owners' (model families, objectives),
collected by :class:`vaekit.config.RunConfig`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CONFIG_VERSION = 1
MAX_SEED = 2**32 - 1  # seeds are combined with epoch numbers and split offsets in 64-bit RNG seeds

PositiveInt = Annotated[int, Field(gt=0)]


def _of(family: str) -> dict:
    """The mark of a train option that applies to one model family only: any other family
    refuses it when it is set away from its default (:func:`vaekit.model.family_option_errors`)."""
    return {"family": family}


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
    from .families import FAMILIES
    from .data.preparation import BINARIZATIONS
    from .disentanglement_objectives import DIP_COVARIANCES, TC_ESTIMATORS
    from .hierarchy import INFERENCES
    from .likelihoods import LIKELIHOODS, GaussianLikelihood
    from .model import NETWORKS
    from .nets import ACTIVATIONS, INITIALIZATIONS
    from .objectives import GRADIENT_ESTIMATORS, OBJECTIVES
    from .posteriors import POSTERIORS
    from .priors import PRIORS
    from .precision import MATMUL_PRECISIONS, PRECISIONS
    from .schedules import LR_SCHEDULES

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
        ("train", "matmul_precision"): MATMUL_PRECISIONS,
        ("train", "lr_schedule"): LR_SCHEDULES,
        ("model", "init"): INITIALIZATIONS,
        ("model", "inference"): INFERENCES,
        ("model", "conditional_prior"): CONDITIONAL_PRIORS,
        ("model", "family"): ("auto", *FAMILIES),
        ("train", "tc_estimator"): TC_ESTIMATORS,
        ("train", "dip_type"): DIP_COVARIANCES,
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
    # the model family (vaekit.families): auto (conditional with --conditional, semi-supervised
    # with --semi-supervised, else vae), vae, conditional, semi-supervised
    family: str = "auto"
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
                     "family",
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
    def _owners_rules(self) -> "ModelConfig":
        """The rules of the model options' owners, each a ``model_errors(model)``: the
        networks', a table's, the priors', several layers', the grey-level likelihoods'."""
        from . import hierarchy, likelihoods, model, priors, tables

        for owner in (model, tables, priors, hierarchy, likelihoods):
            error = owner.model_errors(self)
            if error:
                raise ValueError(error)
        return self

    @model_validator(mode="after")
    def _one_family(self) -> "ModelConfig":
        implied = self.implied_family
        if self.family != "auto" and implied is not None and implied != self.family:
            flag = "--semi-supervised" if self.semi_supervised else "--conditional"
            raise ValueError(f"{flag} is the family '{implied}', not '{self.family}'")
        return self

    @property
    def implied_family(self) -> str | None:
        """The family --conditional or --semi-supervised names (None: neither)."""
        if self.semi_supervised:
            return "semi-supervised"
        return "conditional" if self.conditional else None

    @property
    def family_name(self) -> str:
        """The model family (a key of :data:`vaekit.families.FAMILIES`), ``auto`` resolved."""
        return self.family if self.family != "auto" else (self.implied_family or "vae")


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
    # float32 matrix products: highest (float32), high, medium (bfloat16 products with float32
    # accumulation where the hardware has them: torch.set_float32_matmul_precision)
    matmul_precision: str = "highest"
    compile: bool = False  # torch.compile the training loss (first steps slower, later faster)
    report: bool = True  # write report.html into the run directory at the end
    tensorboard: bool = False  # also log scalars and image grids for TensorBoard
    labels_per_class: int | None = Field(None, gt=0)  # semi-supervised: labelled training examples per class
    # semi-supervised: weight alpha of the mean classification loss (None: 0.1 N / N_labelled)
    classification_weight: float | None = Field(None, ge=0)
    # the disentangling families (vaekit.disentanglement_objectives, _factor), each option its own
    # annealed-capacity (Burgess et al. 2018): gamma of gamma |KL - C| (their dSprites runs: 1000)
    capacity_gamma: float = Field(1000.0, gt=0, json_schema_extra=_of("annealed-capacity"))
    # annealed-capacity: C rises linearly from 0 to capacity_max nats over capacity_steps steps
    capacity_max: float = Field(25.0, ge=0, json_schema_extra=_of("annealed-capacity"))
    capacity_steps: int = Field(100_000, gt=0, json_schema_extra=_of("annealed-capacity"))
    # beta-tcvae (Chen et al. 2018): the weight of the total correlation term of the KL
    tc_beta: float = Field(6.0, ge=0, json_schema_extra=_of("beta-tcvae"))
    # beta-tcvae: log q(z) by minibatch weighted (mws) or minibatch stratified (mss) sampling
    tc_estimator: str = Field("mws", json_schema_extra=_of("beta-tcvae"))
    # dip-vae (Kumar et al. 2018): i, the covariance of the posterior means; ii, of q(z)
    dip_type: str = Field("i", json_schema_extra=_of("dip-vae"))
    dip_lambda_od: float = Field(10.0, ge=0, json_schema_extra=_of("dip-vae"))  # dip-vae: weight of the off-diagonal entries
    # dip-vae: weight of the diagonal entries' distance to 1 (None: 10 lambda_od for i, lambda_od for ii)
    dip_lambda_d: float | None = Field(None, ge=0, json_schema_extra=_of("dip-vae"))
    # factor-vae (Kim & Mnih 2018): weight gamma of the discriminator's estimate of the TC
    factor_gamma: float = Field(35.0, ge=0, json_schema_extra=_of("factor-vae"))
    # factor-vae: Adam learning rate of the discriminator (betas 0.5, 0.9 as in the paper)
    discriminator_lr: float = Field(1e-4, gt=0, json_schema_extra=_of("factor-vae"))

    @field_validator("objective", "gradient_estimator", "precision", "lr_schedule",
                     "matmul_precision", "tc_estimator", "dip_type")
    @classmethod
    def _known(cls, name: str, info) -> str:
        return _registered("train", info.field_name, name)
