# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Estimating p(x)
#
# The ELBO is a lower bound, $\log p(x) = \mathrm{ELBO}(x) + \mathrm{KL}(q(z|x)\,\|\,p(z|x))$,
# and the gap depends on the encoder. To compare models we want $\log p(x)$ itself:
#
# $$p(x) = \int p(x|z)\,p(z)\,dz,$$
#
# an integral over the latent space with no closed form for a neural decoder. This tutorial
# compares three Monte Carlo answers, first on a model where $\log p(x)$ *is* known exactly,
# then on a VAE trained on the embedded 8×8 digits.
#
# **Naive Monte Carlo.** Draw from the prior:
#
# $$\hat p_{\text{prior}}(x) = \frac{1}{K}\sum_{k=1}^K p(x|z_k), \qquad z_k \sim p(z).$$
#
# Unbiased for $p(x)$, but $p(x|z)$ is large only where the posterior is, a tiny part of the
# prior's mass in more than a couple of dimensions, so almost every term is negligible and the
# sum is decided by rare lucky draws.
#
# **Importance sampling with the encoder.** Draw from a proposal that knows where to look,
# $q(z|x)$, and reweight:
#
# $$\hat p_q(x) = \frac{1}{K}\sum_{k=1}^K w_k, \qquad
# w_k = \frac{p(x|z_k)\,p(z_k)}{q(z_k|x)}, \qquad z_k \sim q(z|x).$$
#
# Also unbiased for $p(x)$, with variance $\frac{1}{K}\operatorname{Var}_q[w]$: small when
# $q(z|x)$ is close to the true posterior $p(z|x) = p(x|z)p(z)/p(x)$ (if they are equal,
# every $w_k = p(x)$ and one sample gives the exact answer). The naive estimator is the
# special case $q = p(z)$, where $w_k = p(x|z_k)$.
#
# **The IWAE bound.** We report logarithms, and the log of an unbiased estimate is biased
# down (Jensen): $\mathbb{E}[\log \hat p_q(x)] \le \log \mathbb{E}[\hat p_q(x)] = \log p(x)$.
# That expectation is the importance-weighted bound of Burda et al. (2016),
#
# $$\mathrm{IWAE}_K(x) = \mathbb{E}_{z_{1:K} \sim q}\Big[\log \frac{1}{K}\sum_{k=1}^K w_k\Big],
# \qquad \mathrm{ELBO} = \mathrm{IWAE}_1 \le \mathrm{IWAE}_K \le \mathrm{IWAE}_{K+1} \le \log p(x),$$
#
# which tends to $\log p(x)$ as $K \to \infty$. So "the importance-sampled log-likelihood"
# and "a one-draw estimate of the IWAE bound" are the same number, $\log \hat p_q(x)$,
# read in two ways. By the delta method, for large $K$,
#
# $$\log p(x) - \mathrm{IWAE}_K(x) \approx \frac{\operatorname{Var}_q[w]}{2K\,p(x)^2}.$$
#
# **Effective sample size.** How many of the $K$ draws matter? With normalized weights
# $\tilde w_k = w_k / \sum_j w_j$,
#
# $$\mathrm{ESS} = \frac{(\sum_k w_k)^2}{\sum_k w_k^2} = \frac{1}{\sum_k \tilde w_k^2} \in [1, K]:$$
#
# $K$ when all weights are equal, 1 when one draw carries everything. Since
# $\mathrm{ESS}/K \approx p(x)^2/\mathbb{E}_q[w^2]$, the bias above is about
# $\tfrac12(1/\mathrm{ESS} - 1/K)$ nats when $\operatorname{Var}_q[w]$ is finite: a small ESS
# warns that the estimate is still far below $\log p(x)$ (a large one is no guarantee, as we
# will see).
#
# In vaekit ([evaluation reference](../reference/evaluation.md),
# [objectives reference](../reference/objectives.md)):
#
# | quantity | function |
# | --- | --- |
# | $\log w_k$, shape `[K, B]` | `vaekit.objectives.log_importance_weights(model, x, K)` |
# | $\log \frac1K \sum_k w_k$, differentiable (training with `--objective iwae`) | `vaekit.objectives.iwae_bound(model, x, K)` |
# | the same, batched, chunked and seeded, for evaluation | `vaekit.evaluation.log_likelihood(model, x, K)` |
# | the same with the ESS of every example | `vaekit.evaluation.importance_estimate(model, x, K)` |
# | the naive estimator | `vaekit.evaluation.log_likelihood_prior_sampling(model, x, K)` |

