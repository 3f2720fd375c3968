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
from torch.distributions import Distribution, Independent, Normal

from .errors import ConfigError
from .model import VAE, posterior_mean
from .nets import MLP
from .posteriors import _diagonal_gaussian
from .priors import tempered


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[B]`` integer labels -> ``[B, C]`` float one-hot vectors (float input passes through:
    already a condition vector)."""
    if labels.is_floating_point():
        return labels
    return nn.functional.one_hot(labels.long(), num_classes).float()


class ClassGaussianPrior(nn.Module):
    """p(z | y) = N(z; M y, diag(exp(2 S y))): one learned Gaussian per class (rows of the
    tables ``loc [C, L]`` and ``log_scale [C, L]``; a soft y mixes their parameters). Starts as
    N(0, I) for every class."""

    def __init__(self, latent_dim: int, num_classes: int, **_: object) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(num_classes, latent_dim))
        self.log_scale = nn.Parameter(torch.zeros(num_classes, latent_dim))

    def forward(self, y: torch.Tensor) -> Distribution:
        """``y [B, C]`` -> batch ``[B]``, event ``[L]``."""
        loc, log_scale = y @ self.loc, (y @ self.log_scale).clamp(-15, 10)
        return Independent(Normal(loc, log_scale.exp(), validate_args=False), 1,
                           validate_args=False)


class NetworkGaussianPrior(nn.Module):
    """p(z | y) = N(z; mu(y), diag(sigma^2(y))) with [mu, log sigma^2] an MLP of y ``[B, C]``
    (hidden sizes ``hidden``): for conditions that are not classes (covariates)."""

    def __init__(self, latent_dim: int, condition_dim: int, hidden: Sequence[int] = (64,),
                 activation: str = "relu", **_: object) -> None:
        super().__init__()
        self.net = MLP((condition_dim,), (2 * latent_dim,), hidden, activation)

    def forward(self, y: torch.Tensor) -> Distribution:
        return _diagonal_gaussian(self.net(y))


# config model.conditional_prior -> p(z | y) (none: the configured prior p(z), not conditioned)
CONDITIONAL_PRIORS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "class": ClassGaussianPrior,
    "net": NetworkGaussianPrior,
}


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

    # -- the seam ----------------------------------------------------------------------------
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
        from .objectives import elbo

        return elbo(self.given(self._require(y, "the ELBO")), x)


class BottomLayerAndCondition(nn.Module):
    """[z_1, ..., z_L, y] -> [z_1, y]: the decoder p(x | z_1, y) of a conditional model with
    several stochastic layers (``latent_dim`` = sum of the layers' sizes)."""

    def __init__(self, size: int, latent_dim: int) -> None:
        super().__init__()
        self.size, self.latent_dim = size, latent_dim

    def forward(self, zy: torch.Tensor) -> torch.Tensor:
        return torch.cat([zy[..., : self.size], zy[..., self.latent_dim :]], -1)


def build_conditional_model(cfg, data_shape: Sequence[int]) -> ConditionalVAE:
    """The conditional VAE (or, with ``cfg.semi_supervised``, the M2 model of
    :mod:`vaekit.semisupervised`) of a resolved config: conditioned on ``cfg.num_classes``
    classes (y one-hot) or on ``cfg.condition_dim`` covariates."""
    from .model import build_parts
    from .likelihoods import needs_levels
    from .nets import ScaleLevels, Standardize

    if not (cfg.num_classes or cfg.condition_dim):
        raise ConfigError("a conditional model needs model.num_classes or model.condition_dim "
                          "(filled in from the data set's labels or condition columns when "
                          "training)")
    data_shape = tuple(data_shape)
    condition_dim = cfg.condition_dim or cfg.num_classes  # the width of y
    encoder, decoder, prior = build_parts(cfg, data_shape, condition_dim=condition_dim)
    conditional_prior = cfg.conditional_prior != "none"
    if conditional_prior:
        top_size = cfg.latent_sizes[-1]
        top = CONDITIONAL_PRIORS[cfg.conditional_prior](
            top_size, condition_dim, hidden=cfg.layer_hidden, activation=cfg.activation)
        if len(cfg.latent_sizes) > 1:
            prior.top = top
        else:
            prior = top
    standardize = Standardize(data_shape) if cfg.standardize else None
    if needs_levels(cfg.likelihood):  # integer levels: the encoder sees k / (n - 1), as unconditioned
        standardize = ScaleLevels(cfg.levels)
    options = dict(num_classes=cfg.num_classes, condition_dim=cfg.condition_dim, arch=cfg.arch,
                   conditional_prior=conditional_prior, standardize=standardize)
    if cfg.semi_supervised:
        from .semisupervised import SemiSupervisedVAE, classifier_net

        return SemiSupervisedVAE(encoder, decoder, prior, data_shape,
                                 classifier=classifier_net(cfg, data_shape), **options)
    return ConditionalVAE(encoder, decoder, prior, data_shape, **options)


# -- training and evaluation -----------------------------------------------------------------


def conditional_training_loss(model: ConditionalVAE, x: torch.Tensor, *, y: torch.Tensor,
                              **options):
    """:func:`vaekit.objectives.training_loss` of the model conditioned on the batch's labels
    ``y [B]``: any objective, conditioned."""
    from .objectives import training_loss

    return training_loss(model.given(y), x, **options)


@torch.no_grad()
def evaluate_conditional(model: ConditionalVAE, x: torch.Tensor, labels: torch.Tensor, *,
                         num_samples: int = 0, batch_size: int = 1000, seed: int = 0,
                         is_image: bool = False) -> dict:
    """The conditional ELBO (a bound on log p(x | y)) and its terms, and with ``num_samples`` K
    > 0 the importance-sampled log p(x | y), nats per example, over ``x [N, ...]`` with their
    labels ``[N]``: each batch is the bound model :meth:`ConditionalVAE.given` evaluated by
    :func:`vaekit.evaluation.evaluate_elbo` and :func:`vaekit.evaluation.importance_estimate`
    under the batch's own seed. The importance estimate takes its batches as
    :func:`~vaekit.evaluation.importance_estimate` would (the bound model holds one batch's
    labels, so it is called on one batch at a time)."""
    import time

    from .evaluation import (batch_seed, chunk_sizes, evaluate_elbo, importance_estimate,
                             log_likelihood_summary)

    if labels is None:
        raise ConfigError("a conditional model is evaluated on labelled data; this split has "
                          "no labels")
    conditioned_on = "label" if model.num_classes is not None else "columns"
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)
    log_px, ess, seconds = [], [], 0.0
    for b, start in enumerate(range(0, len(x), batch_size)):
        xb, yb = x[start : start + batch_size], labels[start : start + batch_size]
        bound = model.given(yb)
        xb = xb.to(next(model.parameters()).device)
        r = evaluate_elbo(bound, xb, batch_size=len(xb), seed=batch_seed(seed, b))
        sums += torch.tensor([r["elbo"], r["reconstruction"], r["kl"]], dtype=torch.float64) * len(xb)
    if num_samples > 0:  # batches as importance_estimate would take them, each with its labels
        began = time.perf_counter()
        _, per_batch = chunk_sizes(num_samples, len(x), None, None)
        for b, start in enumerate(range(0, len(x), per_batch)):
            xb, yb = x[start : start + per_batch], labels[start : start + per_batch]
            e = importance_estimate(model.given(yb), xb, num_samples, batch_size=len(xb),
                                    seed=batch_seed(seed, b))
            log_px.append(e.log_likelihood)
            ess.append(e.ess)
        seconds = time.perf_counter() - began
    model.train(was_training)
    n = max(len(x), 1)
    out = {"elbo": float(sums[0] / n), "reconstruction": float(sums[1] / n),
           "kl": float(sums[2] / n), "num_examples": len(x), "conditioned_on": conditioned_on}
    if num_samples > 0:
        out.update(log_likelihood_summary(torch.cat(log_px), model.data_shape, is_image))
        out.update(num_samples=num_samples, ess_mean=float(torch.cat(ess).mean()),
                   log_likelihood_seconds=seconds)
    return out


