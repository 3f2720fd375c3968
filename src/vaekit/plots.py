"""Figures. matplotlib is imported inside each function (Agg backend), so importing vaekit
never needs a display or pays matplotlib's import time."""

from __future__ import annotations

from pathlib import Path


def plot_variance_curves(curves: dict[str, dict[str, list]], path: str | Path,
                         title: str = "") -> Path:
    """Log-log plot of the variance of an S-sample gradient estimate against S: measured
    (markers) and closed form (lines) per estimator, as :func:`vaekit.gradients.toy_variance_curve`
    returns them. Writes ``path`` (PNG) and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, curve in curves.items():
        (line,) = ax.loglog(curve["num_samples"], curve["exact_variance"], label=f"{name} (exact)")
        ax.loglog(curve["num_samples"], curve["variance"], "o", color=line.get_color(),
                  label=f"{name} (measured)")
    ax.set_xlabel("number of samples S")
    ax.set_ylabel("variance of the gradient estimate")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