# %%
import math
import os
import tempfile
import time
import warnings

import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

import vaekit
from vaekit.config import RunConfig, merge
from vaekit.evaluation import importance_estimate, log_likelihood, log_likelihood_prior_sampling
from vaekit.model import VAE
from vaekit.objectives import elbo, iwae_bound, log_importance_weights
from vaekit.priors import StandardNormalPrior

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
torch.set_num_threads(1)
torch.manual_seed(0)
started = time.perf_counter()

# %% [markdown]
# ## A model with an exact answer
#
# The linear-Gaussian model (probabilistic PCA):
#
# $$p(z) = \mathcal{N}(0, I_L), \qquad p(x|z) = \mathcal{N}(Wz + b,\ s^2 I_D)
# \quad\Longrightarrow\quad p(x) = \mathcal{N}(b,\ WW^\top + s^2 I_D).$$
#
# Its posterior is Gaussian too: completing the square in $\log p(x|z) + \log p(z)$ gives
# precision $\Lambda = I + W^\top W/s^2$ and mean $m(x) = \Lambda^{-1}W^\top(x - b)/s^2$.
# A VAE in vaekit is any three modules returning `torch.distributions` objects: an encoder
# $x \mapsto q(z|x)$, a decoder $z \mapsto p(x|z)$ and a prior $() \mapsto p(z)$, put
# together by `vaekit.model.VAE` ([model reference](../reference/model.md)). So we can
# write this model by hand, with two encoders: the exact posterior, and a *diagonal*
# Gaussian with the posterior's mean and marginal variances,
# $\mathcal{N}(m(x), \operatorname{diag}(\Sigma_{ii}))$, $\Sigma = \Lambda^{-1}$, which
# ignores the correlations between the latent dimensions as a diagonal VAE encoder does.
# $L = 4$, $D = 16$, $s = 0.4$.

# %%
L, D, s = 4, 16, 0.4
W, b = torch.randn(D, L), 0.1 * torch.randn(D)
precision = torch.eye(L) + W.T @ W / s**2
covariance = torch.linalg.inv(precision)


class LinearGaussianDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.W, self.b = nn.Parameter(W.clone()), nn.Parameter(b.clone())

    def forward(self, z):  # z [..., L] -> p(x|z), event [D]
        return Independent(Normal(z @ self.W.T + self.b, s), 1)


class PosteriorEncoder(nn.Module):
    """q(z|x) = N(m(x), C): C the exact posterior covariance, or a diagonal one."""

    latent_dim = L

    def __init__(self, diagonal: bool):
        super().__init__()
        self.diagonal = diagonal

    def forward(self, x):
        loc = (x - b) @ W / s**2 @ covariance
        if self.diagonal:
            scale = covariance.diagonal().sqrt().expand_as(loc)
            return Independent(Normal(loc, scale), 1)
        return MultivariateNormal(loc, covariance)


exact_model = VAE(PosteriorEncoder(diagonal=False), LinearGaussianDecoder(),
                  StandardNormalPrior(L), (D,))
model = VAE(PosteriorEncoder(diagonal=True), LinearGaussianDecoder(), StandardNormalPrior(L), (D,))
p_x = MultivariateNormal(b, W @ W.T + s**2 * torch.eye(D))
x = p_x.sample((1,))  # one data point
truth = float(p_x.log_prob(x))
print(f"exact log p(x) = {truth:.4f}")
print(f"exact posterior as proposal, K = 1: {float(log_likelihood(exact_model, x, 1)):.4f}")
print(f"diagonal proposal, K = 1 (an ELBO estimate): {float(log_likelihood(model, x, 1)):.4f}")

