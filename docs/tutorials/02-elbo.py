# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The ELBO, derived and checked
#
# A VAE defines $p_\theta(x, z) = p(z)\, p_\theta(x \mid z)$ and approximates the posterior
# $p_\theta(z \mid x)$ by an encoder $q_\phi(z \mid x)$. Neither $\log p_\theta(x)$ nor
# $p_\theta(z \mid x)$ can be computed for a neural decoder. This tutorial derives the identity
#
# $$
# \log p_\theta(x) = \mathrm{ELBO}(x) + \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p_\theta(z \mid x)\big)
# $$
#
# and checks it to rounding error on a model where every term *can* be computed: a
# linear-Gaussian decoder. Each step names the vaekit function that computes it.

# %%
import math
import warnings

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

import vaekit
from vaekit.model import VAE
from vaekit.objectives import elbo_samples, elbo_terms, weight_terms
from vaekit.priors import StandardNormalPrior

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notice in notebooks
torch.manual_seed(0)
torch.set_default_dtype(torch.float64)  # closed forms to ~1e-15

# %% [markdown]
# ## The derivation, line by line
#
# **1. Bayes' rule.** For *every* $z$, $p(x) = p(x, z) / p(z \mid x)$, so
#
# $$
# \log p(x) = \log p(x \mid z) + \log p(z) - \log p(z \mid x).
# $$
#
# **2. Bring in $q$.** Add and subtract $\log q(z \mid x)$; the left side does not depend on
# $z$, so we may average over $z \sim q(z \mid x)$:
#
# $$
# \log p(x) = \underbrace{\mathbb{E}_{q}\big[\log p(x \mid z) + \log p(z) - \log q(z \mid x)\big]}_{\mathrm{ELBO}(x)}
#  + \underbrace{\mathbb{E}_{q}\big[\log q(z \mid x) - \log p(z \mid x)\big]}_{\mathrm{KL}(q(z \mid x)\,\|\,p(z \mid x)) \;\ge\; 0}.
# $$
#
# The quantity inside the first expectation is the **log importance weight**
# $\log w = \log p(x \mid z) + \log p(z) - \log q(z \mid x)$; vaekit computes its three terms
# in one place, [`vaekit.objectives.weight_terms`](../reference/objectives.md)
# (and draws $z$ for you in `vaekit.objectives.log_importance_weights`).
#
# **3. The form used in training.** Grouping $\log p(z) - \log q(z \mid x)$ gives
#
# $$
# \mathrm{ELBO}(x) = \underbrace{\mathbb{E}_{q}\big[\log p(x \mid z)\big]}_{\text{reconstruction}}
#   - \underbrace{\mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big)}_{\text{KL to the prior}},
# $$
#
# which is [`vaekit.objectives.elbo_terms`](../reference/objectives.md): the reconstruction
# term is a Monte Carlo average over reparameterized draws $z_k = \mu + \sigma \odot \epsilon_k$,
# and the KL is taken in closed form when `torch.distributions` has one for the pair, else
# estimated as $\log q(z_k \mid x) - \log p(z_k)$ at the same draws
# (`vaekit.objectives.kl_samples`). `vaekit.elbo` returns the `elbo` field alone.
#
# **4. Consequences.** $\mathrm{ELBO}(x) \le \log p(x)$, with equality exactly when
# $q(z \mid x) = p(z \mid x)$. Maximising the ELBO over $\phi$ therefore pulls $q$ towards the
# true posterior; maximising it over $\theta$ raises $\log p_\theta(x)$ (or shrinks the gap).

# %% [markdown]
# ## A model with exact answers
#
# Take $p(z) = \mathcal{N}(0, I_L)$ and a linear decoder $p(x \mid z) = \mathcal{N}(Wz + b, s^2 I_D)$.
# Then everything is Gaussian:
#
# $$
# p(x) = \mathcal{N}\big(b,\; W W^\top + s^2 I\big), \qquad
# p(z \mid x) = \mathcal{N}\big(S W^\top (x - b)/s^2,\; S\big), \quad S = \big(I + W^\top W / s^2\big)^{-1}.
# $$
#
# We write the decoder and two encoders as small modules that return `torch.distributions`
# objects, which is all [`vaekit.model.VAE`](../reference/model.md) asks of them.

# %%
D, L, s = 5, 2, 0.5
W, b = torch.randn(D, L), torch.randn(D)


class LinearDecoder(nn.Module):
    """p(x|z) = N(W z + b, s^2 I), with W and b as the parameters theta."""

    def __init__(self):
        super().__init__()
        self.W, self.b = nn.Parameter(W), nn.Parameter(b)

    def forward(self, z):
        loc = z @ self.W.T + self.b
        return Independent(Normal(loc, torch.full_like(loc, s)), 1)


