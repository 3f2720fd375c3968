"""Conditional VAEs (Sohn, Lee & Yan 2015): a condition y (a class label one-hot, or C numeric
covariates standardized, ``--condition-columns``) enters the posterior q(z | x, y), the
likelihood p(x | z, y) and, when asked, the prior p(z | y):

    log p(x | y) >= E_q(z|x,y)[log p(x | z, y)] - KL(q(z | x, y) || p(z | y)).

The seam: :meth:`ConditionalVAE.given` binds a batch of conditions ``y [B, C]`` and returns
a :class:`Conditioned` model whose ``encoder(x)``, ``decoder(z)`` and ``prior()`` are the
conditioned distributions. Every objective and estimator of vaekit only calls those three, so
the ELBO, IWAE, DReG and the importance-sampled log p(x | y) run on the bound model unchanged,
with every prior, posterior and number of stochastic layers.

How y enters the networks: concatenated to their inputs. The encoder network reads
``join(x, y)`` (an MLP: the flattened x followed by y; a conv net: y as C constant extra
channels), the decoder network reads ``[z, y]`` (with several stochastic layers ``[z_1, y]``).
A VampPrior's pseudo-inputs live in the joined space, so each has a learned pseudo-condition
too. The conditional priors p(z | y) are :data:`CONDITIONAL_PRIORS`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Distribution

from .errors import ConfigError
from .hierarchy import TakeBottomLayer
from .likelihoods import needs_levels
from .model import VAE, build_parts, family_option_errors
from .nets import ScaleLevels, Standardize
from .objectives import elbo
from .posteriors import posterior_mean
from .priors import CONDITIONAL_PRIORS, ClassGaussianPrior, NetworkGaussianPrior, tempered  # noqa: F401 (re-exported)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[B]`` integer labels -> ``[B, C]`` float one-hot vectors (float input passes through:
    already a condition vector)."""
    if labels.is_floating_point():
        return labels
    return nn.functional.one_hot(labels.long(), num_classes).float()


def joined_shape(arch: str, data_shape: Sequence[int], condition_dim: int) -> tuple[int, ...]:
    """The shape of ``join(x, y)``, what the encoder network reads."""
    if arch == "conv":
        channels, *rest = data_shape
        return (channels + condition_dim, *rest)
    return (math.prod(data_shape) + condition_dim,)


def join(arch: str, x: torch.Tensor, y: torch.Tensor, data_shape: Sequence[int]) -> torch.Tensor:
    """x ``[B, *data_shape]`` and y ``[B, C]`` as one encoder input: ``[B, D + C]`` for an MLP,
    ``[B, channels + C, H, W]`` (y constant over the pixels) for a conv net."""
    batch = x.shape[: x.dim() - len(data_shape)]
    y = y.to(x.dtype).expand(*batch, y.shape[-1])
    if arch == "conv":
        planes = y[..., None, None].expand(*batch, y.shape[-1], *data_shape[1:])
        return torch.cat([x, planes], -3)
    return torch.cat([x.reshape(*batch, -1), y], -1)


class _Bound:
    """A module's distribution-returning call with the condition bound: attributes (flags such
    as ``has_inverse``) are the module's own."""

    def __init__(self, call, module: nn.Module) -> None:
        self._call, self._module = call, module

    def __call__(self, *args):
        return self._call(*args)

    def __getattr__(self, name: str):
        return getattr(self._module, name)


