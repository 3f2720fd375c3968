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
# # The KL term
#
# The ELBO has two parts, $\mathbb{E}_q[\log p(x \mid z)] - \mathrm{KL}(q(z \mid x) \,\|\, p(z))$.
# This tutorial looks at the second: how it is computed (a closed form, checked against Monte
# Carlo), and what happens when training weights it differently: $\beta$, KL warm-up and
# free bits, up to posterior collapse.

# %%
import math
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch.distributions import Independent, Normal

import vaekit
from vaekit.config import RunConfig, merge
from vaekit.objectives import kl_per_dim, kl_samples

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notice in notebooks
torch.manual_seed(0)

# %% [markdown]
# ## The closed form
#
# With $q(z \mid x) = \mathcal{N}(\mu, \operatorname{diag}\sigma^2)$ and $p(z) = \mathcal{N}(0, I)$
# both factorise over the $L$ dimensions, so the KL is a sum of one-dimensional terms. In one
# dimension, $\log q(z) = -\tfrac12\log(2\pi\sigma^2) - \tfrac{(z-\mu)^2}{2\sigma^2}$ and
# $\log p(z) = -\tfrac12\log(2\pi) - \tfrac{z^2}{2}$; under $q$,
# $\mathbb{E}[(z-\mu)^2] = \sigma^2$ and $\mathbb{E}[z^2] = \mu^2 + \sigma^2$. Hence
#
# $$
# \mathrm{KL}(q \,\|\, p) = \mathbb{E}_q[\log q(z) - \log p(z)]
#   = \sum_{j=1}^{L} \Big(-\tfrac12\log\sigma_j^2 - \tfrac12 + \tfrac12(\mu_j^2 + \sigma_j^2)\Big)
#   = -\tfrac12 \sum_{j=1}^{L}\big(1 + \log\sigma_j^2 - \mu_j^2 - \sigma_j^2\big).
# $$
#
# vaekit does not hard-code this formula: [`vaekit.objectives.kl_samples`](../reference/objectives.md)
# asks `torch.distributions.kl_divergence` for the closed form of the pair of distributions,
# and [`vaekit.objectives.kl_per_dim`](../reference/objectives.md) returns the $L$ terms of the
# sum separately. Both agree with the formula:

# %%
mu = torch.tensor([0.0, 0.5, -1.0, 2.0, 0.1, -0.3, 1.2, 0.0])
sigma = torch.tensor([1.0, 0.5, 0.2, 0.8, 1.5, 0.05, 0.6, 0.3])
q = Independent(Normal(mu, sigma), 1)                              # q(z|x) for one x
p = Independent(Normal(torch.zeros(8), torch.ones(8)), 1)          # p(z) = N(0, I)

by_hand = -0.5 * (1 + torch.log(sigma**2) - mu**2 - sigma**2).sum()
z_one = q.rsample((1,))
print(f"formula            {by_hand:.6f}")
print(f"kl_samples         {kl_samples(q, p, z_one).item():.6f}  (closed form: the draw is ignored)")
print(f"kl_per_dim summed  {kl_per_dim(q, p).sum():.6f}")

# %% [markdown]
# ## Against Monte Carlo
#
# Without a closed form (a mixture prior, a flow posterior) vaekit falls back to the Monte
# Carlo estimate $\widehat{\mathrm{KL}}_M = \frac1M\sum_{m=1}^M \big[\log q(z_m) - \log p(z_m)\big]$,
# $z_m \sim q$, which is unbiased. Writing $z = \mu + \sigma\epsilon$, $\epsilon \sim \mathcal{N}(0, I)$,
# one term is, up to a constant, $\sum_j \big[\tfrac12(\sigma_j^2 - 1)\epsilon_j^2 + \mu_j\sigma_j\epsilon_j\big]$,
# so with $\operatorname{Var}\epsilon^2 = 2$ and $\mathbb{E}\epsilon^3 = 0$
#
# $$
# \operatorname{Var}\big[\log q(z) - \log p(z)\big] = \sum_j \Big(\tfrac12(\sigma_j^2 - 1)^2 + \mu_j^2\sigma_j^2\Big),
# \qquad \operatorname{SE}\big(\widehat{\mathrm{KL}}_M\big) = \sqrt{\operatorname{Var}/M}.
# $$
#
# The standard error falls as $1/\sqrt{M}$: 100 times more samples for one more digit.

