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
# # The reparameterization trick
#
# Training a VAE means following the gradient of
# $\mathrm{ELBO}(x) = \mathbb{E}_{q_\phi(z|x)}[\log p_\theta(x|z)] - \mathrm{KL}(q_\phi(z|x)\,\|\,p(z))$.
# The KL is usually a closed form, but the first term is an expectation under a distribution
# that itself depends on the encoder parameters $\phi$, and we can only estimate it from
# samples. So the question is: how do we estimate
#
# $$\nabla_\phi\, \mathbb{E}_{q_\phi(z)}[f(z)]$$
#
# from draws $z \sim q_\phi$? This tutorial derives the two standard answers, checks both
# against closed forms on a problem small enough to solve by hand, and then trains a VAE on
# the embedded 8×8 digits with each of them.
#
# ## Two estimators
#
# **Pathwise (reparameterization).** Write the draw as a deterministic function of the
# parameters and of noise that does not depend on them. For $q = \mathcal{N}(\mu, \sigma^2)$,
#
# $$z = \mu + \sigma\,\varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, 1),$$
#
# so $\mathbb{E}_q[f(z)] = \mathbb{E}_\varepsilon[f(\mu + \sigma\varepsilon)]$ and the
# gradient moves inside the expectation:
#
# $$\nabla_\mu \mathbb{E}_q[f(z)] = \mathbb{E}_\varepsilon\big[f'(\mu + \sigma\varepsilon)\big]
# \approx \frac{1}{S}\sum_{s=1}^S f'(z_s).$$
#
# This is what `q_z.rsample()` does in torch: the sample stays connected to $\mu$ and
# $\sigma$ in the autograd graph. It needs $f$ to be differentiable in $z$.
#
# **Score function (REINFORCE).** Differentiate the density instead of the sample. Since
# $\nabla q = q\,\nabla \log q$,
#
# $$\nabla_\mu \mathbb{E}_q[f(z)] = \int f(z)\, \nabla_\mu q(z)\, dz
# = \mathbb{E}_q\big[f(z)\, \nabla_\mu \log q(z)\big]
# \approx \frac{1}{S}\sum_{s=1}^S f(z_s)\, \nabla_\mu \log q(z_s).$$
#
# It only needs $f(z)$ values (so it works for discrete $z$ or a black-box $f$), but it
# does not use the slope of $f$ at all, and that costs variance. Because
# $\mathbb{E}_q[\nabla \log q] = \nabla \int q = 0$, any constant $b$ can be subtracted from
# $f$ without bias; vaekit's third estimator uses the *leave-one-out* baseline
# $b_s = \frac{1}{S-1}\sum_{j\ne s} f(z_j)$, which is independent of $z_s$ and so keeps
# the estimate unbiased.
#
# ## A problem with every answer in closed form
#
# Take $q = \mathcal{N}(\mu, \sigma^2)$ and $f(z) = z^2$. Then
# $\mathbb{E}_q[z^2] = \mu^2 + \sigma^2$ and the exact gradient is $\nabla_\mu = 2\mu$.
# With $z = \mu + \sigma\varepsilon$ and the Gaussian moments $\mathbb{E}\varepsilon^2 = 1$,
# $\mathbb{E}\varepsilon^4 = 3$, $\mathbb{E}\varepsilon^6 = 15$ (odd moments vanish), the
# per-sample estimates are:
#
# - pathwise: $g = 2z = 2\mu + 2\sigma\varepsilon$, so $\mathbb{E}g = 2\mu$ and
#   $$\operatorname{Var} g = 4\sigma^2;$$
# - score function: $\nabla_\mu \log q(z) = (z-\mu)/\sigma^2 = \varepsilon/\sigma$, so
#   $g = (\mu+\sigma\varepsilon)^2\varepsilon/\sigma$, $\mathbb{E}g = 2\mu\sigma/\sigma = 2\mu$,
#   $\mathbb{E}g^2 = (\mu^4 + 18\mu^2\sigma^2 + 15\sigma^4)/\sigma^2$ and
#   $$\operatorname{Var} g = \frac{\mu^4}{\sigma^2} + 14\mu^2 + 15\sigma^2;$$
# - leave-one-out baseline among $S$ draws: with $m = \mu^2 + \sigma^2$,
#   $f_s - m = 2\mu\sigma\varepsilon_s + \sigma^2(\varepsilon_s^2 - 1)$ and
#   $\operatorname{Var} f = 4\mu^2\sigma^2 + 2\sigma^4$, which give
#   $$\operatorname{Var} g_s = 8\mu^2 + 10\sigma^2 + \frac{4\mu^2 + 2\sigma^2}{S-1},
#   \qquad \operatorname{Cov}(g_s, g_t) = \frac{4\mu^2}{(S-1)^2}\ (s \ne t).$$
#
# The $S$-sample average has variance $\operatorname{Var} g / S$ (for the baseline,
# $(\operatorname{Var} g_s + (S-1)\operatorname{Cov})/S$). Note the $\mu^4/\sigma^2$ term:
# the score function gets *worse* as $q$ gets sharper, while the pathwise estimate gets
# better. A VAE's posteriors become sharp as it learns.
#
# (For $\sigma = 1$ these are the formulas of `vaekit.gradients.ToyProblem`, see the
# [gradients reference](../reference/gradients.md).)

