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
# # Conditional generation and scaling out
#
# ## The conditional VAE
#
# A VAE's samples come from wherever $z \sim p(z)$ lands; to ask for "a 7" we condition the
# whole model on a label $y$ (Sohn, Lee & Yan 2015). Every distribution gets $y$ as an extra
# input: the encoder $q(z|x, y)$, the decoder $p(x|z, y)$ and, optionally, the prior
# $p(z|y)$. The derivation of the ELBO goes through unchanged with everything conditioned
# on $y$:
#
# $$\log p(x|y) \ \ge\ \mathbb{E}_{q(z|x,y)}\big[\log p(x|z,y)\big]
# - \mathrm{KL}\big(q(z|x,y)\,\|\,p(z|y)\big).$$
#
# In vaekit ([conditional reference](../reference/conditional.md), and the design and MNIST
# measurements in [the conditional page](../conditional.md)), $y$ is one-hot and enters the
# networks by concatenation: the encoder reads $[x, y]$, the decoder $[z, y]$.
# `ConditionalVAE.given(y)` returns the model bound to a batch of labels, whose `encoder`,
# `decoder` and `prior` are the conditioned distributions, so the same objectives and the
# same importance-sampled $\log p(x|y)$ as for an unconditional model run on it. The option
# is `model.conditional` (`vaekit train --conditional`); `model.conditional_prior`
# (`--conditional-prior class`) learns one Gaussian $p(z|y)$ per class instead of
# $\mathcal{N}(0, I)$.
#
# Why a *small* $z$ here: if $z$ has room, the encoder can put the class into $z$ as well,
# and then the decoder may ignore $y$. With a 2-dimensional $z$ the class is cheaper to
# read from $y$, and $z$ is left to hold the *style* (slant, stroke width). We train on the
# embedded 8×8 digits for 20 epochs, a short run.

# %%
import os
import tempfile
import time
import warnings

import matplotlib.pyplot as plt
import torch

import vaekit
from vaekit.config import RunConfig, merge
from vaekit.data import load_dataset

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
torch.set_num_threads(1)
started = time.perf_counter()

digits = load_dataset("digits")
workdir = tempfile.mkdtemp()
config = merge(RunConfig(), {"model": {"conditional": True, "latent_dim": 2},
                             "train": {"epochs": 20, "lr": 5e-3, "seed": 0}})
run = vaekit.load(vaekit.train(config, os.path.join(workdir, "cvae"), dataset=digits,
                               progress=False, callbacks=[], log=lambda message: None))
model = run.model
print(type(model).__name__, f"{model.num_classes} classes, test ELBO (a bound on log p(x|y)) "
      f"{run.results['elbo']:.2f} nats")

# %% [markdown]
# ## Samples of every class
#
# `model.sample(n, y=labels)` draws $z \sim p(z|y)$ and returns $\mathbb{E}[x|z, y]$ for each
# label; `model.to_unit` maps the likelihood's grey levels (integers $0..16$ for the
# digits) to $[0, 1]$ for pictures. One row per class, eight draws of $z$ each:

# %%
def show_grid(images, rows, columns, title, row_labels=None, column_labels=None):
    """One picture of rows x columns 8x8 images, separated by a 1-pixel white gap."""
    images = model.to_unit(images).reshape(rows, columns, 8, 8)
    mosaic = torch.zeros(rows * 9 + 1, columns * 9 + 1)
    for r in range(rows):
        for c in range(columns):
            mosaic[1 + 9 * r : 9 * (r + 1), 1 + 9 * c : 9 * (c + 1)] = images[r, c]
    fig, ax = plt.subplots(figsize=(columns * 0.55, rows * 0.55 + 0.6))
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=1)
    ax.set_yticks([9 * r + 5 for r in range(rows)], row_labels or [""] * rows)
    ax.set_xticks([9 * c + 5 for c in range(columns)], column_labels or [""] * columns)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_title(title, pad=20 if column_labels else 6)
    plt.show()


torch.manual_seed(0)
per_class = 8
labels = torch.arange(10).repeat_interleave(per_class)  # 0 0 ... 0 1 1 ... 9
samples = model.sample(len(labels), y=labels)
show_grid(samples, 10, per_class, "samples: row = the label y, z ~ N(0, I)",
          row_labels=[str(c) for c in range(10)])

# %% [markdown]
# The same $z$ means the same style whatever the label. Fixing eight draws of $z$ and
# decoding each with every label shows it (columns: one $z$ each; rows: the label):

# %%
z = torch.randn(per_class, 2)
with torch.no_grad():
    same_z = torch.cat([model.decode(z, torch.full((per_class,), c)).mean for c in range(10)])
show_grid(same_z, 10, per_class, "one z per column, decoded as every class",
          row_labels=[str(c) for c in range(10)])

# %% [markdown]
# ## Style transfer
#
# Encode a real test digit with its own label, $z = \mathbb{E}_q[z|x, y]$, then decode that
# $z$ with another label $y'$: `model.reconstruct(x, y, as_y=y')`. Rows are test digits;
# the first column is the input, the others its style drawn as $0, \dots, 9$.

# %%
x_test, y_test = run.split("test")
x_few, y_few = x_test[:6], y_test[:6]
columns = [x_few] + [model.reconstruct(x_few, y_few, as_y=c) for c in range(10)]
grid = torch.stack(columns, 1).reshape(-1, *x_few.shape[1:])
show_grid(grid, len(x_few), 11, "input | its style decoded as 0 ... 9",
          column_labels=["input"] + [str(c) for c in range(10)])

# %% [markdown]
# Because the bound model is an ordinary model for vaekit's evaluation, `run.evaluate`
# reports the conditional ELBO and the importance-sampled $\log p(x|y)$ with the true
# labels (here with $K = 100$; `save=False` keeps the run directory unchanged):

