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
# # Your first VAE in five minutes
#
# A variational autoencoder has three parts, each a probability distribution:
#
# - a **prior** $p(z)$ over a small latent vector $z \in \mathbb{R}^L$, here $\mathcal{N}(0, I)$;
# - a **decoder** $p_\theta(x \mid z)$, a neural network that turns $z$ into a distribution over images $x$;
# - an **encoder** $q_\phi(z \mid x) = \mathcal{N}\big(\mu_\phi(x), \operatorname{diag}\sigma^2_\phi(x)\big)$,
#   which guesses which $z$ could have produced a given $x$.
#
# Encoder and decoder are trained together by maximising the **evidence lower bound**
#
# $$
# \mathrm{ELBO}(x) = \mathbb{E}_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)\big]
#   - \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big) \;\le\; \log p_\theta(x),
# $$
#
# computed by [`vaekit.objectives.elbo`](../reference/objectives.md) (the next tutorial derives it).
#
# We train on the 8×8 handwritten digits that ship with vaekit (1,797 images, 17 grey levels,
# no download), first with the command line, then with the Python API. Everything below runs
# in a few seconds on a laptop CPU; the models are small and briefly trained, so expect
# blurry but recognisable digits.

# %%
import json
import shlex
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import vaekit

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notice in notebooks
torch.manual_seed(0)
workdir = Path(tempfile.mkdtemp(prefix="vaekit-tutorial-"))

# %% [markdown]
# ## 1. The command line
#
# One command trains a model and writes a *run directory*. The defaults fit the digits
# (an MLP with 256 hidden units, $L = 8$, a discretized-logistic likelihood over the 17 grey
# levels); we only shorten the training to 10 epochs and skip the HTML report:
#
# ```bash
# vaekit train --epochs 10 --out RUN_DIR --no-report --no-progress
# ```
#
# The cell runs exactly this command (as `python -m vaekit`, which is the same program).

# %%
cli_run = workdir / "cli-run"
args = ["train", "--epochs", "10", "--out", str(cli_run), "--no-report", "--no-progress"]
print("$ vaekit", shlex.join(args))
result = subprocess.run([sys.executable, "-m", "vaekit", *args],
                        capture_output=True, text=True, check=True)
print("\n".join(result.stdout.splitlines()[-5:]))  # the last epochs and the test ELBO

# %% [markdown]
# The run directory holds the configuration with every default filled in (`config.json`),
# the weights (`model.safetensors`), one line of metrics per epoch (`metrics.jsonl`), the
# test-set ELBO (`results.json`) and a few pictures.

# %%
print(sorted(p.name for p in cli_run.iterdir()))
print(json.loads((cli_run / "results.json").read_text()))

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
for ax, name in zip(axes, ["samples.png", "reconstructions.png"]):
    ax.imshow(plt.imread(cli_run / name), cmap="gray")
    ax.set_title(f"{name} (after 10 epochs)")
    ax.axis("off")
plt.show()

# %% [markdown]
# Other commands work on the run directory, for example `vaekit sample RUN_DIR --num 64 --out s.png`
# or `vaekit evaluate RUN_DIR`.
#
# ## 2. The same in Python
#
# [`vaekit.train`](../reference/training.md) takes a `RunConfig` (the same options as the
# command line, grouped into `data`, `model` and `train` sections) and returns the run
# directory. `callbacks=[]` skips the pictures; we draw our own below.

# %%
from vaekit.config import RunConfig, merge

config = merge(RunConfig(), {"train": {"epochs": 25}})
run_dir = vaekit.train(config, workdir / "python-run", progress=False, callbacks=[],
                       log=lambda message: None)
run = vaekit.load(run_dir)   # a vaekit.run.Run: config, model, history, results
model = run.model            # the VAE, an nn.Module in eval mode
print(f"L = {model.latent_dim}, likelihood {run.config.model.likelihood}, "
      f"test ELBO {run.results['elbo']:.2f} nats")

# %% [markdown]
# `run.history` has one record per epoch. The ELBO is in nats per image (64 pixels); higher
# is better. The KL term grows while the encoder learns to put information into $z$.

# %%
epochs = [h["epoch"] for h in run.history]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
axes[0].plot(epochs, [h["train_elbo"] for h in run.history], label="train")
axes[0].plot(epochs, [h["val_elbo"] for h in run.history], label="validation")
axes[0].set(xlabel="epoch", ylabel="ELBO (nats / image)", title="ELBO")
axes[0].legend()
axes[1].plot(epochs, [h["val_kl"] for h in run.history], color="C2")
axes[1].set(xlabel="epoch", ylabel="nats", title="KL(q(z|x) || p(z)), validation")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Encoder and decoder are distributions
#
# `run.split("test")` gives the test images exactly as training saw them: integer grey
# levels $0, \dots, 16$. `model.encode(x)` returns $q(z \mid x)$ and `model.decode(z)`
# returns $p(x \mid z)$, both `torch.distributions` objects.

# %%
x, labels = run.split("test")
with torch.no_grad():
    q_z = model.encode(x[:4])
    z = q_z.rsample()                # z = mu + sigma * eps (reparameterization)
    p_x = model.decode(z)
print(q_z)
print(p_x)
print("log p(x|z) of the four images:", p_x.log_prob(x[:4]))

# %% [markdown]
# [`vaekit.elbo`](../reference/objectives.md) gives the per-image ELBO, and
# [`vaekit.log_likelihood`](../reference/evaluation.md) an importance-sampled estimate of
# $\log p(x)$ itself (with $K$ samples, here 100; it approaches $\log p(x)$ from below as $K$
# grows). The ELBO is lower still: the exact gap $\log p(x) - \mathrm{ELBO}(x)$ is the KL
# divergence from $q(z \mid x)$ to the true posterior $p(z \mid x)$, the subject of the next tutorial.

# %%
with torch.no_grad():
    elbo = vaekit.elbo(model, x)
log_px = vaekit.log_likelihood(model, x, num_samples=100)
print(f"test ELBO     {elbo.mean():8.2f} nats / image")
print(f"test log p(x) {log_px.mean():8.2f} nats / image (K = 100)")

# %% [markdown]
# ### Samples and reconstructions
#
# A **sample** draws $z \sim p(z)$ and shows the mean of $p(x \mid z)$; a **reconstruction**
# encodes a test image and decodes the posterior mean $\mu_\phi(x)$. The decoder's values are
# grey levels; `model.to_unit` scales them to $[0, 1]$ for display.

# %%
def show_grid(images, rows, title):
    images = model.to_unit(images).squeeze(1)  # [N, 8, 8] in [0, 1]
    cols = len(images) // rows
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4))
    for ax, image in zip(axes.flat, images):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.axis("off")
    fig.suptitle(title)
    plt.show()


show_grid(model.sample(40), rows=4, title="samples: z ~ p(z), mean of p(x|z)")

# %%
originals = x[:12]
show_grid(torch.cat([originals.float(), model.reconstruct(originals)]), rows=2,
          title="test images (top) and their reconstructions (bottom)")

# %% [markdown]
# With the default 200 epochs (`vaekit train` without `--epochs`, about a minute) the
# samples become much sharper. Next: [where the ELBO comes from](02-elbo.py), and
# [what the KL term does](03-kl-term.py).
