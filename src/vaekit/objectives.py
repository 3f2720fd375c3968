"""Objectives as pure functions of a model and a batch. Each returns per-example values
(higher is better, shape ``[B]``); the training loop negates and averages in one place.

Shapes: samples first, then batch, then event: z is ``[K, B, L]``, log-weights ``[K, B]``."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence


class ElboTerms(NamedTuple):
    """Per-example terms of ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)), each ``[B]``."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor  # E_q[log p(x|z)], Monte Carlo over the drawn z
    kl: torch.Tensor  # KL(q(z|x) || p(z)), closed form when torch has one


def kl_term(q_z: Distribution, p_z: Distribution, z: torch.Tensor) -> torch.Tensor:
    """KL(q || p): closed form when torch registers one, else the single-sample Monte Carlo
    estimate ``log q(z) - log p(z)`` averaged over the leading sample axis of ``z [K, B, L]``.
    Returns ``[B]``."""
    try:
        return kl_divergence(q_z, p_z)
    except NotImplementedError:
        return (q_z.log_prob(z) - p_z.log_prob(z)).mean(0)


def kl_per_dim(q_z: Distribution, p_z: Distribution) -> torch.Tensor | None:
    """KL per latent dimension ``[B, L]`` when both are factorised Gaussians (diagonal
    posterior against a diagonal prior), else None; sums to :func:`kl_term`."""
    if (
        isinstance(q_z, Independent) and isinstance(p_z, Independent)
        and isinstance(q_z.base_dist, Normal) and isinstance(p_z.base_dist, Normal)
    ):
        return kl_divergence(q_z.base_dist, p_z.base_dist)
    return None


def elbo_terms(model, x: torch.Tensor, num_samples: int = 1) -> ElboTerms:
    """ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)), in nats, summed over data dims.

    The expectation uses ``num_samples`` reparameterized draws ``z = q_z.rsample()``
    (Kingma & Welling 2014). ``x``: ``[B, *data_shape]``; returns :class:`ElboTerms` of ``[B]``."""
    q_z = model.encoder(x)
    z = q_z.rsample((num_samples,))  # [K, B, L]
    log_px_z = model.decoder(z).log_prob(x).mean(0)  # [B]
    kl = kl_term(q_z, model.prior(), z)  # [B]
    return ElboTerms(log_px_z - kl, log_px_z, kl)


def elbo(model, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
    """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) per example, ``[B]``."""
    return elbo_terms(model, x, num_samples).elbo


def log_importance_weights(model, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x): ``[K, B]``.

    Shared by the IWAE bound and the importance-sampled log-likelihood (Burda et al. 2016)."""
    q_z = model.encoder(x)
    z = q_z.rsample((num_samples,))  # [K, B, L]
    return model.decoder(z).log_prob(x) + model.prior().log_prob(z) - q_z.log_prob(z)


def iwae_bound(model, x: torch.Tensor, num_samples: int) -> torch.Tensor:
    """IWAE_K(x) = log (1/K) sum_k w_k, computed with logsumexp; K = 1 is the ELBO
    (with a Monte Carlo KL). Returns ``[B]`` (Burda et al. 2016)."""
    log_w = log_importance_weights(model, x, num_samples)
    return torch.logsumexp(log_w, 0) - math.log(num_samples)


def training_loss(
    model, x: torch.Tensor, *, beta: float = 1.0, free_bits: float = 0.0, num_samples: int = 1
) -> tuple[torch.Tensor, ElboTerms]:
    """loss = -mean_B( E_q[log p(x|z)] - beta * KL ), with optional free bits (Kingma et al.
    2016): the KL of each latent dimension, averaged over the batch, counts as at least
    ``free_bits`` nats. Returns the scalar loss and the true (unweighted) per-example ELBO terms
    for reporting; with beta = 1 and free_bits = 0 the loss is exactly -mean ELBO."""
    q_z = model.encoder(x)
    p_z = model.prior()
    z = q_z.rsample((num_samples,))  # [K, B, L]
    log_px_z = model.decoder(z).log_prob(x).mean(0)  # [B]
    kl = kl_term(q_z, p_z, z)  # [B]
    terms = ElboTerms(log_px_z - kl, log_px_z, kl)
    if free_bits > 0:
        per_dim = kl_per_dim(q_z, p_z)
        if per_dim is not None:
            kl_penalty = per_dim.mean(0).clamp(min=free_bits).sum()
        else:  # no per-dimension split: apply the floor to the total, scaled by L
            kl_penalty = kl.mean().clamp(min=free_bits * z.shape[-1])
    else:
        kl_penalty = kl.mean()
    loss = -log_px_z.mean() + beta * kl_penalty
    return loss, terms
