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
# # Первый VAE за пять минут
#
# Вариационный автокодировщик (VAE) состоит из трёх частей, и каждая из них — распределение вероятностей:
#
# - **априорное распределение** $p(z)$ на небольшом латентном векторе $z \in \mathbb{R}^L$, здесь $\mathcal{N}(0, I)$;
# - **декодер** $p_\theta(x \mid z)$ — нейросеть, которая по $z$ строит распределение над изображениями $x$;
# - **энкодер** $q_\phi(z \mid x) = \mathcal{N}\big(\mu_\phi(x), \operatorname{diag}\sigma^2_\phi(x)\big)$,
#   который оценивает, какие $z$ могли породить данное $x$.
#
# Энкодер и декодер обучаются вместе, максимизируя **нижнюю вариационную границу** (evidence lower bound, ELBO)
#
# $$
# \mathrm{ELBO}(x) = \mathbb{E}_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)\big]
#   - \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big) \;\le\; \log p_\theta(x).
# $$
#
# Её вычисляет [`vaekit.objectives.elbo`](../reference/objectives.md); откуда она берётся,
# разобрано в следующем уроке.
#
# Учить модель будем на рукописных цифрах 8×8, которые поставляются вместе с vaekit
# (1797 изображений, 17 уровней серого, ничего не нужно скачивать): сначала из командной
# строки, затем через Python API. Всё ниже выполняется за несколько секунд на процессоре
# ноутбука. Модели маленькие и обучаются недолго, поэтому цифры получатся размытыми, но узнаваемыми.

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
# ## 1. Командная строка
#
# Одна команда обучает модель и записывает *каталог запуска* (run directory). Значения по
# умолчанию подобраны под цифры (MLP со скрытым слоем из 256 нейронов, $L = 8$,
# дискретизованное логистическое правдоподобие на 17 уровнях серого); мы лишь сокращаем
# обучение до 10 эпох и отключаем HTML-отчёт:
#
# ```bash
# vaekit train --epochs 10 --out RUN_DIR --no-report --no-progress
# ```
#
# Следующая ячейка запускает именно эту команду (как `python -m vaekit` — это та же программа).

# %%
cli_run = workdir / "cli-run"
args = ["train", "--epochs", "10", "--out", str(cli_run), "--no-report", "--no-progress"]
print("$ vaekit", shlex.join(args))
result = subprocess.run([sys.executable, "-m", "vaekit", *args],
                        capture_output=True, text=True, check=True)
print("\n".join(result.stdout.splitlines()[-5:]))  # the last epochs and the test ELBO

# %% [markdown]
# В каталоге запуска лежат конфигурация со всеми подставленными значениями по умолчанию
# (`config.json`), веса (`model.safetensors`), метрики — по строке на эпоху (`metrics.jsonl`),
# ELBO на тестовой выборке (`results.json`) и несколько картинок.

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
# Остальные команды тоже работают с каталогом запуска, например
# `vaekit sample RUN_DIR --num 64 --out s.png` или `vaekit evaluate RUN_DIR`.
#
# ## 2. То же самое на Python
#
# [`vaekit.train`](../reference/training.md) принимает `RunConfig` (те же параметры, что и в
# командной строке, сгруппированные в разделы `data`, `model` и `train`) и возвращает каталог
# запуска. С `callbacks=[]` картинки не сохраняются — свои мы нарисуем ниже.

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
# В `run.history` по одной записи на эпоху. ELBO измеряется в натах на изображение (64 пикселя);
# чем выше, тем лучше. KL-член растёт по мере того, как энкодер учится помещать информацию в $z$.

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
# ### Энкодер и декодер — это распределения
#
# `run.split("test")` возвращает тестовые изображения ровно в том виде, в каком их видело
# обучение: целые уровни серого $0, \dots, 16$. `model.encode(x)` возвращает $q(z \mid x)$,
# а `model.decode(z)` — $p(x \mid z)$; оба — объекты `torch.distributions`.

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
# [`vaekit.elbo`](../reference/objectives.md) даёт ELBO для каждого изображения, а
# [`vaekit.log_likelihood`](../reference/evaluation.md) — оценку самого $\log p(x)$ методом
# выборки по значимости (importance sampling) с $K$ сэмплами, здесь 100; с ростом $K$ она
# приближается к $\log p(x)$ снизу. ELBO лежит ещё ниже: точный зазор $\log p(x) - \mathrm{ELBO}(x)$
# равен KL-дивергенции между $q(z \mid x)$ и истинным апостериорным распределением $p(z \mid x)$.
# Ей посвящён следующий урок.

# %%
with torch.no_grad():
    elbo = vaekit.elbo(model, x)
log_px = vaekit.log_likelihood(model, x, num_samples=100)
print(f"test ELBO     {elbo.mean():8.2f} nats / image")
print(f"test log p(x) {log_px.mean():8.2f} nats / image (K = 100)")

# %% [markdown]
# ### Сэмплы и реконструкции
#
# Чтобы получить **сэмпл**, берём $z \sim p(z)$ и показываем среднее $p(x \mid z)$;
# **реконструкция** — это тестовое изображение, закодированное и декодированное из
# апостериорного среднего $\mu_\phi(x)$. Декодер выдаёт уровни серого; `model.to_unit`
# переводит их в $[0, 1]$ для отображения.

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
# С обучением по умолчанию в 200 эпох (`vaekit train` без `--epochs`, около минуты) сэмплы
# становятся заметно чётче. Дальше: [откуда берётся ELBO](02-elbo.py) и
# [что делает KL-член](03-kl-term.py).