S = torch.linalg.inv(torch.eye(L) + W.T @ W / s**2)   # posterior covariance


def exact_posterior(x):
    return MultivariateNormal((x - b) @ W @ S / s**2, covariance_matrix=S)


class Encoder(nn.Module):
    """q(z|x) given as a function of x."""

    def __init__(self, q_of_x):
        super().__init__()
        self.q_of_x, self.latent_dim = q_of_x, L

    def forward(self, x):
        return self.q_of_x(x)


def rough_posterior(x):
    """A deliberately wrong diagonal Gaussian: shifted mean, inflated scale."""
    p = exact_posterior(x)
    return Independent(Normal(p.loc + 0.4, 1.6 * S.diagonal().sqrt()), 1)


def vae_with(q_of_x):
    return VAE(Encoder(q_of_x), LinearDecoder(), StandardNormalPrior(L), data_shape=(D,))


marginal = MultivariateNormal(b, W @ W.T + s**2 * torch.eye(D))   # p(x), exact
x = marginal.sample((8,))                                          # 8 data points

# %% [markdown]
# The picture shows, for the first data point, the prior, the exact posterior and our rough
# $q$ in the 2-D latent space.

# %%
def density_on_grid(dist, grid):
    return dist.log_prob(grid).exp()


g = torch.linspace(-3, 3, 200)
grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1)      # [200, 200, 2]
x0 = x[:1]
pictured = {"prior p(z)": (StandardNormalPrior(L)(), "gray"),
            "exact p(z|x)": (exact_posterior(x0), "C0"),
            "rough q(z|x)": (rough_posterior(x0), "C3")}
fig, ax = plt.subplots(figsize=(4.5, 4.5))
for name, (dist, color) in pictured.items():
    density = density_on_grid(dist, grid.unsqueeze(-2)).squeeze(-1)
    ax.contour(g, g, density, levels=4, colors=color)
    ax.plot([], [], color=color, label=name)
ax.set(xlabel="$z_1$", ylabel="$z_2$", title="latent space for one x", aspect="equal")
ax.legend(loc="lower left")
plt.show()

# %% [markdown]
# ## Check: $\log p(x) = \mathrm{ELBO} + \mathrm{KL}(q \,\|\, p(z \mid x))$ for the rough $q$
#
# - $\log p(x)$: the exact marginal, `MultivariateNormal.log_prob`.
# - $\mathrm{ELBO}$: vaekit's estimate with $K = 20\,000$ draws and its Monte Carlo standard
#   error. `vaekit.objectives.elbo_samples` is the core that `elbo_terms` averages: it keeps the
#   $K$ per-draw values, from which the standard error follows. For this model the
#   reconstruction term also has a closed form,
#   $\mathbb{E}_q[\log p(x \mid z)] = -\tfrac{D}{2}\log(2\pi s^2) -
#   \big(\lVert x - W\mu_q - b\rVert^2 + \operatorname{tr}(W \Sigma_q W^\top)\big) / (2 s^2)$,
#   so we compute the exact ELBO as well.
# - $\mathrm{KL}(q \,\|\, p(z \mid x))$: `torch.distributions.kl_divergence` between two Gaussians.

# %%
def exact_elbo(q):
    """Closed-form ELBO of a Gaussian q(z|x) under the linear-Gaussian model."""
    loc, cov = q.mean, q.covariance_matrix if hasattr(q, "covariance_matrix") else \
        torch.diag_embed(q.variance)
    residual = x - loc @ W.T - b
    reconstruction = (-D / 2 * math.log(2 * math.pi * s**2)
                      - ((residual**2).sum(-1) + torch.einsum("ij,bjk,ik->b", W, cov, W)) / (2 * s**2))
    kl_prior = kl_divergence(MultivariateNormal(loc, cov), MultivariateNormal(torch.zeros(L), torch.eye(L)))
    return reconstruction - kl_prior


def as_mvn(q):
    return MultivariateNormal(q.mean, torch.diag_embed(q.variance))


rough = vae_with(rough_posterior)
K = 20_000
with torch.no_grad():
    per_sample = elbo_samples(rough, x, num_samples=K)   # log p(x|z_k) and KL, each [K, B]
terms = per_sample.terms()                                # the K-sample ELBO, as elbo_terms gives it
elbo_stderr = per_sample.reconstruction.std(0) / math.sqrt(K)   # the KL is exact: no noise

log_px = marginal.log_prob(x)
kl_posterior = kl_divergence(as_mvn(rough_posterior(x)), exact_posterior(x))
elbo_closed = exact_elbo(rough_posterior(x))

