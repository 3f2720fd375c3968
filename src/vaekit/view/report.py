"""``report.html``: one self-contained page per run (every image embedded as a base64 PNG data
URI, no remote assets) that shows the run at a glance: config and versions, metrics, learning
curves, prior samples, reconstructions, interpolations, latent traversals ordered by KL, the
2-D map of test-set posterior means, KL per latent dimension and, for latent_dim 2, the manifold.

The page is filled from a small ``string.Template`` (``static/report.html``); every piece of
text that comes from the run is passed through :func:`html.escape`."""

from __future__ import annotations

import base64
import html
import math
import platform
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import Sequence

import torch

from ..version import __version__
from ..evaluation import LatentSummary, latent_summary
from ..storage import atomic_write_bytes
from ..tables import TableLikelihood, column_reconstruction
from .pictures import INTERPOLATION_STEPS, Pictures

REPORT = "report.html"
MAX_TRAVERSAL_DIMS = 16  # rows of the traversal figure (dimensions with the most KL)
TRAVERSAL_VALUES = torch.linspace(-3, 3, 13)  # +-3 prior standard deviations
MAX_MAP_POINTS = 5000

# Metrics shown first and how to name them; any other number in results.json/evaluation.json
# is listed after them under its own key, so new diagnostics appear without a change here.
METRIC_LABELS = {
    "elbo": ("ELBO", "nats per example, E_q[log p(x|z)] - KL; a lower bound on log p(x)"),
    "reconstruction": ("reconstruction", "E_q[log p(x|z)], nats per example"),
    "kl": ("KL", "KL(q(z|x) || p(z)), nats per example"),
    "log_likelihood": ("log-likelihood", "log p(x) by importance sampling, nats per example"),
    "bits_per_dim": ("bits/dim", "-log p(x) / (D ln 2), bits per dimension of the discrete "
                                 "data (only under a discrete likelihood)"),
    "active_units": ("active units", "latent dimensions whose posterior mean varies with x"),
    "num_examples": ("examples", "test examples evaluated"),
}


# -- small HTML helpers ------------------------------------------------------------------------
def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, figure: bool = False) -> str:
    cls = ' class="figure"' if figure else ""
    return f'<img{cls} src="{png_data_uri(png)}" alt="{html.escape(alt)}">'


def _fig(fig, alt: str) -> str:
    from .plots import figure_png

    return _img(figure_png(fig), alt, figure=True)