# %%
import math
import os
import tempfile
import time

import matplotlib.pyplot as plt
import torch
from torch.distributions import Normal

import vaekit
from vaekit.config import RunConfig, merge
from vaekit.data import load_dataset
from vaekit.gradients import (ESTIMATORS, ToyProblem, reparameterization_gradients,
                              score_function_gradients, vae_encoder_gradients)

torch.set_num_threads(1)
torch.manual_seed(0)
started = time.perf_counter()

MU, SIGMA = 1.5, 0.5


def f(z):
    return z**2


def exact_variance(name, mu, sigma, num_samples=2):
    """Per-sample variance of each estimator of d/dmu E[z^2], z ~ N(mu, sigma^2)."""
    if name == "reparameterization":
        return 4 * sigma**2
    if name == "score_function":
        return mu**4 / sigma**2 + 14 * mu**2 + 15 * sigma**2
    return 8 * mu**2 + 10 * sigma**2 + (4 * mu**2 + 2 * sigma**2) / (num_samples - 1)


def exact_variance_of_mean(name, mu, sigma, num_samples):
    variance = exact_variance(name, mu, sigma, num_samples)
    if name == "score_function_baseline":
        variance += (num_samples - 1) * 4 * mu**2 / (num_samples - 1) ** 2
    return variance / num_samples


# the sigma = 1 case is the one vaekit.gradients.ToyProblem has written down
assert all(math.isclose(exact_variance(n, 1.0, 1.0, 8), ToyProblem(1.0).exact_variance(n, 8))
           for n in ESTIMATORS)

# %% [markdown]
# vaekit's estimators take a function that builds $q$ from a parameter tensor, the
# parameter, $f$, and the number of draws $S$; they return one estimate per draw,
# `[S, *theta.shape]`. Giving them $R$ independent copies of $\mu$ at once runs $R$
# independent experiments in one call, which is how we measure the variance of the
# $S$-sample average below.

# %%
def make_q(mu):
    return Normal(mu, SIGMA * torch.ones_like(mu))


mu = torch.tensor(MU, dtype=torch.float64)
per_sample = {name: estimator(make_q, mu, f, 200_000) for name, estimator in ESTIMATORS.items()}
print(f"q = N({MU}, {SIGMA}^2), f(z) = z^2, exact gradient 2 mu = {2 * MU}")
print(f"{'estimator':<26}{'mean':>8}{'± stderr':>10}{'variance':>11}{'exact':>9}")
for name, g in per_sample.items():
    print(f"{name:<26}{g.mean():8.3f}{g.std() / math.sqrt(len(g)):10.3f}"
          f"{g.var():11.2f}{exact_variance(name, MU, SIGMA, len(g)):9.2f}")

# %% [markdown]
# All three agree with $2\mu = 3$ within two standard errors, and their variances with
# the closed forms; the score function's is over fifty times the pathwise one here. Now
# the $S$-sample average, repeated $R = 2000$ times for each $S$: its mean stays on the
# exact gradient for every $S$ (all three are unbiased) and its variance falls like $1/S$,
# on the closed-form lines.