def evaluate_run_model(model: ConditionalVAE, x: torch.Tensor, labels: torch.Tensor | None, *,
                       num_samples: int, batch_size: int = 1000, is_image: bool = False,
                       seed: int = 0) -> dict:
    """What ``vaekit evaluate`` reports for a conditional model: the conditional ELBO and the
    importance-sampled log p(x | y) with the true labels, or the standardized covariates
    ``[N, C]`` of a covariate model (:func:`evaluate_conditional`); for the semi-supervised M2
    model also the unlabelled bound U(x) on log p(x) (``elbo``; the conditional bound is then
    ``elbo_given_label``) and the test ``classification_error``."""
    if model.num_classes is None:  # covariates
        return evaluate_conditional(model, x, labels, num_samples=num_samples,
                                    batch_size=batch_size, seed=seed, is_image=is_image)
    labels = labels_or_refuse(labels, "evaluating a conditional model").long()
    result = evaluate_conditional(model, x, labels, num_samples=num_samples,
                                  batch_size=batch_size, seed=seed, is_image=is_image)
    if hasattr(model, "classifier"):
        from .semisupervised import evaluate_semi_supervised

        given = {f"{k}_given_label": result.pop(k) for k in ("elbo", "reconstruction", "kl")}
        result.update(given)
        result.update(evaluate_semi_supervised(model, x, labels, batch_size=batch_size,
                                               seed=seed))
    return result


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


