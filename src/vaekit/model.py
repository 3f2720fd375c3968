"""The VAE: an encoder q(z|x), a decoder p(x|z) and a prior p(z), each a module returning a
distribution. It is also the base of every model family (:mod:`vaekit.families`): the methods
under "the family seam" are all the training loop, evaluation and :class:`~vaekit.run.Run` ask
of a model, and a family overrides what is its own. ``build_parts`` turns a resolved
:class:`~vaekit.config.ModelConfig` into the encoder, decoder and prior modules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.distributions import Distribution

from .errors import ConfigError
from .hierarchy import TakeBottomLayer, hierarchical_latents
from .likelihoods import LIKELIHOODS, GaussianLikelihood, needs_levels
from .nets import INITIALIZATIONS, MLP, ConvDecoderNet, ConvEncoderNet, ScaleLevels, Standardize
from .objectives import ElboTerms, elbo, training_loss
from .posteriors import POSTERIORS, posterior_mean  # noqa: F401 (posterior_mean: re-exported)
from .priors import PRIORS, tempered
from .tables import table_mlp_networks

if TYPE_CHECKING:
    from .config import ModelConfig


class VAE(nn.Module):
    """p(x, z) = p(z) p(x|z) with amortised posterior q(z|x) (Kingma & Welling 2014): the
    family ``vae`` (:data:`vaekit.families.FAMILIES`)."""

    # What the y of a batch is for this family (the data a batch carries beside x): None (no
    # condition), "labels" (class indices [B]) or "covariates" (standardized numbers [B, C])
    condition_kind: str | None = None
    # its name in vaekit.families.FAMILIES: the train options marked as another family's are
    # refused (family_option_errors)
    family = "vae"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module,
                 data_shape: Sequence[int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.data_shape = tuple(data_shape)

    @property
    def latent_dim(self) -> int:
        """Numbers in z: the sum of the layers' sizes for a hierarchical model."""
        return self.encoder.latent_dim

    @property
    def latent_dims(self) -> tuple[int, ...]:
        """The sizes of the stochastic layers, bottom (next to x) first."""
        return tuple(getattr(self.encoder, "sizes", (self.latent_dim,)))

    def layer_slice(self, layer: int | None = None) -> slice:
        """Where the stochastic layer z_layer sits in z: layers count from 1 (next to x) to the
        top, as in the math; None is the top (the whole z of a one-layer model)."""
        sizes = self.latent_dims
        layer = len(sizes) if layer is None else layer
        if not 1 <= layer <= len(sizes):
            raise ConfigError(f"layer {layer} does not exist: the model has {len(sizes)} "
                              f"stochastic layer{'s' if len(sizes) > 1 else ''} (1 = next to x)")
        start = sum(sizes[: layer - 1])
        return slice(start, start + sizes[layer - 1])

    # -- the family seam ---------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: ModelConfig, data_shape: Sequence[int]) -> VAE:
        """The model a resolved config describes, for data of ``data_shape``: one stochastic
        layer, or several (``latent_dim`` a list, :mod:`vaekit.hierarchy`)."""
        return cls(*build_parts(cfg, data_shape), data_shape)

    @classmethod
    def config_errors(cls, model, train, data) -> str | None:
        """What is wrong with the config sections ``model``, ``train``, ``data`` for this family
        (a one-line message), or None: the family's rules, which config validation collects."""
        if model.conditional_prior != "none":
            return ("conditional_prior (--conditional-prior) is the prior p(z|y) of a "
                    "conditional model: add --conditional")
        if data.condition_columns is not None:
            return ("--condition-columns names the condition y of a conditional model: add "
                    "--conditional")
        if model.condition_dim is not None:
            return ("model.condition_dim is the number of condition columns of a conditional "
                    "model; set data.condition_columns (--condition-columns) and --conditional")
        if train.labels_per_class is not None or train.classification_weight is not None:
            return ("labels_per_class and classification_weight (--labels-per-class, "
                    "--classification-weight) apply to --semi-supervised only")
        return family_option_errors(train, cls.family)

    @staticmethod
    def condition_kind_of(cfg: ModelConfig, data) -> str | None:
        """What the batches of a run of this family carry beside x (``data``: the data config):
        see :attr:`condition_kind`, and "partial-labels" for labels of which most are unknown."""
        return None

    def given(self, y: torch.Tensor | None = None) -> VAE:
        """The model given a batch's condition y: q(z|x,y), p(x|z,y), p(z|y) for a conditional
        family; an unconditional model is itself (it takes no y)."""
        if y is not None:
            raise ConfigError("this model is unconditional: it takes no condition y")
        return self

    def training_loss(self, x: torch.Tensor, y: torch.Tensor | None = None, *,
                      objective: str = "elbo", beta: float = 1.0, free_bits: float = 0.0,
                      num_samples: int = 1, gradient_estimator: str = "reparameterization"
                      ) -> tuple[torch.Tensor, ElboTerms]:
        """The scalar loss of a training batch (x and its y) and the per-example ELBO terms for
        reporting: :func:`vaekit.objectives.training_loss` of the model given y."""
        return training_loss(self.given(y), x, objective=objective, beta=beta,
                             free_bits=free_bits, num_samples=num_samples,
                             gradient_estimator=gradient_estimator)

    def evaluation_extras(self, result: dict, x: torch.Tensor, y: torch.Tensor | None, *,
                          batch_size: int, seed: int) -> dict:
        """What this family reports beyond the common evaluation ``result`` of ``x`` (given
        ``y``; :func:`vaekit.evaluation.evaluate_model`): nothing for the plain VAE."""
        return result

    def prepare_training(self, train_x: torch.Tensor, train) -> None:
        """Called once before training (and before a resume loads its checkpoint) with the
        training split ``train_x`` and the train config: what the family's loss needs of them
        (its options, the split's size). Nothing for the plain VAE."""

    def optimized_parameters(self):
        """The parameters the training loop's optimizer updates: all of them, unless the family
        trains some with an optimizer of its own (FactorVAE's discriminator)."""
        return self.parameters()

    def family_state_dict(self) -> dict | None:
        """The family's own training state beyond its weights, for exact resume (stored in the
        checkpoint's part "family"): None for the plain VAE."""
        return None

    def load_family_state_dict(self, state: dict) -> None:
        """Restores what :meth:`family_state_dict` returned."""

    # -- the model -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x): batch ``[B]``, event ``[L]``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z): batch ``z.shape[:-1]``, event ``data_shape``."""
        return self.decoder(z)

    @torch.no_grad()
    def sample(self, num: int, *, use_mean: bool = True, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> torch.Tensor:
        """x ~ p(x|z), z ~ p(z): ``[num, *data_shape]``. With ``use_mean`` (default) returns
        E[x|z], the usual picture of a sample; otherwise a draw from p(x|z). ``temperature``:
        z from the prior with its noise scaled by T (:func:`vaekit.priors.tempered`)."""
        p_z = tempered(self.prior(), temperature)
        if generator is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
                z = p_z.sample((num,))
        else:
            z = p_z.sample((num,))
        p_x = self.decoder(z)
        return p_x.mean if use_mean else p_x.sample()

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Values of the data (or of E[x|z]) as grey levels in [0, 1] for pictures: k / (n - 1)
        for the integer levels of a discrete grey-level likelihood, else ``x`` itself."""
        to_unit = getattr(self.decoder, "to_unit", None)
        return to_unit(x) if to_unit is not None else x

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = posterior mean of q(z|x)]: ``[B, *data_shape]``."""
        return self.decoder(posterior_mean(self.encoder(x))).mean

    @torch.no_grad()
    def codes(self, x: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """E_q[z_layer | x], ``[B, L_layer]``: the posterior means of one stochastic layer
        (1 = next to x; None: the top, the whole z of a one-layer model)."""
        return posterior_mean(self.encoder(x))[..., self.layer_slice(layer)]

    @torch.no_grad()
    def decode_codes(self, z: torch.Tensor, layer: int | None = None) -> Distribution:
        """p(x | z_1) with z_1 the generative means E[z_1 | ... z_layer] below the code ``z`` of
        layer ``layer`` (None: the top): how the report and the explorer picture a code of a
        hierarchical model (a decoder that reads every layer gets z_1 .. z_layer, and zeros for
        the layers above). A one-layer model decodes z itself."""
        layer = len(self.latent_dims) if layer is None else layer
        self.layer_slice(layer)  # checks the layer
        if len(self.latent_dims) == 1:
            return self.decoder(z)
        below = self.prior.decode_means(z, layer - 1)  # [z_1, ..., z_layer]
        rest = below.new_zeros(*below.shape[:-1], self.latent_dim - below.shape[-1])
        return self.decoder(torch.cat([below, rest], -1))

    @torch.no_grad()
    def set_data_scaling(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        """Sets the per-dimension standardization (x - loc) / scale of the encoder's input and,
        for a Gaussian likelihood, the matching affine map of the decoder's output."""
        for module in self.modules():
            if isinstance(module, Standardize):
                module.loc.copy_(loc)
                module.scale.copy_(scale)
            if isinstance(module, GaussianLikelihood):
                module.data_loc.copy_(loc)
                module.data_scale.copy_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The per-example ELBO ``[B]`` (see :func:`vaekit.objectives.elbo`)."""
        return elbo(self, x)


def mlp_networks(cfg: ModelConfig, data_shape: tuple[int, ...], enc_out: int, *,
                 decoder_in: int, decoder_shape: tuple[int, ...] | None = None):
    """Encoder and decoder MLPs with the hidden sizes ``cfg.hidden`` (mirrored in the decoder):
    the encoder maps x of ``data_shape`` to ``enc_out`` numbers, the decoder ``decoder_in``
    numbers (z, or [z, y]) to ``decoder_shape`` (default: the data's shape). For a table
    (``cfg.columns``) the encoder reads the table's encoding of a row and the decoder outputs
    the parameters of its columns (:func:`vaekit.tables.table_mlp_networks`)."""
    if cfg.columns is not None:
        return table_mlp_networks(cfg, data_shape, enc_out, decoder_in)
    hidden = list(cfg.hidden)
    enc = MLP(data_shape, (enc_out,), hidden, cfg.activation, gated=cfg.gated)
    dec = MLP((decoder_in,), decoder_shape or data_shape, hidden[::-1], cfg.activation,
              gated=cfg.gated)
    return enc, dec


def conv_networks(cfg: ModelConfig, data_shape: tuple[int, ...], enc_out: int, *,
                  decoder_in: int, decoder_shape: tuple[int, ...] | None = None):
    """Convolutional encoder and decoder for images ``(C, H, W)`` of any size; the decoder maps
    ``decoder_in`` numbers to ``decoder_shape`` (default: the data's shape)."""
    if len(data_shape) != 3:
        raise ConfigError(
            f"--arch conv needs image data of shape (C, H, W) but the data has shape "
            f"{data_shape}; use --arch mlp for tables and flat vectors"
        )
    enc = ConvEncoderNet(data_shape, enc_out, cfg.conv_channels, cfg.conv_hidden, cfg.activation)
    dec = ConvDecoderNet(decoder_in, decoder_shape or data_shape, cfg.conv_channels,
                         cfg.conv_hidden, cfg.activation)
    return enc, dec


# config model.arch -> (cfg, data_shape, encoder output size, *, decoder input size, decoder
#   output shape) -> (encoder net, decoder net)
NETWORKS = {"mlp": mlp_networks, "conv": conv_networks}


def build_parts(cfg: ModelConfig, data_shape: Sequence[int], *, condition_dim: int = 0,
                encoder_shape: Sequence[int] | None = None
                ) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The encoder, decoder and prior modules of a model family's ``from_config`` (for the plain
    VAE: :meth:`VAE.from_config`). A conditional family passes ``condition_dim`` C > 0, the
    width of y, and ``encoder_shape``, the shape of what its encoder network reads (x joined
    with y; x standardized before, by the model); the decoder network then reads ``[z_1, y]``,
    L_1 + C numbers (every layer and y with ``cfg.skip_decoder``)."""
    data_shape = tuple(data_shape)
    sizes = cfg.latent_sizes
    posterior_cls = POSTERIORS[cfg.posterior]
    flow_options = dict(flow_steps=cfg.flow_steps, flow_hidden=cfg.flow_hidden)
    likelihood_cls = LIKELIHOODS[cfg.likelihood]
    discrete_levels = needs_levels(cfg.likelihood)
    if discrete_levels and cfg.levels is None:
        raise ConfigError(f"likelihood '{cfg.likelihood}' needs the number of levels "
                          "(model.levels); resolve the config from its data set first")
    decoder_shape = None
    if discrete_levels:  # P numbers per data dimension: P blocks of the data's channels
        per_dim = likelihood_cls.params_per_dim(cfg.levels, cfg.likelihood_components)
        decoder_shape = (per_dim * data_shape[0], *data_shape[1:])
    enc_out = posterior_cls.param_dim(sizes[0], **flow_options)
    encoder_shape = data_shape if encoder_shape is None else tuple(encoder_shape)
    # the decoder reads z_1 (or every layer, with skip_decoder) and a conditional model's y
    decoder_in = (sum(sizes) if cfg.skip_decoder else sizes[0]) + condition_dim
    networks = NETWORKS[cfg.arch]
    enc_net, dec_net = networks(cfg, encoder_shape, enc_out, decoder_in=sizes[0],
                                decoder_shape=decoder_shape)
    if decoder_in != sizes[0] or encoder_shape != data_shape:  # (the first call's draws kept,
        # so that a seed initialises the same weights as it always has)
        dec_net = networks(cfg, data_shape, enc_out, decoder_in=decoder_in,
                           decoder_shape=decoder_shape)[1]
    if INITIALIZATIONS[cfg.init] is not None:
        INITIALIZATIONS[cfg.init](enc_net)
        INITIALIZATIONS[cfg.init](dec_net)
    # an encoder network that reads x itself standardizes it (or scales integer levels to
    # [0, 1]); one that reads x joined with y gets x already so (ConditionalVAE.join)
    reads_x = encoder_shape == data_shape
    if cfg.standardize and reads_x:
        enc_net = nn.Sequential(Standardize(data_shape), enc_net)
    if discrete_levels and reads_x:
        enc_net = nn.Sequential(ScaleLevels(cfg.levels), enc_net)
    if len(sizes) > 1:
        if not cfg.skip_decoder:  # p(x | z_1[, y]); with skip_decoder [z_1, ..., z_L[, y]] whole
            dec_net = nn.Sequential(TakeBottomLayer(sizes[0], sum(sizes)), dec_net)
        encoder, prior = hierarchical_latents(cfg, enc_net, encoder_shape)
    else:
        encoder = posterior_cls(enc_net, sizes[0], **flow_options)
        prior = PRIORS[cfg.prior](sizes[0], num_components=cfg.prior_components,
                                  encoder=encoder, data_shape=encoder_shape,
                                  clip_pseudo_inputs=cfg.vamp_clip_pseudo_inputs, **flow_options)
    if discrete_levels:
        decoder = likelihood_cls(dec_net, data_shape, cfg.levels, cfg.likelihood_components)
    elif likelihood_cls is GaussianLikelihood:
        decoder = GaussianLikelihood(dec_net, data_shape, cfg.gaussian_scale,
                                     cfg.gaussian_init_scale, cfg.gaussian_min_scale)
    elif hasattr(likelihood_cls, "from_config"):  # options of its own in the config
        decoder = likelihood_cls.from_config(dec_net, data_shape, cfg)
    else:
        decoder = likelihood_cls(dec_net, data_shape)
    return encoder, decoder, prior


def num_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())


def family_option_errors(train, family: str) -> str | None:
    """The first option of the train config ``train`` that belongs to a model family other than
    ``family`` (its field says which: ``json_schema_extra={"family": name}`` in
    :mod:`vaekit.config_sections`) and is set away from its default, as a one-line message; None
    when there is none, so that no family ignores an option silently."""
    for name, field in type(train).model_fields.items():
        owner = (field.json_schema_extra or {}).get("family")
        if owner not in (None, family) and getattr(train, name) != field.default:
            return (f"{name} (--{name.replace('_', '-')}) applies to the model family '{owner}' "
                    f"only (--family {owner})")
    return None


def model_errors(model) -> str | None:
    """The networks' rule on the model options (collected by config validation)."""
    if model.gated and model.arch != "mlp":
        return f"gated layers (--gated) are dense layers of --arch mlp, not '{model.arch}'"
    return None
