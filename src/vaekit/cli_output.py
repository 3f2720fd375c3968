"""What the commands write and print: arrays and image grids (``--out x.npy|x.png``), and the
lines of ``vaekit evaluate`` for an evaluation result (the JSON of ``--json`` is the result
itself): the bounds (given y for a conditional model), log p(x) with its kind and K, bits/dim
or why there is none, where the result was saved, the per-layer and latent diagnostics."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError
from .run import EVALUATION, load
from .storage import save_arrays
from .view.images import save_grid


def run_levels(run_dir) -> str:
    """The number of levels a run's likelihood gives probabilities of, for messages."""
    levels = load(run_dir).config.model.levels
    return str(levels) if levels is not None else "2"


def examples_note(result: dict) -> str:
    """Which examples of the split an evaluation used, when not all of them."""
    examples = result.get("examples", "all")
    return "" if examples == "all" else f": {examples}"


def evaluation_lines(result: dict, split: str, run_dir, *, saved: bool) -> list[str]:
    """The lines of ``result`` (:meth:`vaekit.run.Run.evaluate`) for a split of the run in
    ``run_dir``; ``saved``: it was written to the run's ``evaluation.json``."""
    given = "|y" if "conditioned_on" in result else ""  # a conditional model's bounds
    if given:
        from .cli_conditions import format_evaluation

        lines = [format_evaluation(result, split)]
    else:
        lines = [f"{split}: ELBO {result['elbo']:.2f} nats/example  reconstruction "
                 f"{result['reconstruction']:.2f} nats/example  KL {result['kl']:.2f} "
                 f"nats/example  ({result['num_examples']} examples{examples_note(result)})"]
    if "log_likelihood" in result:
        kind = "log-probability" if "bits_per_dim" in result else "log-density"
        lines.append(f"log p(x{given}) {result['log_likelihood']:.2f} +- "
                     f"{result['log_likelihood_stderr']:.2f} nats/example ({kind}, "
                     f"importance-sampled, K={result['num_samples']}, mean ESS "
                     f"{result['ess_mean']:.1f})  in {result['log_likelihood_seconds']:.1f}s")
        if "bits_per_dim" in result:
            lines.append(f"bits/dim {result['bits_per_dim']:.4f} bits per dimension of the "
                         f"{run_levels(run_dir)}-level data: -log p(x{given}) / (D ln 2)")
        elif "bits_per_dim_absent" in result:
            lines.append("bits/dim: not reported, because " + result["bits_per_dim_absent"])
    if saved:
        lines.append(f"saved to {Path(run_dir) / EVALUATION} (`vaekit report {run_dir}` adds it "
                     "to the report)")
    if "kl_per_layer" in result:
        lines.append("per layer (bottom first): KL "
                     + " + ".join(f"{v:.2f}" for v in result["kl_per_layer"])
                     + " nats, active units "
                     + "+".join(str(n) for n in result["active_units_per_layer"]))
    mi = result["mutual_information"]
    lines.append(f"active units {result['active_units']}/{len(result['posterior_mean_variance'])}"
                 "  mutual information " + (
                     "n/a (planar posterior: q(z|x) is known only at its own samples)"
                     if mi is None else f"{mi:.2f} nats"))
    return lines


def save_array_or_grid(x, out: str, nrow: int | None = None) -> None:
    """Writes ``x`` to ``out``: a grid of images (.png) or an array (.npy, key ``x``)."""
    path = Path(out)
    if path.suffix == ".png":
        if x.dim() != 4:
            raise ConfigError("a .png output needs image data; use an .npy output for tables")
        save_grid(x, path, nrow=nrow)
    elif path.suffix == ".npy":
        save_arrays(path, {"x": x.detach().cpu().numpy()})
    else:
        raise ConfigError(f"--out {out}: use a .png (image grid) or .npy (array) file")
    print(f"wrote {path}")
