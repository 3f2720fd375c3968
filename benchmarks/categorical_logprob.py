"""The 256-way categorical likelihood's log p(x|z) with its backward pass (a training step's
likelihood part): vaekit's ``LevelCategorical.log_prob`` (torch's fused cross-entropy on the
unnormalised logits) against torch's ``Categorical.log_prob`` (normalise, then gather), on the
same decoder, codes and images, interleaved in one process.

    python benchmarks/categorical_logprob.py [--batch 128] [--rounds 5] [--threads 1] [--json]

The decoder is the MNIST default's (20-400-784 MLP) with ``--likelihood categorical``, freshly
initialised (speed does not depend on the weights); the images are random 8-bit levels."""

from __future__ import annotations

import argparse
import json
import time
from statistics import median

import torch
from torch.distributions import Categorical, Independent

from vaekit import grey_levels
from vaekit.config import ModelConfig
from vaekit.families import build_model

DATA_SHAPE = (1, 28, 28)


def torch_categorical(logits, validate_args=None):
    """The reference: torch's Categorical with the levels' mean (as LevelCategorical has)."""
    return Categorical(logits=logits, validate_args=False)


def step_seconds(decoder, z, x, reference: bool) -> float:
    fast = grey_levels.LevelCategorical
    if reference:
        grey_levels.LevelCategorical = torch_categorical
    try:
        start = time.perf_counter()
        log_p = decoder(z).log_prob(x)
        log_p.sum().backward()
        return time.perf_counter() - start
    finally:
        grey_levels.LevelCategorical = fast


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(hidden=(400,), latent_dim=20, likelihood="categorical", levels=256)
    decoder = build_model(cfg, DATA_SHAPE).decoder
    z = torch.randn(args.batch, 20)
    x = torch.randint(0, 256, (args.batch, *DATA_SHAPE), dtype=torch.uint8)
    with torch.no_grad():  # the two forms agree
        difference = float((decoder(z).log_prob(x) - Independent(
            torch_categorical(decoder(z).base_dist._raw_logits), 3).log_prob(x)).abs().max())
    seconds = {"vaekit": [], "torch": []}
    step_seconds(decoder, z, x, reference=False)  # warm-up
    for _ in range(args.rounds):
        for form in seconds:
            seconds[form].append(step_seconds(decoder, z, x, reference=form == "torch"))
    result = {form: median(s) for form, s in seconds.items()}
    result.update(ratio=result["torch"] / result["vaekit"], max_difference_nats=difference,
                  batch=args.batch, threads=args.threads)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"batch {args.batch}, {args.threads} thread(s), log p(x|z) forward + backward: "
              f"vaekit {result['vaekit'] * 1e3:.0f} ms, torch's Categorical "
              f"{result['torch'] * 1e3:.0f} ms ({result['ratio']:.2f}x); log p(x|z) differs by "
              f"at most {difference:.1e} nats per image")


if __name__ == "__main__":
    main()
