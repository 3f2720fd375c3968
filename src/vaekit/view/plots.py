"""Figures of a run: learning curves, the 2-D map of posterior means, KL per latent dimension,
latent traversals and the latent_dim 2 manifold.

matplotlib is imported inside the functions (``import vaekit`` stays light) and only through its
object-oriented ``Figure`` API, which renders with the Agg canvas without touching pyplot's global
backend or figure registry (safe in servers and tests)."""

from __future__ import annotations

import io
from typing import NamedTuple, Sequence

import numpy as np
import torch

from ..latents import traverse

DPI = 100


def new_figure(width: float, height: float):
    """A matplotlib ``Figure`` of ``width x height`` inches at :data:`DPI` (no pyplot)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def figure_png(fig) -> bytes:
    """PNG bytes of a figure, exactly ``figsize * DPI`` pixels (no tight bounding box)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


# -- learning curves ----------------------------------------------------------------------
CURVES = [("elbo", "ELBO (nats, higher is better)"),
          ("reconstruction", "reconstruction E_q[log p(x|z)]"),
          ("kl", "KL(q(z|x) || p(z))")]


def learning_curves(history: Sequence[dict]):
    """Train and validation ELBO, reconstruction and KL per epoch (one panel each) from the
    records of ``metrics.jsonl``."""
    fig = new_figure(12, 3.4)
    axes = fig.subplots(1, len(CURVES))
    epochs = [h["epoch"] for h in history]
    for ax, (key, title) in zip(axes, CURVES):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [h.get(f"{split}_{key}", np.nan) for h in history]
            ax.plot(epochs, values, style, markersize=3 if len(epochs) > 30 else 5,
                    label="train" if split == "train" else "validation")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


# -- the latent map -----------------------------------------------------------------------
class Projection(NamedTuple):
    """A 2-D view of codes: ``points [N, 2]``, its ``name`` (shown on the plot), and the affine
    map back to latent space, z ~ ``mean + points @ components`` (``mean [L]``,
    ``components [2, L]``)."""

    points: np.ndarray
    name: str
    mean: np.ndarray
    components: np.ndarray


def project_2d(z: np.ndarray) -> Projection:
    """The codes themselves when L = 2 (L = 1 is drawn against zero); else the first two
    principal components of the centred codes (from an SVD: z - mean = U S V^T, points = U S)."""
    z = np.asarray(z, dtype=np.float64)
    n, latent_dim = z.shape
    if latent_dim <= 2:
        points = np.zeros((n, 2))
        points[:, :latent_dim] = z
        eye = np.eye(2)[:, :latent_dim]  # [2, L]
        return Projection(points, "latent coordinates z1, z2" if latent_dim == 2 else "z1",
                          np.zeros(latent_dim), eye)
    mean = z.mean(0)
    _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
    components = vt[:2]  # [2, L]
    points = (z - mean) @ components.T
    explained = (s[:2] ** 2).sum() / max((s**2).sum(), 1e-300)
    return Projection(points, f"PCA of the posterior means ({100 * explained:.0f}% of variance)",
                      mean, components)


