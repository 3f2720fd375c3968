"""``vaekit gradients``: the variance of the pathwise and score-function gradient estimators
measured on the toy problem (against its closed forms) and on a run's encoder, as a dict
(:func:`gradient_report`), a text table with standard errors (:func:`format_gradient_report`)
and the plot ``gradient_variance.png``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import ConfigError
from ..gradients import (ESTIMATOR_NAMES, TOY_SAMPLES, toy_gradients, toy_variance_curve,
                         vae_encoder_gradients, variance_ratio)
from ..run import load
from .plots import plot_variance_curves


def gradient_report(run_dir: str | Path | None = None, *, num_samples: int = 1000,
                    toy_samples: int = TOY_SAMPLES, theta: float = 1.0, num_examples: int = 100,
                    out: str | Path | None = None, seed: int = 0,
                    log: Callable[[str], None] | None = None) -> dict:
    """The toy problem (measured against closed forms, ``toy_samples`` draws per estimator) and,
    given a run directory, the encoder gradient of its model on the first ``num_examples`` test
    examples, under each estimator (``num_samples`` draws each); writes
    ``gradient_variance.png`` (variance of the S-sample estimate against S, log-log) into
    ``out`` (default: the run directory, else the current one). Returns ``{"toy": {name: {...}},
    "vae": {name: {...}}, "variance_ratio": {"toy": r, "vae": r}, "variance_ratio_stderr":
    {...}, "variance_ratio_interval": {"toy": [low, high], ...}, "plot": path}`` (the ratio is
    score_function / reparameterization; stderr and interval from :func:`variance_ratio`)."""
    if num_samples < 2:
        raise ConfigError("--num-samples must be at least 2 (a variance needs two samples)")
    if toy_samples < 2:
        raise ConfigError("--toy-samples must be at least 2 (a variance needs two samples)")
    report: dict = {"toy": toy_gradients(theta, toy_samples, seed)}
    ratios = {"toy": variance_ratio(report["toy"]["score_function"],
                                    report["toy"]["reparameterization"])}
    if run_dir is not None:
        run = load(run_dir)
        model = run.model
        x, _ = run.split("test")
        x = x[:num_examples]
        vae = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for name in ESTIMATOR_NAMES:
                if log:
                    log(f"measuring {name} on {len(x)} test examples ({num_samples} samples)")
                vae[name] = vae_encoder_gradients(model, x, name, num_samples).summary()
        report["vae"] = vae
        ratios["vae"] = variance_ratio(vae["score_function"], vae["reparameterization"])
    report["variance_ratio"] = {k: r["ratio"] for k, r in ratios.items()}
    report["variance_ratio_stderr"] = {k: r["stderr"] for k, r in ratios.items()}
    report["variance_ratio_interval"] = {k: r["interval"] for k, r in ratios.items()}

    out_dir = Path(out) if out is not None else Path(run_dir) if run_dir is not None else Path(".")
    sizes = [s for s in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if s <= max(toy_samples, 2)]
    curves = toy_variance_curve(theta, sizes, num_repeats=2000, seed=seed)
    report["plot"] = str(plot_variance_curves(curves, out_dir / "gradient_variance.png",
                                              title=f"q = N({theta:g}, 1), f(x) = x^2"))
    return report


def _rows(report: dict, part: str, columns: Callable[[dict], str]) -> list[str]:
    return [f"{name:<25} {columns(report[part][name])} {report[part][name]['num_samples']:>8}"
            for name in ESTIMATOR_NAMES]


def format_gradient_report(report: dict, theta: float, run_dir: str | None = None) -> str:
    """The report as the text tables ``vaekit gradients`` prints: every measured mean and
    variance with its standard error, the variance ratio with its delta-method standard error
    and 95% interval."""
    lines = [f"toy problem: q = N({theta:g}, 1), f(x) = x^2, exact gradient {2 * theta:g} "
             "(measured ± one standard error)",
             f"{'estimator':<25} {'mean ± stderr':>19} {'exact':>7} {'variance ± stderr':>21} "
             f"{'exact':>9} {'SNR':>7} {'samples':>8}"]
    lines += _rows(report, "toy", lambda r: (
        f"{r['mean']:>9.4f} ± {r['mean_stderr']:<7.4f} {r['exact_mean']:>7.3f} "
        f"{r['variance']:>10.4f} ± {r['variance_stderr']:<8.4f} {r['exact_variance']:>9.4f} "
        f"{r['snr']:>7.4f}"))
    if "vae" in report:
        first = report["vae"][ESTIMATOR_NAMES[0]]
        lines += [f"\n{run_dir}: encoder gradient of the mean ELBO of a test batch, "
                  f"{first['num_parameters']} parameters (averages over parameters; "
                  "stderr/param: the mean of each one's stderr of E g)",
                  f"{'estimator':<25} {'mean |E g|':>11} {'stderr/param':>12} "
                  f"{'variance ± stderr':>21} {'SNR':>8} {'SNR median':>11} {'samples':>8}"]
        lines += _rows(report, "vae", lambda r: (
            f"{r['mean_abs']:>11.4g} {r['mean_stderr']:>12.4g} {r['variance']:>10.4g} ± "
            f"{r['variance_stderr']:<8.2g} {r['snr']:>8.4f} {r['snr_median']:>11.4f}"))
    toy = report["toy"]
    exact = toy["score_function"]["exact_variance"] / toy["reparameterization"]["exact_variance"]
    stderr, interval = report["variance_ratio_stderr"], report["variance_ratio_interval"]
    ratios = ", ".join(f"{k} {v:.4g} ± {stderr[k]:.2g}" + (f" (exact {exact:.4g})" if k == "toy"
                                                             else "")
                       for k, v in report["variance_ratio"].items())
    intervals = ", ".join(f"{k} [{lo:.4g}, {hi:.4g}]" for k, (lo, hi) in interval.items())
    lines += [f"\nvariance ratio score_function / reparameterization: {ratios}",
              f"  (± delta-method standard error; 95% intervals, delta method on the log ratio: "
              f"{intervals})", f"wrote {report['plot']}"]
    return "\n".join(lines)