def parse_label(text: str, class_names: Sequence[str] | None, num_classes: int) -> int:
    """A label given on the command line: its index or its class name ("7", "sandal")."""
    names = list(class_names or [])
    if text in names:
        return names.index(text)
    try:
        label = int(text)
    except ValueError:
        valid = ", ".join(names) if names else f"0..{num_classes - 1}"
        raise ConfigError(f"label '{text}' is not a class of this model (classes: {valid})"
                          ) from None
    if not 0 <= label < num_classes:
        raise ConfigError(f"--label {label} does not exist: the model has {num_classes} classes "
                          f"(0..{num_classes - 1})")
    return label


# -- what the command line asks of a conditional run --------------------------------------------


def require_conditional(run, flag: str) -> ConditionalVAE:
    """The run's model when it is conditioned on class labels (what ``flag`` draws)."""
    model = run.model
    if not getattr(model, "condition_dim", None):
        raise ConfigError(f"{flag} needs a conditional model (trained with --conditional or "
                          "--semi-supervised); this run is unconditional")
    if model.num_classes is None:
        names = ",".join(run.config.data.condition_columns or ())
        raise ConfigError(f"{flag} draws a class, but this run is conditioned on the columns "
                          f"{names}: give their values with vaekit sample --condition NAME=VALUE")
    return model


def require_covariates(run, flag: str) -> ConditionalVAE:
    """The run's model when it is conditioned on covariates (``--condition-columns``)."""
    model = run.model
    if not getattr(model, "condition_dim", None):
        raise ConfigError(f"{flag} needs a model conditioned on covariates (trained with "
                          "--conditional --condition-columns); this run is unconditional")
    if model.num_classes is not None:
        raise ConfigError(f"{flag} gives the values of covariates, but this run is conditioned "
                          "on class labels: draw a class with --label")
    return model


def parse_covariates(text: str, names: Sequence[str], mean: Sequence[float]) -> list[float]:
    """``"age=40,income=50000"`` -> one value per condition column in its own units; columns
    left out are at their training mean."""
    values = dict(zip(names, mean))
    given: set[str] = set()
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--condition: '{item}' is not NAME=VALUE (e.g. "
                              f"{names[0]}={mean[0]:g})")
        if name not in values:
            raise ConfigError(f"--condition: '{name}' is not a condition column of this run "
                              f"(its columns: {', '.join(names)})")
        if name in given:
            raise ConfigError(f"--condition gives '{name}' twice")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"--condition {name}={value}: not a number") from None
        if not math.isfinite(number):
            raise ConfigError(f"--condition {name}={value}: not a finite number")
        values[name] = number
        given.add(name)
    return [values[name] for name in names]


@torch.no_grad()
def covariate_samples(run, text: str | None, num: int | None, *, use_mean: bool = True,
                      generator: torch.Generator | None = None, temperature: float = 1.0
                      ) -> tuple[torch.Tensor, list[float]]:
    """``vaekit sample --condition age=40,income=50000``: ``num`` (default 64) samples x ~
    p(x | z, y), z ~ p(z | y), of the covariates given in their own units (standardized with the
    run's training mean and std; the others at their mean). Returns the samples and the
    covariates' values."""
    model = require_covariates(run, "--condition")
    dc = run.config.data
    values = parse_covariates(text or "", dc.condition_columns, dc.condition_mean) if text \
        else list(dc.condition_mean)
    y = standardize_covariates([values], dc.condition_mean, dc.condition_std)  # [1, C]
    num = 64 if num is None else num
    return model.sample(num, y=y, use_mean=use_mean, generator=generator,
                        temperature=temperature), values