# %% [markdown]
# With the exact posterior as proposal a single sample is exact: $w = p(x)$ whatever $z$
# is. The diagonal encoder is close but not equal, so its one-sample value is a noisy
# ELBO. Here even the bias has closed forms. Write $p = p(z|x) = \mathcal{N}(m, \Sigma)$
# and $q = \mathcal{N}(m, Q)$ with the same mean. At $K = 1$ the gap is
# $\log p(x) - \mathrm{ELBO} = \mathrm{KL}(q\,\|\,p)$. For large $K$ the delta method above
# needs $\operatorname{Var}_q[w]/p(x)^2 = \chi^2$, where $w/p(x) = p(z|x)/q(z)$ and a
# Gaussian integral gives
#
# $$1 + \chi^2 = \int \frac{p(z|x)^2}{q(z)}\,dz
# = \frac{|Q|^{1/2}}{|\Sigma|\,|2\Sigma^{-1} - Q^{-1}|^{1/2}}
# \quad(\text{when } 2\Sigma^{-1} - Q^{-1} \succ 0),$$
#
# so $\log p(x) - \mathrm{IWAE}_K \approx \chi^2/(2K)$ and $\mathrm{ESS}/K \to 1/(1 + \chi^2)$.

# %%
def chi2_and_kl(Q):
    """chi^2 = Var_q[w] / p(x)^2 and KL(q || p(z|x)) for q = N(m, Q), p(z|x) = N(m, Sigma)."""
    q, p = MultivariateNormal(torch.zeros(L), Q), MultivariateNormal(torch.zeros(L), covariance)
    kl = float(torch.distributions.kl_divergence(q, p))
    M = 2 * precision - torch.linalg.inv(Q)
    if torch.linalg.eigvalsh(M).min() <= 0:
        return math.inf, kl
    return float(torch.exp(0.5 * torch.logdet(Q) - torch.logdet(covariance)
                           - 0.5 * torch.logdet(M)) - 1), kl


chi2, kl_q_p = chi2_and_kl(torch.diag(covariance.diagonal()))
print(f"our diagonal proposal: KL(q || p(z|x)) = {kl_q_p:.4f} nats, chi^2 = {chi2:.3f}")
narrow = chi2_and_kl(torch.diag(1 / precision.diagonal()))
print(f"the ELBO's best diagonal q, variances 1/Lambda_ii: KL = {narrow[1]:.4f}, "
      f"chi^2 = {narrow[0]}")

# %% [markdown]
# The second line is a warning worth remembering. The diagonal Gaussian that maximises the
# ELBO (it minimises $\mathrm{KL}(q\,\|\,p)$, with variances $1/\Lambda_{ii}$) has the
# smaller KL but is *narrower* than the posterior along its correlated directions, and then
# $\int p^2/q$ diverges: the weights have infinite variance. The estimate is still
# consistent, but its error no longer falls like $1/K$. Importance sampling wants proposals
# at least as wide as the target, which is one reason the encoder of a VAE, trained on the
# ELBO, is a good but not ideal proposal. We continue with the wider, moment-matched one.

# %% [markdown]
# Now both estimators for growing $K$, each repeated for 64 independent draws of $z_{1:K}$
# (a batch of 64 copies of $x$: every example of a batch gets its own draws), and, to
# resolve the small bias of importance sampling, 2048 repeats for $K \le 64$.
# `log_likelihood` and `iwae_bound` compute the same thing; we check that once.

# %%
repeats = 64
xs = x.expand(repeats, D)
Ks = [1, 3, 10, 30, 100, 300, 1000, 5000]
estimates = {"importance sampling, q(z|x)": [], "naive, p(z)": []}
ess = {name: [] for name in estimates}
for K in Ks:
    for name, proposal in zip(estimates, ["posterior", "prior"]):
        e = importance_estimate(model, xs, K, proposal=proposal, seed=K)
        estimates[name].append(e.log_likelihood)
        ess[name].append(e.ess)
small_Ks = [1, 2, 4, 8, 16, 32, 64]
many = [log_likelihood(model, x.expand(2048, D), K, seed=K) for K in small_Ks]  # each [2048]
with torch.no_grad():
    iwae_100 = iwae_bound(model, xs, 100)