def _format(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.2f}" \
            if abs(value) >= 10 else f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format(v) for v in value)
    return str(value)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str] = (), numeric: int = -1) -> str:
    """Rows of already-escaped cells; column ``numeric`` is right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i == numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>{'<tr>' + head + '</tr>' if head else ''}{body}</table>"


@dataclass
class Section:
    id: str
    title: str
    body: str
    caption: str = ""
    wide: bool = False  # spans the page's width instead of half of it

    def html(self) -> str:
        caption = f'<p class="caption">{html.escape(self.caption)}</p>' if self.caption else ""
        wide = ' class="wide"' if self.wide else ""
        return (f'<section id="{self.id}"{wide}><h2>{html.escape(self.title)}</h2>{caption}'
                f"{self.body}</section>")


# -- the sections ------------------------------------------------------------------------------
def _config_section(config: dict, versions: dict, history: list[dict]) -> Section:
    blocks = []
    for name in ("data", "model", "train"):
        values = config.get(name, {})
        rows = [(html.escape(k), html.escape(_format(v))) for k, v in values.items()]
        blocks.append(f"<div><h3>{name}</h3>{_table(rows)}</div>")
    run_rows = []
    if history:
        last = history[-1]
        run_rows += [("epochs", _format(last["epoch"])), ("optimizer steps", _format(last.get("step"))),
                     ("training time", f"{sum(h.get('seconds', 0) for h in history):.1f} s"),
                     ("examples per second",
                      _format(float(sum(h.get("images_per_second", 0) for h in history) / len(history)))),
                     ("skipped non-finite steps", _format(last.get("skipped_steps", 0)))]
    run_rows += [(f"{k} version", _format(v)) for k, v in versions.items()]
    run_rows.append(("python (report)", platform.python_version()))
    rows = [(html.escape(k), html.escape(v)) for k, v in run_rows]
    blocks.append(f"<div><h3>run</h3>{_table(rows)}</div>")
    return Section("config", "Configuration and versions", f'<div class="row">{"".join(blocks)}</div>',
                   wide=True)


def _metrics_section(results: dict, history: list[dict]) -> Section:
    rows = []
    keys = [k for k in METRIC_LABELS if k in results]
    keys += [k for k, v in results.items()
             if k not in METRIC_LABELS and isinstance(v, (int, float)) and not isinstance(v, bool)]
    for key in keys:
        name, note = METRIC_LABELS.get(key, (key, ""))
        rows.append((html.escape(name), html.escape(_format(results[key])), html.escape(note)))
    if history:
        last = history[-1]
        for key in ("elbo", "reconstruction", "kl"):
            name = METRIC_LABELS[key][0]
            for split in ("train", "val"):
                if f"{split}_{key}" in last:
                    rows.append((html.escape(f"{name} ({'validation' if split == 'val' else split}, "
                                             f"last epoch)"),
                                 html.escape(_format(last[f"{split}_{key}"])), ""))
    split = results.get("split", "test")
    body = _table(rows, header=("metric", html.escape(split), ""), numeric=1) if rows else \
        "<p>No results.json in this run (training did not finish).</p>"
    return Section("metrics", "Metrics", body,
                   "Log-likelihood, bits/dim and active units appear when the run has been "
                   "evaluated with them.")


def _cards(results: dict, history: list[dict], latent_dims: tuple[int, ...],
           kl: torch.Tensor | None) -> str:
    cards = []
    for key in ("elbo", "log_likelihood", "bits_per_dim", "kl", "active_units"):
        if key in results and isinstance(results[key], (int, float)):
            cards.append((_format(results[key]), f"test {METRIC_LABELS[key][0]}"))
    if isinstance(results.get("kl_per_layer"), list):  # several stochastic layers, bottom first
        cards.append((" + ".join(f"{v:.1f}" for v in results["kl_per_layer"]),
                       "test KL per layer (nats, bottom first)"))
    if isinstance(results.get("active_units_per_layer"), list):
        cards.append(("+".join(str(n) for n in results["active_units_per_layer"]),
                      "active units per layer"))
    cards.append(("+".join(map(str, latent_dims)),
                  "latent dimensions" + (" (bottom first)" if len(latent_dims) > 1 else "")))
    if kl is not None:
        cards.append((str(int((kl > 0.01).sum())), "dimensions with KL > 0.01 nats"))
    if history:
        cards.append((str(history[-1]["epoch"]), "epochs"))
    return "".join(f'<div class="card"><div class="value">{html.escape(v)}</div>'
                   f'<div class="label">{html.escape(label)}</div></div>' for v, label in cards)


def _image_sections(model, pictures: Pictures, summary: LatentSummary) -> list[Section]:
    from .images import grid_png
    from .plots import labelled_grid, manifold_images, gaussian_quantiles, traversal_images, traversal_order

    h = model.data_shape[-2]
    scale = max(1, 56 // h)
    device = next(model.parameters()).device
    sections = [Section("samples", "Samples from the prior",
                        _img(grid_png(pictures.samples, nrow=8, scale=scale), "64 prior samples"),
                        f"E[x|z] for {len(pictures.samples)} draws z ~ p(z).")]
    per_row = pictures.per_row
    rows = len(pictures.reconstructions) // (2 * per_row)
    fig = labelled_grid(pictures.reconstructions, per_row,
                        row_labels=["input", "reconstruction"] * rows)
    sections.append(Section("reconstructions", "Reconstructions", _fig(fig, "inputs and reconstructions"),
                            "Test inputs with their reconstructions E[x | z = E_q[z|x]] below."))
    if pictures.interpolations is not None:
        steps = INTERPOLATION_STEPS
        fig = labelled_grid(pictures.interpolations, steps,
                            col_labels=[f"{t:.2g}" for t in torch.linspace(0, 1, steps).tolist()],
                            xlabel="t")
        sections.append(Section("interpolations", "Interpolations",
                                _fig(fig, "interpolations between test examples"),
                                "Spherical interpolation between the posterior means of pairs of "
                                "test examples (left and right ends), decoded."))
    latent_dim = model.latent_dims[-1]  # codes of the top stochastic layer
    order = traversal_order(summary.kl_per_dim.tolist() if summary.kl_per_dim is not None else None,
                            latent_dim)[:MAX_TRAVERSAL_DIMS]
    z0 = summary.means[0].to(device)
    images = traversal_images(model, z0, order, TRAVERSAL_VALUES.to(device)).cpu()
    labels = [f"z{j + 1}" + (f"  {summary.kl_per_dim[j]:.2f}" if summary.kl_per_dim is not None else "")
              for j in order]
    fig = labelled_grid(images, len(TRAVERSAL_VALUES), row_labels=labels,
                        col_labels=[f"{v:g}" for v in TRAVERSAL_VALUES.tolist()],
                        xlabel="value of the swept dimension", cell_inches=0.38)
    shown = "" if latent_dim <= MAX_TRAVERSAL_DIMS else f" (the {MAX_TRAVERSAL_DIMS} of {latent_dim} with most KL)"
    sections.append(Section("traversals", "Latent traversals", _fig(fig, "latent traversals"),
                            "Each row sweeps one latent dimension from -3 to 3 while the others stay "
                            "at the posterior mean of the first test example; rows are ordered by "
                            "KL (nats, after the name), so active dimensions come first" + shown + "."))
    if latent_dim == 2:
        num = 15
        q = gaussian_quantiles(num).tolist()
        fig = labelled_grid(manifold_images(model, num).cpu(), num,
                            row_labels=[f"{v:.1f}" for v in q[::-1]], col_labels=[f"{v:.1f}" for v in q],
                            xlabel="z1 (rows: z2, high at the top)", cell_inches=0.3)
        sections.append(Section("manifold", "Learned manifold", _fig(fig, "manifold of decodes"),
                                "E[x|z] over the latent plane at Gaussian quantiles 0.05 ... 0.95 of "
                                "each coordinate."))
    return sections


# -- the page ---------------------------------------------------------------------------------
def _columns_section(model, test_x: torch.Tensor, names: Sequence[str] | None,
                     y: torch.Tensor | None = None) -> Section:
    """A mixed-type table's per-column reconstruction quality, in place of image grids (a
    conditional model's given the condition ``y``)."""
    quality = column_reconstruction(model, test_x, y=y)
    names = names or [str(j + 1) for j in range(len(quality))]
    rows = [[html.escape(str(name)), html.escape(q["kind"]), _format(q["observed"]),
             _format(q["log_prob"]), html.escape(q["metric"]), _format(q["error"])]
            for name, q in zip(names, quality)]
    return Section("columns", "Reconstruction per column",
                   _table(rows, ["column", "type", "observed", "mean log p(x_j|z)", "error",
                                 "value"], numeric=5),
                   "Test rows reconstructed at the posterior mean, z = E_q[z|x]; observed entries "
                   "only. RMSE / std of 1 is no better than the column's mean.", wide=True)