# %%
per_sample_var = (0.5 * (sigma**2 - 1) ** 2 + mu**2 * sigma**2).sum()
Ms = [1, 3, 10, 30, 100, 300, 1000, 3000, 10000]
repeats = 200
estimates = {}
for M in Ms:
    z = q.sample((M, repeats))                                     # [M, repeats, L]
    estimates[M] = (q.log_prob(z) - p.log_prob(z)).mean(0)         # [repeats] estimates

fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
one_run = [float(estimates[M][0]) for M in Ms]
ax = axes[0]
ax.axhline(by_hand, color="k", label="closed form")
ax.errorbar(Ms, one_run, yerr=[math.sqrt(per_sample_var / M) for M in Ms], fmt="o", color="C3",
            capsize=3, label="Monte Carlo ± 1 SE")
ax.set(xscale="log", xlabel="samples M", ylabel="nats", title="KL estimate")
ax.legend()
ax = axes[1]
ax.loglog(Ms, [float(estimates[M].std()) for M in Ms], "o", color="C3",
          label=f"spread over {repeats} repeats")
ax.loglog(Ms, [math.sqrt(per_sample_var / M) for M in Ms], color="k", label="sqrt(Var / M)")
ax.set(xlabel="samples M", ylabel="standard error (nats)", title="error ~ 1 / sqrt(M)")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## What training does with the KL term
#
# vaekit trains with the loss of [`vaekit.objectives.elbo_loss`](../reference/objectives.md),
#
# $$
# \mathcal{L} = -\frac1B\sum_{b=1}^B \mathbb{E}_q\big[\log p(x_b \mid z)\big]
#   + \beta \sum_{j=1}^{L} \max\Big(\lambda,\; \frac1B\sum_{b=1}^B \mathrm{KL}_j(x_b)\Big),
# $$
#
# where $\mathrm{KL}_j(x)$ is the $j$-th term of the sum above. Three options of the `train`
# section (and of `vaekit train`) change it:
#
# - `beta` (`--beta`): the weight $\beta$ of the KL; $\beta = 1$ is the ELBO, $\beta > 1$ the
#   $\beta$-VAE;
# - `kl_warmup_epochs` (`--kl-warmup`): $\beta$ rises linearly from $0$ to its value over that
#   many epochs (the run's `history` records it per epoch);
# - `free_bits` (`--free-bits`): the floor $\lambda$ (nats per dimension, averaged over the
#   batch; $0$, the default, is no floor); a dimension whose KL is below $\lambda$ gets no
#   gradient pushing it towards the prior.
#
# Only the loss changes: the ELBO that vaekit reports is always the true one, $\beta = 1$, no floor.
#
# Five short trainings on the digits (12 epochs each, $L = 8$) show the effects.

# %%
workdir = Path(tempfile.mkdtemp(prefix="vaekit-kl-"))
settings = {
    "beta 1": {},
    "beta 1, warm-up 6": {"kl_warmup_epochs": 6},
    "beta 3": {"beta": 3.0},
    "beta 8": {"beta": 8.0},
    "beta 8, free bits 0.5": {"beta": 8.0, "free_bits": 0.5},
}
runs, evaluations = {}, {}
for i, (name, options) in enumerate(settings.items()):
    config = merge(RunConfig(), {"train": {"epochs": 12, **options}})
    run_dir = vaekit.train(config, workdir / f"run{i}", progress=False, callbacks=[],
                           log=lambda message: None)
    runs[name] = vaekit.load(run_dir)
    evaluations[name] = runs[name].evaluate(num_samples=0)   # ELBO and latent diagnostics
    e = evaluations[name]
    print(f"{name:22s} test ELBO {e['elbo']:8.2f}   KL {e['kl']:5.2f}   active units {e['active_units']}")