print(f"IWAE_100 by iwae_bound {float(iwae_100.mean()):.3f} ± {float(iwae_100.std() / 8):.3f}, "
      f"by log_likelihood {float(estimates['importance sampling, q(z|x)'][4].mean()):.3f}")

# %%
fig, (ax_est, ax_gap, ax_ess) = plt.subplots(1, 3, figsize=(14, 4))
for name, values in estimates.items():
    values = torch.stack(values)  # [len(Ks), repeats]
    lo, hi = values.quantile(0.1, 1), values.quantile(0.9, 1)
    line = ax_est.plot(Ks, values.mean(1), marker="o", label=f"{name}: mean")[0]
    ax_est.fill_between(Ks, lo, hi, color=line.get_color(), alpha=0.2)
    ax_ess.loglog(Ks, torch.stack(ess[name]).mean(1), marker="o", label=name)
ax_est.axhline(truth, color="k", ls="--", lw=1, label="exact log p(x)")
ax_est.set(xscale="log", ylim=(truth - 12, truth + 2), xlabel="K",
           ylabel=r"$\log \hat p(x)$ (nats)", title="estimates (10-90% of repeats shaded)")
ax_est.legend(fontsize=8)

gaps = torch.stack([truth - values.mean() for values in many])
errors = torch.stack([2 * values.std() / math.sqrt(len(values)) for values in many])
ax_gap.errorbar(small_Ks, gaps, yerr=errors, fmt="o", capsize=3,
                label=r"$\log p(x) -$ mean estimate (± 2 s.e.)")
fine = torch.logspace(0, math.log10(64), 50)
ax_gap.plot(fine, chi2 / (2 * fine), "k--", label=r"$\chi^2 / 2K$ (large K)")
ax_gap.plot([1], [kl_q_p], "k*", ms=12, label=r"KL$(q\,\|\,p(z|x))$ (K = 1)")
ax_gap.set(xscale="log", yscale="log", xlabel="K", ylabel="nats",
           title="bias of importance sampling")
ax_gap.legend(fontsize=8)
ax_ess.loglog(Ks, Ks, "k:", lw=1, label="ESS = K")
ax_ess.loglog(Ks, [K / (1 + chi2) for K in Ks], "k--", lw=1, label=r"$K / (1 + \chi^2)$")
ax_ess.set(xlabel="K", ylabel="mean ESS", title="effective sample size")
ax_ess.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The naive estimator's mean climbs towards the truth only slowly: its ESS stays near 1
# (each estimate is one lucky draw) and for small $K$ it is off by tens of nats. The
# importance-sampled estimate starts at the ELBO a fraction of a nat below, approaches the
# truth from below as $K$ grows. Its bias starts at the KL, falls roughly like $1/K$ and
# comes down onto the delta-method line $\chi^2/(2K)$, an asymptote for large $K$ (at small $K$
# the bias is below it); its ESS settles at the closed-form fraction $1/(1+\chi^2)$ of $K$.
# Where the mass of the weights sits, at $K = 1000$:

# %%
torch.manual_seed(1)
with torch.no_grad():
    log_w_q = log_importance_weights(model, x, 1000)[:, 0]  # [K]
    z_prior = torch.randn(1000, 1, L)
    log_w_p = model.decoder(z_prior).log_prob(x)[:, 0]  # prior proposal: w = p(x|z)
fig, ax = plt.subplots(figsize=(6, 3.5))
for log_w, name in [(log_w_q, "q(z|x)"), (log_w_p, "p(z)")]:
    normalized = torch.softmax(log_w, 0).sort(descending=True).values
    ax.loglog(range(1, 1001), normalized, label=f"proposal {name}: ESS "
              f"{float(1 / (normalized**2).sum()):.1f}")
ax.set(ylim=(1e-12, 2), xlabel="rank of the draw", ylabel=r"normalized weight $\tilde w_k$",
       title="1000 importance weights, sorted")
ax.legend()
plt.show()