# %%
repeats = 2000
sizes = [2, 4, 8, 16, 32, 64, 128, 256]
mu_r = torch.full((repeats,), MU, dtype=torch.float64)
curves = {}
for name, estimator in ESTIMATORS.items():
    averages = [estimator(make_q, mu_r, f, size).mean(0) for size in sizes]  # each [R]
    curves[name] = torch.stack(averages)  # [len(sizes), R]

labels = {"reparameterization": "pathwise", "score_function": "score function",
          "score_function_baseline": "score function + leave-one-out baseline"}
fig, (ax_mean, ax_var) = plt.subplots(1, 2, figsize=(11, 4))
for name, values in curves.items():
    means, spread = values.mean(1), values.std(1) / math.sqrt(repeats)
    ax_mean.errorbar(sizes, means, yerr=2 * spread, marker="o", capsize=3, label=labels[name])
    line = ax_var.loglog(sizes, [exact_variance_of_mean(name, MU, SIGMA, s) for s in sizes])[0]
    ax_var.loglog(sizes, values.var(1), "o", color=line.get_color(), label=labels[name])
ax_mean.axhline(2 * MU, color="k", lw=1, ls="--", label=r"exact $2\mu$")
ax_mean.set(xscale="log", xlabel="samples S", ylabel="mean of the S-sample estimate",
            title=f"unbiased: mean over {repeats} repeats (± 2 s.e.)")
ax_var.set(xlabel="samples S", ylabel="variance of the S-sample estimate",
           title="variance: measured (points), closed form (lines)")
ax_mean.legend(fontsize=8)
ax_var.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Sharper posteriors, noisier score functions
#
# The closed forms say more than one number: as $\sigma \to 0$ the pathwise variance
# $4\sigma^2$ vanishes while the score function's grows like $\mu^4/\sigma^2$. The points are
# measured with 20,000 draws each. The baseline removes exactly the term that explodes:
# subtracting (an estimate of) the mean $m$ from $f$ leaves
# $(2\mu\sigma\varepsilon + \sigma^2(\varepsilon^2 - 1))\,\varepsilon/\sigma$, which stays bounded as
# $\sigma \to 0$, though it never gets below $8\mu^2$.

# %%
sigmas = torch.logspace(-1.5, 0.5, 25).tolist()
fig, ax = plt.subplots(figsize=(6, 4))
for name in ESTIMATORS:
    line = ax.loglog(sigmas, [exact_variance(name, MU, s, 20_000) for s in sigmas],
                     label=labels[name])[0]
    measured = [float(ESTIMATORS[name](lambda m: Normal(m, s * torch.ones_like(m)), mu, f,
                                       20_000).var()) for s in sigmas[::4]]
    ax.loglog(sigmas[::4], measured, "o", color=line.get_color())
ax.set(xlabel=r"$\sigma$ of $q = \mathcal{N}(1.5, \sigma^2)$", ylabel="per-sample variance",
       title=r"estimators of $\nabla_\mu\,\mathbb{E}_q[z^2]$")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## In a VAE
#
# In a VAE, $f(z) = \log p_\theta(x|z)$ and $q_\phi(z|x)$ is the encoder's Gaussian. vaekit
# computes the ELBO in one place, `vaekit.objectives.elbo_samples`, and the choice of
# estimator only changes how the encoder gradient of the reconstruction term is formed
# (`vaekit.objectives.reparameterized_terms` or `vaekit.objectives.score_function_terms`,
# see the [objectives reference](../reference/objectives.md)). For the score function it
# uses the *surrogate* trick: with $z_k$ drawn without gradient,
#
# $$s_k = (f(z_k) - b_k)\,\big(\log q_\phi(z_k|x) - \operatorname{stop\_grad}\log q_\phi(z_k|x)\big)$$
#
# is zero in value and has gradient $(f(z_k) - b_k)\nabla_\phi \log q_\phi(z_k|x)$
# (`vaekit.objectives.score_function_surrogate`). So the loss, and the ELBO reported during
# training, have the same value whatever the estimator; only the gradient differs. The
# closed-form KL is differentiated exactly in all of them, and the decoder always gets its
# ordinary gradient.
#
# The option is `train.gradient_estimator` in the config, `--gradient-estimator` on the
# command line: `reparameterization` (the default), `score`, or `score-baseline`, which
# needs at least two samples per example for its leave-one-out mean
# (`train.num_samples`, `--num-samples 2`). We train the same model from the same seed
# with each, 20 epochs on the 1,437 training digits (a short run: the digits default is
# 200 epochs). The data set is loaded once and handed to every run.