# %% [markdown]
# ### KL warm-up
#
# Early in training the decoder is poor, and the cheapest way to lower the loss is to make
# $q(z \mid x)$ equal to the prior: the KL stays near zero for several epochs before the latent
# code starts being used. With warm-up, $\beta$ starts at $0$, the encoder is free to encode
# from the first step, and the KL grows at once.

# %%
fig, ax = plt.subplots(figsize=(6, 3.6))
for name, color in [("beta 1", "C0"), ("beta 1, warm-up 6", "C1")]:
    history = runs[name].history
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["train_kl"] for h in history], "o-", color=color, label=f"{name}: KL")
ax2 = ax.twinx()
history = runs["beta 1, warm-up 6"].history
ax2.plot(epochs, [h["beta"] for h in history], "--", color="C1", label="beta (warm-up)")
ax2.set(ylabel="beta", ylim=(0, 1.1))
ax.set(xlabel="epoch", ylabel="train KL (nats)", title="KL warm-up")
ax.legend(loc="upper left")
ax2.legend(loc="lower right")
plt.show()

# %% [markdown]
# ### Large $\beta$: posterior collapse, and free bits against it
#
# [`vaekit.evaluation.latent_diagnostics`](../reference/evaluation.md) (part of `run.evaluate`)
# gives the KL of each latent dimension averaged over the test set, and the number of **active
# units**: dimensions $u$ with $\operatorname{Var}_x\,\mathbb{E}_q[z_u \mid x] > 0.01$ (Burda et al., 2016).
# A dimension with zero KL has $q(z_u \mid x) = p(z_u)$ for every $x$: it carries no information.
# When all of them collapse, the decoder ignores $z$ and every reconstruction is the same
# average digit. The free-bits floor keeps every dimension at about $\lambda$ nats even at $\beta = 8$.

# %%
names = ["beta 1", "beta 3", "beta 8", "beta 8, free bits 0.5"]
fig, axes = plt.subplots(1, len(names), figsize=(12, 3), sharey=True)
for ax, name in zip(axes, names):
    kl = sorted(evaluations[name]["kl_per_dim"], reverse=True)
    ax.bar(range(1, len(kl) + 1), kl, color="C0")
    ax.set(title=f"{name}\nactive units {evaluations[name]['active_units']}", xlabel="dimension (sorted)")
axes[0].set_ylabel("KL per dimension (nats)")
fig.tight_layout()
plt.show()

# %%
fig, axes = plt.subplots(3, 1, figsize=(8, 3.4))
x_test, _ = runs["beta 1"].split("test")
originals = x_test[:10]
rows = [("test images", originals.float()),
        ("beta 1", runs["beta 1"].model.reconstruct(originals)),
        ("beta 8", runs["beta 8"].model.reconstruct(originals))]
model = runs["beta 1"].model
for ax, (label, images) in zip(axes, rows):
    strip = torch.cat(list(model.to_unit(images).squeeze(1)), dim=1)   # [8, 80]
    ax.imshow(strip, cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([])
    ax.set_xticks([])
    ax.set_ylabel(label, rotation=0, ha="right", va="center")
fig.suptitle("reconstructions: at beta 8 the code is ignored")
plt.show()

# %% [markdown]
# The $\beta = 8$ model has the worst ELBO of the five: it reaches its loss by giving up the
# code. Free bits keep the code at the same $\beta$, at the price of a KL the loss no longer
# penalises below $\lambda$; warm-up only changes the start of training. For how close the
# ELBO is to $\log p(x)$, see [the previous tutorial](02-elbo.py).
