"""A mixture prior's log p(z) in an importance-sampled log p(x): vaekit's matrix form
(``DiagonalGaussianMixture.log_prob``) against torch's ``MixtureSameFamily.log_prob`` (the
broadcast form), interleaved in one process, on the same model, images and draws.

Default model: the VampPrior row of docs/reproduction.md (gated 784-300-300-40 MLP, 500
pseudo-inputs, Bernoulli likelihood), freshly initialised (speed does not depend on the weights),
or the trained model of ``--run-dir``.

    python benchmarks/mixture_prior.py [--run-dir RUN] [--num-images 4] [--num-samples 5000]
                                       [--rounds 3] [--json]

Prints seconds per test image for each form, their ratio, and the largest difference between
the two estimates of log p(x) (nats)."""

from __future__ import annotations

import argparse
import json
import time
from statistics import median

import torch
from torch.distributions import MixtureSameFamily

from vaekit.config import ModelConfig
from vaekit.evaluation import log_likelihood
from vaekit.priors import DiagonalGaussianMixture

DATA_SHAPE = (1, 28, 28)


def vamp_model(run_dir: str | None):
    if run_dir:
        from vaekit.run import load

        return load(run_dir).model.eval()
    from vaekit.families import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(300, 300), latent_dim=40, likelihood="bernoulli", prior="vamp",
                      prior_components=500, gated=True, vamp_clip_pseudo_inputs=True)
    return build_model(cfg, DATA_SHAPE).eval()


def timed(model, x, num_samples: int, broadcast: bool) -> tuple[float, torch.Tensor]:
    fast = DiagonalGaussianMixture.log_prob
    if broadcast:
        DiagonalGaussianMixture.log_prob = MixtureSameFamily.log_prob
    try:
        start = time.perf_counter()
        with torch.no_grad():
            estimate = log_likelihood(model, x, num_samples, seed=0)
        return time.perf_counter() - start, estimate
    finally:
        DiagonalGaussianMixture.log_prob = fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir")
    parser.add_argument("--num-images", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = vamp_model(args.run_dir)
    x = (torch.rand(args.num_images, *DATA_SHAPE, generator=torch.Generator().manual_seed(0))
         < 0.13).float()
    seconds = {"matrix": [], "broadcast": []}
    for _ in range(args.rounds):
        for form in seconds:
            t, estimate = timed(model, x, args.num_samples, broadcast=form == "broadcast")
            seconds[form].append(t / args.num_images)
            if form == "matrix":
                matrix_estimate = estimate
            else:
                difference = float((estimate - matrix_estimate).abs().max())
    result = {form: median(s) for form, s in seconds.items()}
    result.update(ratio=result["broadcast"] / result["matrix"], max_difference_nats=difference,
                  num_samples=args.num_samples, threads=torch.get_num_threads())
    if args.json:
        print(json.dumps(result))
    else:
        print(f"K = {args.num_samples}, {result['threads']} threads, seconds per test image: "
              f"matrix form {result['matrix']:.3f}, torch broadcast form "
              f"{result['broadcast']:.3f} ({result['ratio']:.1f}x); estimates differ by at most "
              f"{difference:.2e} nats")


if __name__ == "__main__":
    main()
