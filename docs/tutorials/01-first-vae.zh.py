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
# # 五分钟上手第一个 VAE
#
# 变分自编码器（VAE）由三部分组成，每一部分都是一个概率分布：
#
# - **先验** $p(z)$：定义在低维潜变量 $z \in \mathbb{R}^L$ 上，这里取 $\mathcal{N}(0, I)$；
# - **解码器** $p_\theta(x \mid z)$：一个神经网络，把 $z$ 变成图像 $x$ 上的分布；
# - **编码器** $q_\phi(z \mid x) = \mathcal{N}\big(\mu_\phi(x), \operatorname{diag}\sigma^2_\phi(x)\big)$：
#   推断哪些 $z$ 可能生成了给定的 $x$。
#
# 编码器和解码器通过最大化**证据下界**（ELBO）联合训练：
#
# $$
# \mathrm{ELBO}(x) = \mathbb{E}_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)\big]
#   - \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big) \;\le\; \log p_\theta(x),
# $$
#
# 由 [`vaekit.objectives.elbo`](../reference/objectives.md) 计算（下一篇教程会推导它）。
#
# 训练数据是 vaekit 自带的 8×8 手写数字（1797 张图像，17 个灰度级，无需下载）。我们先用命令行训练，
# 再用 Python API 做同样的事。下面的所有代码在笔记本电脑的 CPU 上几秒即可跑完；
# 模型很小、训练时间很短，所以生成的数字会比较模糊，但能认出来。

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
# ## 1. 命令行
#
# 一条命令即可训练模型，并写出一个*运行目录*（run directory）。默认配置已针对这个数字数据集选好
# （隐藏层 256 个单元的 MLP，$L = 8$，定义在 17 个灰度级上的离散化 logistic 似然）；
# 我们只把训练缩短到 10 轮（epoch），并跳过 HTML 报告：
#
# ```bash
# vaekit train --epochs 10 --out RUN_DIR --no-report --no-progress
# ```
#
# 下面的单元格运行的正是这条命令（以 `python -m vaekit` 的形式，二者是同一个程序）。

# %%
cli_run = workdir / "cli-run"
args = ["train", "--epochs", "10", "--out", str(cli_run), "--no-report", "--no-progress"]
print("$ vaekit", shlex.join(args))
result = subprocess.run([sys.executable, "-m", "vaekit", *args],
                        capture_output=True, text=True, check=True)
print("\n".join(result.stdout.splitlines()[-5:]))  # the last epochs and the test ELBO

# %% [markdown]
# 运行目录中包含：填好所有默认值的配置（`config.json`）、权重（`model.safetensors`）、
# 每轮一行的指标（`metrics.jsonl`）、测试集上的 ELBO（`results.json`），以及几张图片。

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
# 其他命令也都作用于运行目录，例如 `vaekit sample RUN_DIR --num 64 --out s.png`
# 或 `vaekit evaluate RUN_DIR`。
#
# ## 2. 用 Python 做同样的事
#
# [`vaekit.train`](../reference/training.md) 接收一个 `RunConfig`（选项与命令行相同，
# 分为 `data`、`model` 和 `train` 三节），返回运行目录。`callbacks=[]` 表示不生成图片——
# 下面我们自己画。

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
# `run.history` 中每轮一条记录。ELBO 的单位是每张图像（64 个像素）的奈特（nat），越高越好。
# 随着编码器学会把信息放进 $z$，KL 项逐渐增大。

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
# ### 编码器和解码器都是分布
#
# `run.split("test")` 返回的测试图像与训练时看到的完全一致：整数灰度级 $0, \dots, 16$。
# `model.encode(x)` 返回 $q(z \mid x)$，`model.decode(z)` 返回 $p(x \mid z)$，
# 两者都是 `torch.distributions` 对象。

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
# [`vaekit.elbo`](../reference/objectives.md) 给出每张图像的 ELBO，
# [`vaekit.log_likelihood`](../reference/evaluation.md) 则用重要性采样估计 $\log p(x)$ 本身
# （$K$ 个样本，这里取 100；随着 $K$ 增大，它从下方逼近 $\log p(x)$）。ELBO 还要更低：
# 精确的差距 $\log p(x) - \mathrm{ELBO}(x)$ 正是 $q(z \mid x)$ 到真实后验 $p(z \mid x)$ 的
# KL 散度——这是下一篇教程的主题。

# %%
with torch.no_grad():
    elbo = vaekit.elbo(model, x)
log_px = vaekit.log_likelihood(model, x, num_samples=100)
print(f"test ELBO     {elbo.mean():8.2f} nats / image")
print(f"test log p(x) {log_px.mean():8.2f} nats / image (K = 100)")

# %% [markdown]
# ### 采样与重构
#
# **采样**：抽取 $z \sim p(z)$，显示 $p(x \mid z)$ 的均值；**重构**：对一张测试图像编码，
# 再解码其后验均值 $\mu_\phi(x)$。解码器输出的是灰度级，`model.to_unit` 把它们缩放到
# $[0, 1]$ 以便显示。

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
# 使用默认的 200 轮训练（不带 `--epochs` 的 `vaekit train`，约一分钟），样本会清晰得多。
# 接下来：[ELBO 从何而来](02-elbo.py)，以及 [KL 项的作用](03-kl-term.py)。