print(" log p(x)   ELBO (vaekit, K=20000)   ELBO exact   KL(q||p(z|x))   ELBO exact + KL")
for i in range(len(x)):
    print(f"{log_px[i]:9.4f}   {terms.elbo[i]:9.4f} ± {elbo_stderr[i]:.4f}"
          f"   {elbo_closed[i]:10.4f}   {kl_posterior[i]:13.4f}   {elbo_closed[i] + kl_posterior[i]:15.4f}")
print("max |log p(x) - (ELBO + KL)| =", float((log_px - elbo_closed - kl_posterior).abs().max()))
print("max |vaekit ELBO - exact ELBO| / SE =", float(((terms.elbo - elbo_closed) / elbo_stderr).abs().max()))

# %% [markdown]
# The identity holds to floating-point rounding, and vaekit's Monte Carlo ELBO agrees with the
# closed form within a few standard errors. (Both $q$ and $p(z)$ are diagonal Gaussians here,
# so vaekit takes the KL to the prior in closed form and only the reconstruction term is noisy.)
# The gap $\mathrm{KL}(q \,\|\, p(z \mid x))$ is the same for every $x$ only because our rough
# $q$ makes the same error everywhere: the same shift, the same covariance.
#
# ## The gap closes at the exact posterior
#
# Now move $q$ from the rough Gaussian to the exact posterior,
# $\mu_t = (1-t)\,\mu_{\text{rough}} + t\, \mu_{\text{exact}}$,
# $\Sigma_t = (1-t)\,\Sigma_{\text{rough}} + t\, S$ (full covariance, so $t = 1$ is exact).
# The ELBO rises to $\log p(x)$ and the gap is $\mathrm{KL}(q_t \,\|\, p(z \mid x))$ all along.

# %%
def q_between(t):
    def q_of_x(x_):
        rough_q, exact_q = as_mvn(rough_posterior(x_)), exact_posterior(x_)
        return MultivariateNormal((1 - t) * rough_q.mean + t * exact_q.mean,
                                  (1 - t) * rough_q.covariance_matrix + t * S)
    return q_of_x


ts = torch.linspace(0, 1, 21)
curve = torch.stack([exact_elbo(q_between(t)(x))[0] for t in ts])
gap = torch.stack([kl_divergence(q_between(t)(x), exact_posterior(x))[0] for t in ts])
t_dots = [0.0, 0.25, 0.5, 0.75, 1.0]
with torch.no_grad():
    dots = [elbo_terms(vae_with(q_between(t)), x[:1], num_samples=2000).elbo[0] for t in t_dots]

fig, ax = plt.subplots(figsize=(6, 3.8))
ax.axhline(log_px[0], color="k", label="log p(x) (exact)")
ax.plot(ts, curve, color="C0", label="ELBO (closed form)")
ax.fill_between(ts, curve, curve + gap, color="C0", alpha=0.2, label="KL(q_t || p(z|x))")
ax.plot(t_dots, dots, "o", color="C3", label="vaekit elbo_terms, K = 2000")
ax.set(xlabel="t  (0: rough q, 1: exact posterior)", ylabel="nats", title="the gap is the KL")
ax.legend(loc="lower right")
plt.show()

# %% [markdown]
# ## With the exact posterior every sample gives $\log p(x)$
#
# With $q(z \mid x) = p(z \mid x)$, line 1 of the derivation says that
# $\log w = \log p(x \mid z) + \log p(z) - \log q(z \mid x) = \log p(x)$ for *every* $z$: the
# estimator has zero variance. `torch.distributions` has no closed-form KL between a
# full-covariance `MultivariateNormal` and vaekit's diagonal prior, so `elbo_terms` falls back
# to the Monte Carlo KL at the same draw, and a single sample already returns $\log p(x)$.
# The importance-sampled [`vaekit.log_likelihood`](../reference/evaluation.md) (which
# averages $w$ rather than $\log w$) is exact for the same reason.

# %%
exact = vae_with(exact_posterior)
with torch.no_grad():
    q_exact = exact.encoder(x)
    log_w = weight_terms(exact, x, q_exact, q_exact.sample((5,))).log_w   # [5 draws, B]
    one_sample = vaekit.elbo(exact, x, num_samples=1)
print("log p(x)                      ", log_px[:4])
print("log w at 5 draws, first x     ", log_w[:, 0])
print("vaekit.elbo, K = 1            ", one_sample[:4])
print("vaekit.log_likelihood, K = 10 ", vaekit.log_likelihood(exact, x, num_samples=10)[:4])
print("max |ELBO - log p(x)| =", float((one_sample - log_px).abs().max()))
