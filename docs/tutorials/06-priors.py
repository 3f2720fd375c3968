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
# # Beyond N(0, I)
#
# The ELBO averaged over the data can be split in a way that shows what the prior is for
# (Hoffman & Johnson 2016). With the *aggregate posterior*
# $q(z) = \frac{1}{N}\sum_{n=1}^N q(z|x_n)$, the average KL term is
#
# $$\frac{1}{N}\sum_{n} \mathrm{KL}\big(q(z|x_n)\,\|\,p(z)\big)
# = \underbrace{I_q(x; z)}_{\text{information in the code}}
# + \underbrace{\mathrm{KL}\big(q(z)\,\|\,p(z)\big)}_{\text{prior mismatch}},$$
#
# where $I_q(x;z)$ is the mutual information between the data index and the code under
# $q$. The first term is the price of a useful code. The second is pure waste: whenever the
# encoder's codes, pooled over the data set, do not look like draws from $p(z)$, the ELBO
# pays for it. It vanishes exactly when $p(z) = q(z)$, so the best prior for a fixed
# encoder is the aggregate posterior itself. A fixed $\mathcal{N}(0, I)$ forces the
# encoder to pack the codes into one round blob; a *learned* prior can follow them instead.
#
# vaekit has four priors in one registry, `vaekit.priors.PRIORS`
# ([priors reference](../reference/priors.md), and the MNIST comparison in
# [the priors page](../priors.md)); each is a module whose `forward()` returns a
# distribution over $z$ with an exact `log_prob`:
#
# | `model.prior` | $p(z)$ |
# | --- | --- |
# | `normal` | $\mathcal{N}(0, I)$ |
# | `mog` | $\sum_{k=1}^K \pi_k\,\mathcal{N}(\mu_k, \operatorname{diag}\sigma_k^2)$, all learned ($K$ = `prior_components`) |
# | `vamp` | $\frac{1}{K}\sum_{k=1}^K q(z\,|\,u_k)$: the encoder at $K$ learned pseudo-inputs $u_k$ (Tomczak & Welling 2018), a parametric stand-in for the aggregate posterior |
# | `flow` | $\mathcal{N}(0, I)$ pushed through `flow_steps` RealNVP couplings $f$: $\log p(z) = \log \mathcal{N}(f^{-1}(z)) + \log\lvert\det \partial f^{-1}/\partial z\rvert$ |
#
# For the last three $\mathrm{KL}(q(z|x)\,\|\,p(z))$ has no closed form, so vaekit uses the
# Monte Carlo estimate $\log q(z|x) - \log p(z)$ at the drawn $z$
# (`vaekit.objectives.kl_samples`, [objectives reference](../reference/objectives.md)).
#
# With a 2-dimensional latent space we can *look* at both sides of the second term. We train
# one small model per prior on the embedded 8×8 digits: the same MLP (64-256-2), 20 epochs
# of batch 256 at learning rate $5\cdot10^{-3}$ (short runs: the digits default is 200
# epochs), seed 0 for all.

# %%
import math
import os
import tempfile
import time
import warnings

import matplotlib.pyplot as plt
import torch

import vaekit
from vaekit.config import RunConfig, merge
from vaekit.data import load_dataset
from vaekit.evaluation import evaluate_elbo, latent_diagnostics, log_likelihood

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
torch.set_num_threads(1)
started = time.perf_counter()

digits = load_dataset("digits")  # loaded once, handed to every run
workdir = tempfile.mkdtemp()
runs = {}
for prior in ["normal", "mog", "vamp", "flow"]:
    config = merge(RunConfig(), {
        "model": {"latent_dim": 2, "prior": prior, "prior_components": 10},
        "train": {"epochs": 20, "batch_size": 256, "lr": 5e-3, "seed": 0},
    })
    begin = time.perf_counter()
    run_dir = vaekit.train(config, os.path.join(workdir, prior), dataset=digits, progress=False,
                           callbacks=[], log=lambda message: None)
    runs[prior] = vaekit.load(run_dir)
    print(f"{prior:<7} test ELBO {runs[prior].results['elbo']:8.2f} nats "
          f"({time.perf_counter() - begin:.1f} s)")

# %% [markdown]
# ## The aggregate posterior against each prior
#
# `run.latent_codes("test", num_samples=S)` returns the posterior means $\mathbb{E}_q[z|x]$
# of the test digits, $S$ draws $z \sim q(z|x)$ of each, and the labels. The draws of all
# test digits together are a sample of the aggregate posterior $q(z)$ of the test set;
# behind them we draw the prior's density $p(z)$ on a grid (`prior().log_prob`).

# %%
grid_1d = torch.linspace(-4, 4, 161)
zz = torch.stack(torch.meshgrid(grid_1d, grid_1d, indexing="xy"), -1)  # [161, 161, 2]
fig, axes = plt.subplots(2, 4, figsize=(16, 8))
for column, (prior, run) in enumerate(runs.items()):
    codes = run.latent_codes("test", num_samples=20)
    with torch.no_grad():
        density = run.model.prior().log_prob(zz.reshape(-1, 2)).exp().reshape(zz.shape[:2])
    samples = codes["samples"].reshape(-1, 2)
    labels_rep = codes["labels"].repeat(20)
    top, bottom = axes[0, column], axes[1, column]
    top.contourf(grid_1d, grid_1d, density, levels=20, cmap="Greys")
    top.scatter(samples[:, 0], samples[:, 1], s=1, c=labels_rep, cmap="tab10", alpha=0.5)
    top.set(title=f"prior '{prior}': p(z) and draws of q(z)", xlim=(-4, 4), ylim=(-4, 4))
    bottom.hist2d(samples[:, 0], samples[:, 1], bins=60, range=[[-4, 4], [-4, 4]],
                  cmap="Blues")
    peak = float(density.max())
    bottom.contour(grid_1d, grid_1d, density, levels=[f * peak for f in (0.05, 0.2, 0.4, 0.6, 0.8)],
                   colors="k", linewidths=0.7)
    bottom.set(title="q(z) histogram, p(z) contours")
