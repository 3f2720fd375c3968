"""The VAE: an encoder q(z|x), a decoder p(x|z) and a prior p(z), each a module returning a
distribution; plus ``build_model`` which turns a :class:`~vaekit.config.ModelConfig` into one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.distributions import Distribution

from .likelihoods import LIKELIHOODS, GaussianLikelihood
from .nets import INITIALIZATIONS, MLP, ConvDecoderNet, ConvEncoderNet, Standardize
from .posteriors import POSTERIORS
from .priors import PRIORS
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
        return self.encoder.latent_dim

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x): batch ``[B]``, event ``[L]``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z): batch ``z.shape[:-1]``, event ``data_shape``."""
        return self.decoder(z)

    @torch.no_grad()
    def sample(self, num: int, *, use_mean: bool = True, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        """x ~ p(x|z), z ~ p(z): ``[num, *data_shape]``. With ``use_mean`` (default) returns
        E[x|z], the usual picture of a sample; otherwise a draw from p(x|z)."""
        if generator is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
                z = self.prior().sample((num,))
        else:
            z = self.prior().sample((num,))
        p_x = self.decoder(z)
        return p_x.mean if use_mean else p_x.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = posterior mean of q(z|x)]: ``[B, *data_shape]``."""
        return self.decoder(posterior_mean(self.encoder(x))).mean

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
    """E_q[z]: the closed form when the distribution has one, else a Monte Carlo average."""
    try:
        return q_z.mean
    except NotImplementedError:
        return q_z.sample((num_samples,)).mean(0)


def mlp_networks(cfg: ModelConfig, data_shape: tuple[int, ...], enc_out: int):
    """Encoder and decoder MLPs with the hidden sizes ``cfg.hidden`` (mirrored in the decoder);
    for a table (``cfg.columns``) the encoder reads the table's encoding of a row and the
    decoder outputs the parameters of its columns (:func:`vaekit.tables.table_mlp_networks`)."""
    if cfg.columns is not None:
        return table_mlp_networks(cfg, data_shape, enc_out)
    hidden = list(cfg.hidden)
    enc = MLP(data_shape, (enc_out,), hidden, cfg.activation)
    dec = MLP((cfg.latent_dim,), data_shape, hidden[::-1], cfg.activation)
    return enc, dec


def conv_networks(cfg: ModelConfig, data_shape: tuple[int, ...], enc_out: int):
    """Convolutional encoder and decoder for images ``(C, H, W)`` of any size."""
    if len(data_shape) != 3:
        from .errors import ConfigError

        raise ConfigError(
            f"--arch conv needs image data of shape (C, H, W) but the data has shape "
            f"{data_shape}; use --arch mlp for tables and flat vectors"
        )
    enc = ConvEncoderNet(data_shape, enc_out, cfg.conv_channels, cfg.conv_hidden, cfg.activation)
    dec = ConvDecoderNet(cfg.latent_dim, data_shape, cfg.conv_channels, cfg.conv_hidden,
                         cfg.activation)
    return enc, dec


# config model.arch -> (cfg, data_shape, encoder output size) -> (encoder net, decoder net)
NETWORKS = {"mlp": mlp_networks, "conv": conv_networks}


def build_model(cfg: ModelConfig, data_shape: Sequence[int]) -> VAE:
    """Builds the VAE a resolved :class:`ModelConfig` describes, for data of ``data_shape``."""
    data_shape = tuple(data_shape)
    posterior_cls = POSTERIORS[cfg.posterior]
    flow_options = dict(flow_steps=cfg.flow_steps, flow_hidden=cfg.flow_hidden)
    enc_net, dec_net = NETWORKS[cfg.arch](cfg, data_shape,
                                          posterior_cls.param_dim(cfg.latent_dim, **flow_options))
    if INITIALIZATIONS[cfg.init] is not None:
        INITIALIZATIONS[cfg.init](enc_net)
        INITIALIZATIONS[cfg.init](dec_net)
    if cfg.standardize:
        enc_net = nn.Sequential(Standardize(data_shape), enc_net)
    encoder = posterior_cls(enc_net, cfg.latent_dim, **flow_options)
    likelihood_cls = LIKELIHOODS[cfg.likelihood]
    if likelihood_cls is GaussianLikelihood:
        decoder = GaussianLikelihood(dec_net, data_shape, cfg.gaussian_scale,
                                     cfg.gaussian_init_scale, cfg.gaussian_min_scale)
    elif hasattr(likelihood_cls, "from_config"):  # options of its own in the config
        decoder = likelihood_cls.from_config(dec_net, data_shape, cfg)
    else:
        decoder = likelihood_cls(dec_net, data_shape)
    prior = PRIORS[cfg.prior](cfg.latent_dim, num_components=cfg.prior_components,
                              encoder=encoder, data_shape=data_shape, **flow_options)
    return VAE(encoder, decoder, prior, data_shape)


def num_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