# %% [markdown]
# ## A trained VAE on the digits
#
# On a real VAE there is no exact answer, but the same picture holds. We train the digits
# model (MLP 64-256-8, discretized-logistic likelihood over the 17 grey levels, so
# $\log p(x)$ is a log-*probability* of the data) for a short 30 epochs, then estimate
# $\log p(x)$ of 32 test digits with both proposals as $K$ grows.

# %%
workdir = tempfile.mkdtemp()
config = merge(RunConfig(), {"train": {"epochs": 30, "lr": 3e-3}})
run = vaekit.load(vaekit.train(config, os.path.join(workdir, "digits"), progress=False,
                               callbacks=[], log=lambda message: None))
vae = run.model
x_test, _ = run.split("test")
x_test = x_test[:32]
with torch.no_grad():
    elbo_mean = float(torch.stack([elbo(vae, x_test) for _ in range(20)]).mean())

Ks = [1, 10, 100, 1000, 5000]
rows = []
for K in Ks:
    q = importance_estimate(vae, x_test, K)
    p = log_likelihood_prior_sampling(vae, x_test, K)
    rows.append((K, float(q.log_likelihood.mean()), float(q.ess.mean()), float(p.mean())))
print(f"ELBO (20 draws averaged) {elbo_mean:.2f} nats")
print(f"{'K':>6}{'IS with q(z|x)':>16}{'mean ESS':>10}{'naive, p(z)':>14}")
for K, is_value, is_ess, naive in rows:
    print(f"{K:>6}{is_value:16.2f}{is_ess:10.1f}{naive:14.2f}")

# %%
fig, (ax, ax_zoom) = plt.subplots(1, 2, figsize=(11, 4))
for axis in (ax, ax_zoom):
    axis.plot(Ks, [r[1] for r in rows], "o-", label="importance sampling, q(z|x)")
    axis.axhline(elbo_mean, color="gray", ls=":", label="ELBO")
    axis.set(xscale="log", xlabel="K", ylabel="mean log p(x) estimate (nats)")
ax.plot(Ks, [r[3] for r in rows], "s-", label="naive, p(z)")
ax.set(title="32 test digits, short run")
ax.legend()
for K, value, mean_ess, _ in rows:
    ax_zoom.annotate(f"ESS {mean_ess:.0f}", (K, value), textcoords="offset points",
                     xytext=(0, -14), ha="center", fontsize=8)
ax_zoom.set(title="importance sampling only", ylim=(elbo_mean - 0.5, rows[-1][1] + 0.5))
fig.tight_layout()
plt.show()
print(f"(executed in {time.perf_counter() - started:.1f} s)")

# %% [markdown]
# The importance-sampled estimate rises above the ELBO and flattens out; the naive one is
# still below the ELBO at $K = 5000$, even in 8 dimensions. Note the ESS: only a few
# percent of $K$, and the estimate still gains about a tenth of a nat from $K = 1000$ to
# 5000, more than $\tfrac12(1/\mathrm{ESS}_{1000} - 1/\mathrm{ESS}_{5000})$ would predict.
# An encoder trained on the ELBO tends to be narrower than the true posterior, as the
# ELBO's best diagonal Gaussian was above, so its weights are heavy-tailed and the bias
# falls more slowly than $1/K$.
#
# ## Why K = 5000
#
# Every $\log \hat p_q(x)$ is a lower estimate of $\log p(x)$ on average, and the bias
# shrinks as $K$ grows, slowly when the weights are heavy-tailed. Burda et al. (2016) fixed
# $K = 5000$ for their test log-likelihoods, and later papers kept it so that numbers are
# comparable: at that $K$ the remaining bias on MNIST-sized models is small next to the
# differences between models (see the measurements in [the priors page](../priors.md),
# where the mean ESS at $K = 5000$ is 38 of 5000), while the cost, linear in $K$
# (5000 decoder passes per test image), is still affordable. Two models evaluated at
# different $K$ are not comparable: the one with the larger $K$ is favoured. The command-line
# version is `vaekit evaluate RUN_DIR --num-samples 5000`, which also reports the mean ESS
# (`ess_mean`); the default `--num-samples 100` is meant for quick checks.