def latent_map(projection: Projection, labels: np.ndarray | None = None,
               class_names: Sequence[str] | None = None, max_points: int = 5000):
    """Scatter plot of projected posterior means coloured by label, titled with the projection."""
    fig = new_figure(6, 5.2)
    ax = fig.add_subplot()
    points = projection.points[:max_points]
    if labels is not None:
        labels = np.asarray(labels)[:max_points]
        classes = np.unique(labels)
        cmap = _class_colours(len(classes))
        for i, c in enumerate(classes):
            mask = labels == c
            name = class_names[int(c)] if class_names is not None and 0 <= c < len(class_names) else str(c)
            ax.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.75, color=cmap[i], label=name,
                       linewidths=0)
        if len(classes) <= 20:
            ax.legend(fontsize=7, markerscale=2.5, loc="center left", bbox_to_anchor=(1.0, 0.5),
                      frameon=False, title="label", title_fontsize=8)
    else:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6, linewidths=0)
    is_pca = projection.name.startswith("PCA")
    ax.set_xlabel("PC 1" if is_pca else "z1")
    ax.set_ylabel("PC 2" if is_pca else ("z2" if projection.components.shape[1] == 2 else ""))
    ax.set_title(f"test-set posterior means: {projection.name}", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def _class_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# -- KL per dimension -----------------------------------------------------------------------
def kl_bars(kl_per_dim: Sequence[float]):
    """Bar chart of the mean KL(q(z_j|x) || p(z_j)) over the test set for each dimension j."""
    kl = np.asarray(kl_per_dim, dtype=np.float64)
    fig = new_figure(max(4.5, min(12, 0.35 * len(kl) + 2)), 3.2)
    ax = fig.add_subplot()
    ax.bar(np.arange(1, len(kl) + 1), kl, color="#3b6ea8")
    ax.set_xlabel("latent dimension j")
    ax.set_ylabel("nats")
    ax.set_title(f"mean KL per latent dimension (total {kl.sum():.2f} nats)", fontsize=10)
    ax.set_xticks(np.arange(1, len(kl) + 1) if len(kl) <= 32 else ax.get_xticks())
    ax.tick_params(axis="x", labelsize=8 if len(kl) <= 16 else 6)
    ax.grid(axis="y", alpha=0.3)
    return fig


# -- images of latent walks ---------------------------------------------------------------------
def traversal_order(kl_per_dim: Sequence[float] | None, latent_dim: int) -> list[int]:
    """Latent dimensions by decreasing KL (active dimensions first); index order without KL."""
    if kl_per_dim is None:
        return list(range(latent_dim))
    return sorted(range(latent_dim), key=lambda j: (-float(kl_per_dim[j]), j))


@torch.no_grad()
def traversal_images(model, z: torch.Tensor, dims: Sequence[int], values: torch.Tensor
                     ) -> torch.Tensor:
    """E[x|z] for ``z [L]`` with coordinate ``dims[r]`` set to ``values[c]``: one row per
    dimension, ``[len(dims) * S, *data_shape]``."""
    codes = torch.cat([traverse(z, d, values) for d in dims])  # [D * S, L]
    # codes of the top layer (the only one of most models)
    return model.to_unit(model.decode_codes(codes).mean)


def gaussian_quantiles(num: int, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    """Phi^{-1}(p) for ``num`` probabilities p evenly spaced in [low, high]: points of the
    latent axis equally spaced in prior probability (Kingma & Welling 2014, fig. 4)."""
    p = torch.linspace(low, high, num, dtype=torch.float64)
    return torch.distributions.Normal(0.0, 1.0).icdf(p).float()


@torch.no_grad()
def manifold_images(model, num: int = 15) -> torch.Tensor:
    """E[x|z] over a ``num x num`` grid of the 2-D latent plane at Gaussian quantiles: row r
    has z2 = q[num - 1 - r] (top is high z2), column c has z1 = q[c]. ``[num^2, *data_shape]``."""
    if model.latent_dims[-1] != 2:
        raise ValueError(f"the manifold picture needs latent_dim 2 (of the top layer), not "
                         f"{model.latent_dims[-1]}")
    q = gaussian_quantiles(num)
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")
    codes = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=-1)
    device = next(model.parameters()).device
    return model.to_unit(model.decode_codes(codes.to(device)).mean)


def labelled_grid(images: torch.Tensor, nrow: int, row_labels: Sequence[str] = (),
                  col_labels: Sequence[str] = (), title: str = "", xlabel: str = "",
                  cell_inches: float = 0.45):
    """An image grid (see :func:`vaekit.images.make_grid`) drawn in a figure with row and column
    labels, e.g. traversals labelled by dimension and value."""
    from .images import make_grid

    padding = 2
    grid = make_grid(images, nrow=nrow, padding=padding)
    h, w = images.shape[-2:]
    rows = -(-len(images) // nrow)
    fig = new_figure(cell_inches * nrow * w / max(h, w) + 1.6, cell_inches * rows * h / max(h, w) + 1.0)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255,
              interpolation="nearest")
    centre = lambda i, size: padding + i * (size + padding) + (size - 1) / 2  # noqa: E731
    ax.set_yticks([centre(i, h) for i in range(len(row_labels))], list(row_labels), fontsize=8)
    ax.set_xticks([centre(i, w) for i in range(len(col_labels))], list(col_labels), fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9)
    return fig


def plot_variance_curves(curves: dict[str, dict[str, list]], path, title: str = ""):
    """Log-log plot of the variance of an S-sample gradient estimate against S: measured
    (markers) and closed form (lines) per estimator, as :func:`vaekit.gradients.toy_variance_curve`
    returns them. Writes ``path`` (PNG) and returns it."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = new_figure(5.5, 4)
    ax = fig.subplots()
    for name, curve in curves.items():
        (line,) = ax.loglog(curve["num_samples"], curve["exact_variance"], label=f"{name} (exact)")
        ax.loglog(curve["num_samples"], curve["variance"], "o", color=line.get_color(),
                  label=f"{name} (measured)")
    ax.set_xlabel("number of samples S")
    ax.set_ylabel("variance of the gradient estimate")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
    return path