# %%
result = run.evaluate(num_samples=100, save=False)
print(f"ELBO {result['elbo']:.2f}, log p(x|y) {result['log_likelihood']:.2f} "
      f"± {result['log_likelihood_stderr']:.2f} nats (K = {result['num_samples']}, "
      f"conditioned on the {result['conditioned_on']})")

# %% [markdown]
# ## A glimpse of semi-supervised learning: M2
#
# When only a few examples have labels, the labels can be treated as a latent variable
# for the others (Kingma, Rezende, Mohamed & Welling 2014). M2 is the conditional VAE above
# with a uniform $p(y)$ and a classifier $q(y|x)$. A labelled pair gets the conditional
# bound plus $\log p(y)$,
#
# $$\log p(x, y) \ge \mathcal{L}(x, y) = \mathbb{E}_{q(z|x,y)}[\log p(x|z,y)] + \log p(y)
# - \mathrm{KL}(q(z|x,y)\,\|\,p(z)),$$
#
# and an unlabelled $x$ sums over the classes it might have, exactly:
#
# $$\log p(x) \ge \mathcal{U}(x) = \sum_{y} q(y|x)\,\mathcal{L}(x, y) + \mathcal{H}(q(y|x)).$$
#
# Since $\mathcal{U}$ alone does not force $q(y|x)$ to mean "the digit", the loss adds
# $\alpha$ times the classifier's cross-entropy on the labelled examples. One step decodes
# every unlabelled example once per class, so it costs about ten VAE steps.
# `model.semi_supervised` with `train.labels_per_class` (`vaekit train --semi-supervised
# --labels-per-class 10`) keeps 10 labels per class, 100 of the 1,437 training digits,
# chosen with the seed and listed in the run's `labelled.json`
# ([semisupervised reference](../reference/semisupervised.md)). A short run of 6 epochs:

# %%
m2_config = merge(RunConfig(), {"model": {"semi_supervised": True},
                                "train": {"epochs": 6, "lr": 3e-3, "labels_per_class": 10, "seed": 0}})
m2 = vaekit.load(vaekit.train(m2_config, os.path.join(workdir, "m2"), dataset=digits,
                              progress=False, callbacks=[], log=lambda message: None))
predicted = m2.model.classify(x_test)
error = float((predicted != y_test).float().mean())
print(f"M2 from 100 labels, 6 epochs: test error {100 * error:.1f}% on {len(y_test)} digits")
print("validation error per epoch:",
      " ".join(f"{100 * r['val_classification_error']:.1f}%" for r in m2.history))

# %% [markdown]
# Is that the unlabelled data at work? The honest comparison is a classifier trained on
# the same 100 labelled digits alone; their indices into the training split are in the
# run's `labelled.json`.

# %%
import json

from sklearn.linear_model import LogisticRegression

labelled = json.loads((m2.dir / "labelled.json").read_text())
x_train, y_train = m2.split("train")
features = lambda x: m2.model.to_unit(x).reshape(len(x), -1).numpy()  # grey levels in [0, 1]
index = labelled["indices"]
baseline = LogisticRegression(max_iter=2000).fit(features(x_train[index]), y_train[index].numpy())
baseline_error = float((baseline.predict(features(x_test)) != y_test.numpy()).mean())
print(f"logistic regression on the same {len(index)} labelled digits: test error "
      f"{100 * baseline_error:.1f}%")
print(f"(executed in {time.perf_counter() - started:.1f} s)")

# %% [markdown]
# On 180 test digits one error is 0.56%, so small differences are noise. The question
# to ask of any semi-supervised method is how much the unlabelled data add over the labels
# alone; [the conditional page](../conditional.md) makes the same comparison on MNIST,
# where short M2 runs do *not* beat their own classifier trained on the 100 labels alone:
# M2 needs long training.
#
# ## Scaling out
#
# Nothing above needs more than a laptop, but the same commands run on many GPUs.
# vaekit uses PyTorch's own machinery: `torchrun` starts one process per device,
# `torch.distributed` connects them (NCCL between GPUs, gloo on CPUs) and
# `DistributedDataParallel` averages the gradients. `--batch-size` is the *global* batch:
# with $W$ processes each takes `batch-size / W` examples per step, so one step is the
# gradient of the same mean loss a single process would compute, and the learning rate
# is not rescaled. Only rank 0 writes files; evaluation spreads its batches over the
# processes and gives exactly the single-process numbers.
#
# For example, four GPUs on one machine (not run here):
#
# ```bash
# torchrun --standalone --nproc-per-node 4 -m vaekit train --data mnist --batch-size 512 \
#     --out runs/mnist-4gpu
# vaekit train --nproc 4 --data mnist --batch-size 512 --out runs/mnist-4gpu   # the same
# torchrun --standalone --nproc-per-node 4 -m vaekit evaluate runs/mnist-4gpu --json \
#     --num-samples 5000                                                       # K = 5000, spread out
# ```
#
# - `--device auto|cpu|cuda|cuda:1`: `auto` (the default) takes CUDA when there is one; under
#   torchrun each process takes the GPU of its `LOCAL_RANK`.
# - `--precision bf16|fp16` runs the networks under autocast while the log-densities and
#   the loss stay in float32.
# - `--compile` wraps the training loss in `torch.compile`: on the CPU measured in the
#   performance page about 1.1-1.2 times faster per step once compiled, but compiling takes
#   about 20 s per process, so it pays off only for long runs and GPUs (not yet available
#   with `--conditional` or `--semi-supervised`).
#
# Several machines, restarts after a failure, and where the time of a step goes are
# covered in the README's scaling section and in [the performance page](../performance.md);
# the conditional models' status under DDP is in [the conditional page](../conditional.md).
