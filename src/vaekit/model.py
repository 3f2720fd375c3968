"""The VAE: an encoder q(z|x), a decoder p(x|z) and a prior p(z), each a module returning a
distribution; plus ``build_model`` which turns a :class:`~vaekit.config.ModelConfig` into one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.distributions import Distribution

from .likelihoods import LIKELIHOODS, GaussianLikelihood, needs_levels
from .nets import INITIALIZATIONS, MLP, ConvDecoderNet, ConvEncoderNet, ScaleLevels, Standardize
from .posteriors import POSTERIORS
from .priors import PRIORS, tempered
from .tables import table_mlp_networks

if TYPE_CHECKING:
    from .config import ModelConfig


class VAE(nn.Module):
    """p(x, z) = p(z) p(x|z) with amortised posterior q(z|x) (Kingma & Welling 2014)."""

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
            from .errors import ConfigError

            raise ConfigError(f"layer {layer} does not exist: the model has {len(sizes)} "
                              f"stochastic layer{'s' if len(sizes) > 1 else ''} (1 = next to x)")
        start = sum(sizes[: layer - 1])
        return slice(start, start + sizes[layer - 1])

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
        from .objectives import elbo

        return elbo(self, x)


def posterior_mean(q_z: Distribution, num_samples: int = 64) -> torch.Tensor:
    """E_q[z]: the closed form when the distribution has one, the Rao-Blackwellised layer
    means of a hierarchical posterior, else a Monte Carlo average."""
    if hasattr(q_z, "conditional_means"):
        return q_z.conditional_means(num_samples)
    try:
        return q_z.mean
    except NotImplementedError:
        return q_z.sample((num_samples,)).mean(0)


def mlp_networks(cfg: ModelConfig, data_shape: tuple[int, ...], enc_out: int,
                 decoder_shape: tuple[int, ...] | None = None):
    """Encoder and decoder MLPs with the hidden sizes ``cfg.hidden`` (mirrored in the decoder);
    the decoder outputs ``decoder_shape`` (default: the data's shape). For a table
    (``cfg.columns``) the encoder reads the table's encoding of a row and the decoder outputs
    the parameters of its columns (:func:`vaekit.tables.table_mlp_networks`)."""
    if cfg.columns is not None:
        return table_mlp_networks(cfg, data_shape, enc_out)
    hidden = list(cfg.hidden)
    enc = MLP(data_shape, (enc_out,), hidden, cfg.activation, gated=cfg.gated)
    dec = MLP((cfg.latent_dim,), decoder_shape or data_shape, hidden[::-1], cfg.activation,
              gated=cfg.gated)
    return enc, dec


def conv_networks(cfg: ModelConfig, data_shape: tuple[int, ...], enc_out: int,
                  decoder_shape: tuple[int, ...] | None = None):
    """Convolutional encoder and decoder for images ``(C, H, W)`` of any size; the decoder
    outputs ``decoder_shape`` (default: the data's shape)."""
    if len(data_shape) != 3:
        from .errors import ConfigError

        raise ConfigError(
            f"--arch conv needs image data of shape (C, H, W) but the data has shape "
            f"{data_shape}; use --arch mlp for tables and flat vectors"
        )
    enc = ConvEncoderNet(data_shape, enc_out, cfg.conv_channels, cfg.conv_hidden, cfg.activation)
    dec = ConvDecoderNet(cfg.latent_dim, decoder_shape or data_shape, cfg.conv_channels,
                         cfg.conv_hidden,
                         cfg.activation)
    return enc, dec


# config model.arch -> (cfg, data_shape, encoder output size[, decoder output shape])
#   -> (encoder net, decoder net)
NETWORKS = {"mlp": mlp_networks, "conv": conv_networks}


def build_model(cfg: ModelConfig, data_shape: Sequence[int]) -> VAE:
    """Builds the VAE a resolved :class:`ModelConfig` describes, for data of ``data_shape``:
    one stochastic layer, or several (``latent_dim`` a list, :mod:`vaekit.hierarchy`) whose
    bottom layer has the networks of ``cfg.arch`` towards x; conditioned on a label
    (``cfg.conditional``, ``cfg.semi_supervised``: :mod:`vaekit.conditional`)."""
    if cfg.conditional or cfg.semi_supervised:
        from .conditional import build_conditional_model

        return build_conditional_model(cfg, data_shape)
    return VAE(*build_parts(cfg, data_shape), data_shape)


def build_parts(cfg: ModelConfig, data_shape: Sequence[int], *, condition_dim: int = 0
                ) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The encoder, decoder and prior modules of :func:`build_model`. With ``condition_dim`` C
    > 0 (a conditional model) the encoder network reads ``join(x, y)`` of
    :func:`vaekit.conditional.joined_shape` (x standardized before, by the model) and the
    decoder network ``[z_1, y]``, L_1 + C numbers."""
    data_shape = tuple(data_shape)
    sizes = cfg.latent_sizes
    posterior_cls = POSTERIORS[cfg.posterior]
    flow_options = dict(flow_steps=cfg.flow_steps, flow_hidden=cfg.flow_hidden)
    likelihood_cls = LIKELIHOODS[cfg.likelihood]
    discrete_levels = needs_levels(cfg.likelihood)
    if discrete_levels and cfg.levels is None:
        from .errors import ConfigError

        raise ConfigError(f"likelihood '{cfg.likelihood}' needs the number of levels "
                          "(model.levels); resolve the config from its data set first")
    decoder_shape = None
    if discrete_levels:  # P numbers per data dimension: P blocks of the data's channels
        per_dim = likelihood_cls.params_per_dim(cfg.levels, cfg.likelihood_components)
        decoder_shape = (per_dim * data_shape[0], *data_shape[1:])
    bottom = cfg.model_copy(update={"latent_dim": sizes[0]})
    enc_out = posterior_cls.param_dim(sizes[0], **flow_options)
    encoder_shape = data_shape
    # the decoder reads z_1 (or every layer, with skip_decoder) and a conditional model's y
    decoder_latent = (sum(sizes) if cfg.skip_decoder else sizes[0]) + condition_dim
    if condition_dim:
        from .conditional import joined_shape

        encoder_shape = joined_shape(cfg.arch, data_shape, condition_dim)
    if decoder_latent != sizes[0] or condition_dim:
        enc_net = NETWORKS[cfg.arch](bottom, encoder_shape, enc_out,
                                     decoder_shape=decoder_shape)[0]
        _, dec_net = NETWORKS[cfg.arch](
            bottom.model_copy(update={"latent_dim": decoder_latent}), data_shape, enc_out,
            decoder_shape=decoder_shape)
    else:
        enc_net, dec_net = NETWORKS[cfg.arch](bottom, data_shape, enc_out,
                                              decoder_shape=decoder_shape)
    if INITIALIZATIONS[cfg.init] is not None:
        INITIALIZATIONS[cfg.init](enc_net)
        INITIALIZATIONS[cfg.init](dec_net)
    if cfg.standardize and not condition_dim:
        enc_net = nn.Sequential(Standardize(data_shape), enc_net)
    if discrete_levels and not condition_dim:  # (a conditional model scales x before joining y)
        enc_net = nn.Sequential(ScaleLevels(cfg.levels), enc_net)
    if len(sizes) > 1:
        from .hierarchy import TakeBottomLayer, hierarchical_latents

        if cfg.skip_decoder:
            pass  # the decoder reads [z_1, ..., z_L] (and y) whole
        elif condition_dim:
            from .conditional import BottomLayerAndCondition

            dec_net = nn.Sequential(BottomLayerAndCondition(sizes[0], sum(sizes)), dec_net)
        else:
            dec_net = nn.Sequential(TakeBottomLayer(sizes[0]), dec_net)
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
