"""A linear-Gaussian VAE whose marginal likelihood and posterior are known in closed form:

p(z) = N(0, I),  p(x|z) = N(W z + b, s^2 I)
=> p(x) = N(b, W W^T + s^2 I),  p(z|x) = N(S W^T (x - b) / s^2, S),  S = (I + W^T W / s^2)^-1.

Used as an independent oracle by the objective and evaluation tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

from vaekit.model import VAE
from vaekit.priors import StandardNormalPrior


class LinearGaussianDecoder(nn.Module):
    def __init__(self, W: torch.Tensor, b: torch.Tensor, s: float) -> None:
        super().__init__()
        self.W, self.b, self.s = nn.Parameter(W), nn.Parameter(b), s

    def forward(self, z):
        loc = z @ self.W.T + self.b
        return Independent(Normal(loc, torch.full_like(loc, self.s)), 1)

    @staticmethod
    def check_support(x):
        return None


class ExactPosterior(nn.Module):
    """q(z|x) = p(z|x), as a full-covariance Gaussian."""

    def __init__(self, W, b, s):
        super().__init__()
        self.W, self.b, self.s = W, b, s
        L = W.shape[1]
        self.S = torch.linalg.inv(torch.eye(L, dtype=W.dtype) + W.T @ W / s**2)
        self.latent_dim = L

    def forward(self, x):
        loc = (x - self.b) @ self.W @ self.S.T / self.s**2
        return MultivariateNormal(loc, covariance_matrix=self.S.expand(len(x), -1, -1))


class RoughPosterior(nn.Module):
    """A diagonal Gaussian that is deliberately off: shifted mean, inflated scale."""

    def __init__(self, exact: ExactPosterior, shift: float = 0.3, inflate: float = 1.5):
        super().__init__()
        self.exact, self.shift, self.inflate = exact, shift, inflate
        self.latent_dim = exact.latent_dim

    def forward(self, x):
        p = self.exact(x)
        scale = p.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt() * self.inflate
        return Independent(Normal(p.loc + self.shift, scale), 1)


def make_problem(data_dim=5, latent_dim=2, s=0.5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(data_dim, latent_dim, generator=g, dtype=dtype)
    b = torch.randn(data_dim, generator=g, dtype=dtype)
    decoder = LinearGaussianDecoder(W, b, s)
    exact = ExactPosterior(W, b, s)
    marginal = MultivariateNormal(b, W @ W.T + s**2 * torch.eye(data_dim, dtype=dtype))
    x = marginal.sample((16,))
    return W, b, s, decoder, exact, marginal, x


def vae(encoder, decoder, latent_dim, data_dim, dtype=torch.float64):
    return VAE(encoder, decoder, StandardNormalPrior(latent_dim).to(dtype), (data_dim,))