def render_report(run, test_x: torch.Tensor, test_labels: torch.Tensor | None = None,
                  pictures: Pictures | None = None) -> str:
    """The report page of a :class:`~vaekit.run.Run` as an HTML string. ``test_x
    [N, *data_shape]`` is the test split as the model saw it (binarized if it was);
    ``pictures``: the run's grids when already computed (else computed here)."""
    from .plots import kl_bars, latent_map, learning_curves, project_2d

    run_dir, model = run.dir, run.model.eval()
    is_image, class_names, history = run.data.is_image, run.data.class_names, run.history
    results = run.metrics
    config = run.config.model_dump(mode="json")
    versions = run.versions or {"vaekit": __version__, "torch": torch.__version__}
    conditional = model.condition_kind == "labels"  # pictures per class
    # a conditional model's codes are given its condition, the labels or the covariates of
    # --condition-columns: E_q[z | x, y]
    given = run.condition("test")
    summary = latent_summary(model, test_x, labels=given)
    kl = summary.kl_per_dim
    if kl is None and isinstance(results.get("kl_per_dim"), list):
        kl = torch.tensor(results["kl_per_dim"], dtype=torch.float32)
        summary.kl_per_dim = kl

    projection = project_2d(summary.means[:MAX_MAP_POINTS].numpy())
    labels = test_labels[:MAX_MAP_POINTS].numpy() if test_labels is not None else None
    map_html = _fig(latent_map(projection, labels, class_names), "latent map")
    kl_html = _fig(kl_bars(kl.tolist()), "KL per dimension") if kl is not None else \
        "<p>The posterior and prior do not factorise over dimensions; no per-dimension KL.</p>"
    sections = [
        _metrics_section(results, history),
        Section("latent-map", "Latent space", map_html,
                f"Posterior means E_q[z|x] of {len(projection.points)} test examples, coloured by "
                f"label; projection: {projection.name}."),
    ]
    if history:
        sections.append(Section("curves", "Learning curves", _fig(learning_curves(history), "learning curves"),
                                "Per epoch: training values are running averages over the epoch's "
                                "batches, validation values are measured after it.", wide=True))
    if is_image and len(test_x) and conditional:
        from .conditional_pictures import ConditionalPictures, conditional_sections

        if not isinstance(pictures, ConditionalPictures):
            pictures = ConditionalPictures.of(model, test_x, test_labels, seed=run.config.train.seed)
        sections += conditional_sections(model, pictures, class_names, Section, _img, _fig)
    elif is_image and len(test_x):
        pictures = pictures or Pictures.of(model, test_x, seed=run.config.train.seed)
        sections += _image_sections(model, pictures, summary)
    if isinstance(model.decoder, TableLikelihood) and len(test_x):
        sections.append(_columns_section(model, test_x, run.data.column_names, given))
    sections.append(Section("kl-per-dim", "KL per latent dimension", kl_html,
                            "Dimensions with KL near 0 are unused: their posterior equals the prior."))
    sections.append(_config_section(config, versions, history))

    dc, mc = config.get("data", {}), config.get("model", {})
    title = f"vaekit run {run_dir.resolve().name}"
    subtitle = (f"{dc.get('name', '?')} {tuple(model.data_shape)} · {mc.get('arch', '?')} · latent_dim "
                f"{','.join(map(str, model.latent_dims))} · {mc.get('likelihood', '?')} likelihood · {mc.get('prior', '?')} prior")
    nav = "".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    page = Template(resources.files("vaekit.view").joinpath("static/report.html").read_text())
    return page.substitute(
        title=html.escape(title), subtitle=html.escape(subtitle), nav=nav,
        cards=_cards(results, history, model.latent_dims, kl),
        sections="\n".join(s.html() for s in sections),
        footer=html.escape(f"written {datetime.now():%Y-%m-%d %H:%M} by vaekit from {run_dir}"),
    )


def write_report(run, *, out: str | Path | None = None, pictures: Pictures | None = None) -> Path:
    """Writes the report of ``run`` (a :class:`~vaekit.run.Run` or a run directory) to
    ``RUN_DIR/report.html`` (or ``out``) and returns its path; the test split is the run's own,
    prepared as in training."""
    if not hasattr(run, "model"):
        from ..run import load

        run = load(run)
    test_x, test_labels = run.split("test")
    text = render_report(run, test_x, test_labels, pictures)
    path = Path(out) if out is not None else run.dir / REPORT
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