# %%
workdir = tempfile.mkdtemp()
digits = load_dataset("digits")  # the embedded 8x8 digits: 1,437 train / 180 val / 180 test
settings = {"reparameterization": {"gradient_estimator": "reparameterization"},
            "score": {"gradient_estimator": "score"},
            "score-baseline": {"gradient_estimator": "score-baseline", "num_samples": 2}}
runs = {}
for name, train in settings.items():
    config = merge(RunConfig(), {"train": {"epochs": 20, "lr": 3e-3, "seed": 0, **train}})
    run_dir = vaekit.train(config, os.path.join(workdir, name), dataset=digits, progress=False,
                           callbacks=[], log=lambda message: None)
    runs[name] = vaekit.load(run_dir)
    print(f"{name:<20} test ELBO {runs[name].results['elbo']:8.2f} nats")

# %%
fig, (ax_elbo, ax_kl) = plt.subplots(1, 2, figsize=(11, 4))
for name, run in runs.items():
    epochs = [record["epoch"] for record in run.history]
    ax_elbo.plot(epochs, [record["val_elbo"] for record in run.history], label=name)
    ax_kl.plot(epochs, [record["val_kl"] for record in run.history], label=name)
ax_elbo.set(xlabel="epoch", ylabel="validation ELBO (nats)", title="learning curves, digits")
ax_kl.set(xlabel="epoch", ylabel="validation KL (nats)", title="how much the code is used")
ax_elbo.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# With the pathwise gradient the encoder learns to use the latent code (the KL term grows)
# and the ELBO keeps improving. With the plain score function the encoder's gradient is
# mostly noise, so the encoder learns slowly and the model leans on the decoder alone; the
# baseline recovers much of the gap at the price of decoding twice as many samples.
#
# How noisy are the encoder gradients of the trained model? `vae_encoder_gradients`
# draws one $z$ per example per sample and returns, for every encoder parameter, the mean
# and variance of the per-sample estimates of $\nabla_\phi$ of the batch's mean ELBO (here
# 64 test digits, 64 samples; the names are those of `vaekit.gradients.ESTIMATORS`).

# %%
model = runs["reparameterization"].model
x, _ = runs["reparameterization"].split("test")
print(f"{'estimator':<26}{'variance (mean)':>16}{'SNR (median)':>14}")
stats = {}
for name in ESTIMATORS:
    torch.manual_seed(1)
    stats[name] = vae_encoder_gradients(model, x[:64], name, num_samples=64).summary()
    print(f"{name:<26}{stats[name]['variance']:16.4g}{stats[name]['snr_median']:14.3f}")
pathwise = stats["reparameterization"]["variance"]
print(f"variance relative to pathwise: score function {stats['score_function']['variance'] / pathwise:.0f}x, "
      f"with the baseline {stats['score_function_baseline']['variance'] / pathwise:.0f}x")
print(f"(executed in {time.perf_counter() - started:.1f} s)")

# %% [markdown]
# The plain score function is thousands of times noisier than the pathwise gradient, far
# more than on the toy problem. Two reasons: $f = \log p(x|z)$ is around $-90$ nats, far
# from zero, and the estimator multiplies that whole value by the noisy score (the baseline
# subtracts most of it, which is why it helps so much); and the score has a noisy component
# for every latent dimension, all multiplied by the same $f$.
#
# **Summary.** Both estimators are unbiased. The pathwise one uses the derivative of $f$,
# has a variance that shrinks with the posterior's width, and is the default; the score
# function needs only values of $f$ (so it also works for discrete latents), but its variance
# grows as the posterior sharpens. A baseline reduces that variance without bias. The
# command-line versions: `vaekit train --gradient-estimator score` and `vaekit gradients RUN_DIR`
# (which measures these variances for a saved run).