class Conditioned(nn.Module):
    """The model p(x, z | y) for one batch of conditions ``y [B, C]``: ``encoder(x)`` is
    q(z | x, y), ``decoder(z)`` p(x | z, y) (``z [..., B, L]``: y broadcasts over the leading
    sample axes) and ``prior()`` p(z | y) (batch ``[B]``) or the unconditioned p(z). What
    :mod:`vaekit.objectives` and :mod:`vaekit.evaluation` take as "the model"."""

    def __init__(self, model: ConditionalVAE, y: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.y = y
        self.data_shape = model.data_shape
        self.encoder = _Bound(lambda x: model.encoder(model.join(x, y)), model.encoder)
        self.decoder = _Bound(lambda z: model.decoder(model.with_condition(z, y)), model.decoder)
        self.prior = _Bound(lambda: model.prior_given(y), model.prior)

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    @property
    def latent_dims(self) -> tuple[int, ...]:
        return self.model.latent_dims

    def layer_slice(self, layer: int | None = None) -> slice:
        return self.model.layer_slice(layer)


class ConditionalVAE(VAE):
    """p(x, z | y) = p(z | y) p(x | z, y) with q(z | x, y) (Sohn et al. 2015). The encoder,
    decoder and prior modules are those of a :class:`~vaekit.model.VAE` whose networks read
    the condition as extra inputs (see the module docstring); with ``conditional_prior`` the
    prior is a module ``y -> p(z | y)`` (:data:`CONDITIONAL_PRIORS`; with several layers, the
    top of the hierarchical prior), else the plain prior p(z). ``standardize``: applied to x
    before it is joined with y (real-valued data).

    y is one of two kinds: ``num_classes`` classes, and every method taking ``y`` accepts
    integer labels ``[B]`` (made one-hot) or condition vectors ``[B, C]``; or ``condition_dim``
    C covariates (``num_classes`` None), and ``y`` is a float tensor ``[B, C]`` (or one vector
    ``[C]`` for all) in standardized units, (value - training mean) / training std.
    ``condition_dim`` is the width C of y in both cases."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module,
                 data_shape: Sequence[int], *, num_classes: int | None = None, arch: str,
                 conditional_prior: bool = False, standardize: nn.Module | None = None,
                 condition_dim: int | None = None) -> None:
        super().__init__(encoder, decoder, prior, data_shape)
        if (num_classes is None) == (condition_dim is None):
            raise ConfigError("a conditional model conditions on num_classes classes or on "
                              "condition_dim covariates (one of the two)")
        self.num_classes = num_classes
        self.condition_dim = num_classes if num_classes is not None else condition_dim
        self.arch = arch
        self.conditional_prior = conditional_prior
        self.standardize = standardize if standardize is not None else nn.Identity()

    family = "conditional"

    # -- the family seam (see vaekit.model.VAE) ----------------------------------------------
    @property
    def condition_kind(self) -> str:
        return "labels" if self.num_classes is not None else "covariates"

    @staticmethod
    def condition_kind_of(cfg, data) -> str:
        return "covariates" if data.condition_columns else "labels"

    @classmethod
    def from_config(cls, cfg, data_shape: Sequence[int], **extra) -> ConditionalVAE:
        """The conditional model of a resolved config: conditioned on ``cfg.num_classes``
        classes (y one-hot) or on ``cfg.condition_dim`` covariates; ``extra``: keywords of a
        subclass (M2's classifier)."""
        if not (cfg.num_classes or cfg.condition_dim):
            raise ConfigError("a conditional model needs model.num_classes or model.condition_dim "
                              "(filled in from the data set's labels or condition columns when "
                              "training)")
        data_shape = tuple(data_shape)
        condition_dim = cfg.condition_dim or cfg.num_classes  # the width of y
        encoder, decoder, prior = build_parts(
            cfg, data_shape, condition_dim=condition_dim,
            encoder_shape=joined_shape(cfg.arch, data_shape, condition_dim))
        conditional_prior = cfg.conditional_prior != "none"
        if conditional_prior:
            top = CONDITIONAL_PRIORS[cfg.conditional_prior](
                cfg.latent_sizes[-1], condition_dim, hidden=cfg.layer_hidden,
                activation=cfg.activation)
            if len(cfg.latent_sizes) > 1:
                prior.top = top
            else:
                prior = top
        standardize = Standardize(data_shape) if cfg.standardize else None
        if needs_levels(cfg.likelihood):  # integer levels: the encoder sees k / (n - 1)
            standardize = ScaleLevels(cfg.levels)
        return cls(encoder, decoder, prior, data_shape, num_classes=cfg.num_classes,
                   condition_dim=cfg.condition_dim, arch=cfg.arch,
                   conditional_prior=conditional_prior, standardize=standardize, **extra)

    @classmethod
    def config_errors(cls, model, train, data) -> str | None:
        """The rules of a conditional model's options (collected by config validation)."""
        names = data.condition_columns
        if model.condition_dim is not None and names is None:
            return ("model.condition_dim is the number of condition columns; set "
                    "data.condition_columns (--condition-columns) too")
        if model.condition_dim is not None and model.num_classes is not None:
            return ("a conditional model's y is one-hot over num_classes classes or a vector of "
                    "condition_dim covariates, not both")
        if names is not None:
            if model.conditional_prior == "class":
                return ("--conditional-prior class is one Gaussian per class; covariates "
                        "(--condition-columns) take --conditional-prior net, or none")
            if model.num_classes is not None:
                return ("model.num_classes applies to class labels; a model conditioned on "
                        "--condition-columns has condition_dim covariates instead")
            if model.condition_dim not in (None, len(names)):
                return (f"model.condition_dim is {model.condition_dim} but {len(names)} "
                        "condition columns are named")
        if model.conditional_prior != "none" and model.prior != "normal":
            return (f"conditional_prior '{model.conditional_prior}' replaces the prior p(z) by "
                    f"p(z|y); it cannot be combined with prior '{model.prior}'")
        if train.labels_per_class is not None or train.classification_weight is not None:
            return ("labels_per_class and classification_weight (--labels-per-class, "
                    "--classification-weight) apply to --semi-supervised only")
        return family_option_errors(train, cls.family)

    def evaluation_extras(self, result: dict, x: torch.Tensor, y: torch.Tensor | None, *,
                          batch_size: int, seed: int) -> dict:
        """What the bounds and log p(x) of ``result`` are given: the label or the columns."""
        return {**result, "conditioned_on": "label" if self.num_classes is not None
                else "columns"}

    def condition(self, y: torch.Tensor | int | Sequence[int]) -> torch.Tensor:
        """Labels (an int, a list, ``[B]`` integers) or condition vectors -> ``[B, C]``; labels
        outside 0..C-1 are refused. A covariate model takes float ``[B, C]`` (or ``[C]``)."""
        y = torch.as_tensor(y)
        if self.num_classes is None:
            return self._covariates(y)
        if y.dim() == 0:
            y = y.reshape(1)
        if not y.is_floating_point():
            bad = (y < 0) | (y >= self.num_classes)
            if bool(bad.any()):
                raise ConfigError(f"label {int(y[bad][0])} does not exist: the model has "
                                  f"{self.num_classes} classes (0..{self.num_classes - 1})")
        device = next(self.parameters()).device
        return one_hot(y, self.num_classes).to(device)

    def _covariates(self, y: torch.Tensor) -> torch.Tensor:
        dim = self.condition_dim
        if not y.is_floating_point():
            raise ConfigError(f"this model is conditioned on {dim} covariates (a float tensor "
                              f"[B, {dim}], standardized), not on class labels")
        if y.dim() == 0 or (y.dim() == 1 and dim > 1):
            y = y.reshape(1, -1)  # one condition vector for all
        elif y.dim() == 1:
            y = y[:, None]  # one covariate per example
        if y.shape[-1] != dim:
            raise ConfigError(f"the condition y has {y.shape[-1]} values per example; this model "
                              f"is conditioned on {dim} covariates")
        return y.to(next(self.parameters()).device, torch.float32)

    def given(self, y: torch.Tensor) -> Conditioned:
        """The model conditioned on ``y`` (one per example of the batch)."""
        return Conditioned(self, self.condition(y))

    def join(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return join(self.arch, self.standardize(x), y, self.data_shape)

    def with_condition(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[z, y] ``[..., B, L + C]``, the decoder network's input (y broadcast over samples)."""
        return torch.cat([z, y.to(z.dtype).expand(*z.shape[:-1], y.shape[-1])], -1)

    def prior_given(self, y: torch.Tensor) -> Distribution:
        """p(z | y) (batch ``[B]``) with a conditional prior, else p(z); with several stochastic
        layers the condition enters the top layer's prior p(z_L | y)."""
        # (a HierarchicalPrior passes y on to its top layer's prior)
        return self.prior(y) if self.conditional_prior else self.prior()

    # -- the VAE's methods, conditioned ------------------------------------------------------
    def _require(self, y, what: str) -> torch.Tensor:
        if y is None:
            kind = "class labels" if self.num_classes is not None else "covariates"
            raise ConfigError(f"this model is conditional: {what} needs the condition y "
                              f"({kind})")
        return self.condition(y)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """q(z | x, y): batch ``[B]``, event ``[L]``."""
        return self.given(self._require(y, "encode(x, y)")).encoder(x)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        """p(x | z, y): batch ``z.shape[:-1]``."""
        return self.given(self._require(y, "decode(z, y)")).decoder(z)

    @torch.no_grad()
    def sample(self, num: int, *, y=None, use_mean: bool = True,
               generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """x ~ p(x | z, y), z ~ p(z | y): ``[num, *data_shape]``. ``y``: one label (or condition
        vector) for all, or one per sample; None cycles through the classes 0, 1, ..., C-1, 0,
        ..., or for covariates takes y = 0, every covariate at its training mean.
        ``temperature``: z from p(z | y) with its noise scaled by T
        (:func:`vaekit.priors.tempered`)."""
        if y is None:
            y = torch.arange(num) % self.num_classes if self.num_classes is not None \
                else torch.zeros(num, self.condition_dim)
        y = self.condition(y)
        if len(y) == 1:
            y = y.expand(num, -1)
        if len(y) != num:
            raise ConfigError(f"sample: {len(y)} conditions for {num} samples")
        bound = self.given(y)
        if generator is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
                z = self._prior_sample(bound, num, temperature)
        else:
            z = self._prior_sample(bound, num, temperature)
        p_x = bound.decoder(z)
        return p_x.mean if use_mean else p_x.sample()

    @staticmethod
    def _prior_sample(bound: Conditioned, num: int, temperature: float) -> torch.Tensor:
        p_z = tempered(bound.prior(), temperature)
        return p_z.sample() if len(p_z.batch_shape) else p_z.sample((num,))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y=None, as_y=None) -> torch.Tensor:
        """E[x | z = E_q[z | x, y], y'] ``[B, *data_shape]`` with y' = ``as_y`` (default y): encoded
        with its own label and decoded with another, the same style drawn as another class."""
        y = self._require(y, "reconstruct(x, y)")
        z = posterior_mean(self.given(y).encoder(x))
        y_out = y if as_y is None else self.condition(as_y).expand(len(x), -1)
        return self.given(y_out).decoder(z).mean

    @torch.no_grad()
    def codes(self, x: torch.Tensor, layer: int | None = None, y=None) -> torch.Tensor:
        return posterior_mean(self.encode(x, y))[..., self.layer_slice(layer)]

    @torch.no_grad()
    def decode_codes(self, z: torch.Tensor, layer: int | None = None, y=None) -> Distribution:
        """p(x | z_1, y) with z_1 the generative means below the code ``z`` of ``layer`` (see
        :meth:`vaekit.model.VAE.decode_codes`), given the condition ``y``."""
        y = self._require(y, "decode_codes(z, layer, y)")
        layer = len(self.latent_dims) if layer is None else layer
        self.layer_slice(layer)
        if len(self.latent_dims) > 1:
            below = self.prior.decode_means(z, layer - 1)  # [z_1, ..., z_layer]
            z = torch.cat([below, below.new_zeros(*below.shape[:-1],
                                                  self.latent_dim - below.shape[-1])], -1)
        return self.given(y.expand(*z.shape[:-1], -1) if y.shape[0] == 1 else y).decoder(z)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The per-example conditional ELBO ``[B]``, a bound on log p(x | y)."""
        return elbo(self.given(self._require(y, "the ELBO")), x)


# the decoder network's input of a conditional model with several stochastic layers,
# [z_1, ..., z_L, y] -> [z_1, y] (kept under its former name)
BottomLayerAndCondition = TakeBottomLayer


def standardize_covariates(values, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """y = (value - mean) / std per covariate, with the training split's ``mean`` and ``std``
    (``data.condition_mean``, ``data.condition_std``): ``values [N, C]`` in the columns' own
    units -> float32 ``[N, C]``."""
    values = torch.as_tensor(values, dtype=torch.float64)
    mean, std = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    return ((values - mean) / std).float()


def labels_or_refuse(labels: torch.Tensor | None, what: str) -> torch.Tensor:
    if labels is None:
        raise ConfigError(f"{what} needs class labels but the data set has none (MNIST, "
                          "Fashion-MNIST, digits, image folders with class sub-folders and CSV "
                          "files with a label column have them)")
    return labels


def num_classes_of(class_names, *label_tensors) -> int:
    """C: the number of class names when known, else 1 + the largest label seen."""
    if class_names:
        return len(class_names)
    return 1 + max(int(t.max()) for t in label_tensors if t is not None and len(t))


def conditional_prior_label(model) -> bool:
    """Whether the model's prior is a learned p(z | y)."""
    return bool(getattr(model, "conditional_prior", False))