fig.tight_layout()
plt.show()

# %% [markdown]
# (Top: test draws coloured by digit over the prior's density in grey. Bottom: the same
# draws as a histogram with the prior's contours, at 5, 20, 40, 60 and 80% of its peak.)
# With $\mathcal{N}(0, I)$ the codes are squeezed into the one round blob the prior allows.
# The learned priors follow the codes instead: the VampPrior, built from the encoder itself,
# has a bump for each pseudo-input and matches the clusters of the posterior; the flow bends
# its Gaussian into the shape of the code distribution; the mixture, after 20 epochs, has
# only reshaped its components into one skewed lump. Note also the scale: with a learned
# prior nothing pins the codes to unit variance (the decoder can absorb any rescaling of
# $z$), and the VampPrior and flow models settle on smaller codes.

# %% [markdown]
# ## What each prior buys
#
# First the decomposition itself, on the 1,437 training digits. vaekit's latent diagnostics
# (`vaekit.evaluation.latent_diagnostics`, [evaluation reference](../reference/evaluation.md))
# estimate $I_q(x; z)$ with $q(z)$ approximated by the mixture of all the evaluated
# posteriors; the average KL term comes from `vaekit.evaluation.evaluate_elbo` (5 draws
# per digit, since the KL is a Monte Carlo estimate for the learned priors). Their
# difference estimates the prior mismatch $\mathrm{KL}(q(z)\,\|\,p(z))$.
#
# Then the likelihood. The ELBO alone would mix the prior's effect with that of the bound's
# gap, so we also estimate $\log p(x)$ by importance sampling
# (`vaekit.evaluation.log_likelihood`; see the tutorial *Estimating p(x)*) with a small
# $K = 300$ on all 180 test digits. Small $K$ means the estimates are slightly low, by a
# similar amount for all four models; the paper protocol is $K = 5000$
# (`vaekit evaluate RUN_DIR --num-samples 5000`).

# %%
K = 300
print(f"{'prior':<8}{'mean KL':>9}{'I(x;z)':>8}{'mismatch':>10}{'test ELBO':>11}"
      f"{'log p(x), K=300':>17}{'± s.e.':>8}{'vs normal':>11}")
baseline = None
for prior, run in runs.items():
    x_train, _ = run.split("train")
    kl = evaluate_elbo(run.model, x_train, num_samples=5)["kl"]
    information = latent_diagnostics(run.model, x_train)["mutual_information"]
    x, _ = run.split("test")
    log_px = log_likelihood(run.model, x, K, seed=0)
    mean, stderr = float(log_px.mean()), float(log_px.std() / math.sqrt(len(log_px)))
    baseline = log_px if baseline is None else baseline
    difference = float((log_px - baseline).mean())  # paired: the same digits in every row
    print(f"{prior:<8}{kl:9.2f}{information:8.2f}{kl - information:10.2f}"
          f"{run.results['elbo']:11.2f}{mean:17.2f}{stderr:8.2f}{difference:+11.2f}")
print(f"(executed in {time.perf_counter() - started:.1f} s)")

# %% [markdown]
# The mismatch column is the part of the KL term a better prior can remove, and the learned
# priors do shrink it (the mutual-information estimate is itself approximate: the mixture
# of 1,437 posteriors stands in for $q(z)$, and the estimate is at most $\log 1437 = 7.3$
# nats). But here it was small to begin with, a fraction of a nat for $\mathcal{N}(0, I)$,
# so there is little a prior can buy on this model, and the last column (paired over the
# same 180 digits, so more precise than the standard errors suggest) shows that in these
# short runs of one seed the learned priors do not beat $\mathcal{N}(0, I)$: they have more
# to fit, and their Monte Carlo KL makes the encoder's gradient noisier, which costs more in
# 20 epochs than the mismatch they remove. Measure the mismatch before paying for a prior.
# On MNIST with a 20-dimensional latent space and 10 epochs, [the priors page](../priors.md)
# measures gains of 1.9 (mixture) to 4.7 nats (flow) over $\mathcal{N}(0, I)$.
#
# Two things to keep in mind. First, a learned prior is part of the model: samples are
# drawn from it (`model.sample(n)` draws $z \sim p(z)$), so a prior that follows the
# aggregate posterior also puts fewer samples in the holes between the codes, where the
# decoder has never been trained. Second, the VampPrior evaluates the encoder's density
# $q(z|u_k)$ at arbitrary $z$, which not every posterior allows (a planar flow does not:
# vaekit refuses `--prior vamp --posterior planar`). On the command line:
# `vaekit train --prior vamp --prior-components 10 --latent-dim 2`.
