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
# # Tu primer VAE en cinco minutos
#
# Un autoencoder variacional (VAE) tiene tres piezas, y cada una es una distribución de probabilidad:
#
# - una **distribución a priori** $p(z)$ sobre un vector latente pequeño $z \in \mathbb{R}^L$, aquí $\mathcal{N}(0, I)$;
# - un **decodificador** $p_\theta(x \mid z)$, una red neuronal que convierte $z$ en una distribución sobre imágenes $x$;
# - un **codificador** $q_\phi(z \mid x) = \mathcal{N}\big(\mu_\phi(x), \operatorname{diag}\sigma^2_\phi(x)\big)$,
#   que estima qué valores de $z$ pueden haber generado una $x$ dada.
#
# Codificador y decodificador se entrenan juntos maximizando la **cota inferior de la evidencia** (ELBO)
#
# $$
# \mathrm{ELBO}(x) = \mathbb{E}_{q_\phi(z \mid x)}\big[\log p_\theta(x \mid z)\big]
#   - \mathrm{KL}\big(q_\phi(z \mid x) \,\|\, p(z)\big) \;\le\; \log p_\theta(x),
# $$
#
# que calcula [`vaekit.objectives.elbo`](../reference/objectives.md) (el siguiente tutorial la deduce).
#
# Entrenaremos con los dígitos manuscritos de 8×8 que vienen con vaekit (1797 imágenes,
# 17 niveles de gris, sin descargas): primero desde la línea de comandos y luego con la API de
# Python. Todo lo que sigue se ejecuta en pocos segundos en la CPU de un portátil; los modelos
# son pequeños y se entrenan poco, así que los dígitos saldrán borrosos, aunque reconocibles.

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
# ## 1. La línea de comandos
#
# Un solo comando entrena un modelo y escribe un *directorio de la ejecución* (run directory).
# Los valores por defecto están pensados para los dígitos (un MLP con 256 unidades ocultas,
# $L = 8$ y una verosimilitud logística discretizada sobre los 17 niveles de gris); solo
# acortamos el entrenamiento a 10 épocas y nos saltamos el informe HTML:
#
# ```bash
# vaekit train --epochs 10 --out RUN_DIR --no-report --no-progress
# ```
#
# La celda siguiente ejecuta exactamente ese comando (como `python -m vaekit`, que es el mismo programa).

# %%
cli_run = workdir / "cli-run"
args = ["train", "--epochs", "10", "--out", str(cli_run), "--no-report", "--no-progress"]
print("$ vaekit", shlex.join(args))
result = subprocess.run([sys.executable, "-m", "vaekit", *args],
                        capture_output=True, text=True, check=True)
print("\n".join(result.stdout.splitlines()[-5:]))  # the last epochs and the test ELBO

# %% [markdown]
# El directorio de la ejecución contiene la configuración con todos los valores por defecto ya
# resueltos (`config.json`), los pesos (`model.safetensors`), una línea de métricas por época
# (`metrics.jsonl`), la ELBO en el conjunto de prueba (`results.json`) y algunas imágenes.

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
# Los demás comandos trabajan sobre ese directorio; por ejemplo,
# `vaekit sample RUN_DIR --num 64 --out s.png` o `vaekit evaluate RUN_DIR`.
#
# ## 2. Lo mismo en Python
#
# [`vaekit.train`](../reference/training.md) recibe un `RunConfig` (las mismas opciones que la
# línea de comandos, agrupadas en las secciones `data`, `model` y `train`) y devuelve el
# directorio de la ejecución. Con `callbacks=[]` no se guardan imágenes: dibujaremos las nuestras más abajo.

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
# `run.history` guarda un registro por época. La ELBO se mide en nats por imagen (64 píxeles);
# cuanto más alta, mejor. El término KL crece a medida que el codificador aprende a guardar
# información en $z$.

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
# ### Codificador y decodificador son distribuciones
#
# `run.split("test")` devuelve las imágenes de prueba tal como las vio el entrenamiento:
# niveles de gris enteros $0, \dots, 16$. `model.encode(x)` devuelve $q(z \mid x)$ y
# `model.decode(z)` devuelve $p(x \mid z)$; ambos son objetos de `torch.distributions`.

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
# [`vaekit.elbo`](../reference/objectives.md) da la ELBO de cada imagen, y
# [`vaekit.log_likelihood`](../reference/evaluation.md), una estimación de $\log p(x)$ por
# muestreo de importancia con $K$ muestras (aquí 100; al crecer $K$ se acerca a $\log p(x)$
# desde abajo). La ELBO queda más abajo todavía: la diferencia exacta $\log p(x) - \mathrm{ELBO}(x)$
# es la divergencia KL de $q(z \mid x)$ a la verdadera distribución a posteriori $p(z \mid x)$,
# el tema del siguiente tutorial.

# %%
with torch.no_grad():
    elbo = vaekit.elbo(model, x)
log_px = vaekit.log_likelihood(model, x, num_samples=100)
print(f"test ELBO     {elbo.mean():8.2f} nats / image")
print(f"test log p(x) {log_px.mean():8.2f} nats / image (K = 100)")

# %% [markdown]
# ### Muestras y reconstrucciones
#
# Una **muestra** toma $z \sim p(z)$ y muestra la media de $p(x \mid z)$; una **reconstrucción**
# codifica una imagen de prueba y decodifica la media a posteriori $\mu_\phi(x)$. El
# decodificador trabaja en niveles de gris; `model.to_unit` los lleva a $[0, 1]$ para dibujarlos.

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
# Con las 200 épocas por defecto (`vaekit train` sin `--epochs`, alrededor de un minuto), las
# muestras salen mucho más nítidas. Después: [de dónde sale la ELBO](02-elbo.py) y
# [qué hace el término KL](03-kl-term.py).