def class_names_of_run(run) -> list[str]:
    model = run.model
    names = list(run.data.class_names or [])
    return names if len(names) == model.num_classes else [str(c) for c in range(model.num_classes)]


@torch.no_grad()
def conditional_samples(run, label: str, num: int | None, *, use_mean: bool = True,
                        generator: torch.Generator | None = None, temperature: float = 1.0
                        ) -> tuple[torch.Tensor, int]:
    """``vaekit sample --label``: ``num`` (default 64) samples of one class, or with ``label``
    "all" one row of ``num`` (default 8) samples per class. Returns the images and the grid
    width."""
    model = require_conditional(run, "--label")
    if label == "all":
        per_class = 8 if num is None else num
        y = torch.arange(model.num_classes).repeat_interleave(per_class)
        return model.sample(len(y), y=y, use_mean=use_mean, generator=generator,
                            temperature=temperature), per_class
    c = parse_label(label, run.data.class_names, model.num_classes)
    num = 64 if num is None else num
    x = model.sample(num, y=torch.full((num,), c), use_mean=use_mean, generator=generator,
                     temperature=temperature)
    return x, min(num, 8)


@torch.no_grad()
def conditional_reconstructions(run, split: str, source, data_dir, num: int,
                                as_label: str | None, *, grid: bool) -> tuple[torch.Tensor, int | None]:
    """``vaekit reconstruct`` of a conditional run: each example encoded with its true label (or
    covariates) and decoded with it, or with ``as_label`` (the style of the example, drawn as
    that class). With ``grid``: rows of inputs above their reconstructions."""
    model = run.model if as_label is None else require_conditional(run, "--as-label")
    as_y = None if as_label is None else parse_label(as_label, run.data.class_names,
                                                     model.num_classes)
    x, _ = run.split(split, source, data_dir)
    y = labels_or_refuse(run.condition(split, source, data_dir),
                         "reconstructing with a conditional model")
    x, y = x[:num], y[:num]
    recon = model.reconstruct(x, y, as_y)
    if not grid:
        return recon, None
    per_row = min(8, len(x))
    rows = []
    for r in range(len(x) // per_row):
        part = slice(r * per_row, (r + 1) * per_row)
        rows += [x[part], recon[part]]
    return torch.cat(rows), per_row


def format_evaluation(result: dict, split: str) -> str:
    """The lines ``vaekit evaluate`` prints for a conditional run."""
    lines = []
    if "classification_error" in result:
        lines.append(f"{split}: classification error {100 * result['classification_error']:.2f}% "
                     f"({result['num_examples']} examples); unlabelled bound U(x) on log p(x) "
                     f"{result['elbo']:.2f} nats/example")
        lines.append(f"ELBO given the label {result['elbo_given_label']:.2f} nats/example "
                     f"(reconstruction {result['reconstruction_given_label']:.2f}, KL "
                     f"{result['kl_given_label']:.2f})")
    else:
        lines.append(f"{split}: ELBO {result['elbo']:.2f} nats/example (a bound on log p(x|y)) "
                     f" reconstruction {result['reconstruction']:.2f}  KL {result['kl']:.2f}  "
                     f"({result['num_examples']} examples)")
        if result.get("conditioned_on") == "columns":
            lines.append("y: the columns " + ", ".join(result.get("condition_columns", []))
                         + ", standardized with the training mean and std")
    if "log_likelihood" in result:
        lines.append(f"log p(x|y) {result['log_likelihood']:.2f} +- "
                     f"{result['log_likelihood_stderr']:.2f} nats/example (K="
                     f"{result['num_samples']}, mean ESS {result['ess_mean']:.1f})")
    return "\n".join(lines)


def conditional_prior_label(model) -> bool:
    """Whether the model's prior is a learned p(z | y)."""
    return bool(getattr(model, "conditional_prior", False))
