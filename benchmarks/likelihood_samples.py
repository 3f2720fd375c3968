"""Samples of several runs side by side, for docs/likelihoods.md: the first row holds test
images of the first run's data, then one row per run of E[x|z] for z ~ p(z) and one row of
draws x ~ p(x|z) for the same z (the same seed for every run).

    python benchmarks/likelihood_samples.py RUN_DIR [RUN_DIR ...] --out samples.png [--num 12]
"""

from __future__ import annotations

import argparse

import torch

import vaekit
from vaekit.view.images import save_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--num", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for i, run_dir in enumerate(args.runs):
        run = vaekit.load(run_dir)
        model = run.model
        if i == 0:
            x, _ = run.split("test")
            rows.append(model.to_unit(x[: args.num]).float())
        with torch.no_grad():
            torch.manual_seed(args.seed)
            z = model.prior().sample((args.num,))
            p_x = model.decode(z)
            torch.manual_seed(args.seed)
            rows += [model.to_unit(p_x.mean).float(), model.to_unit(p_x.sample()).float()]
    save_grid(torch.cat(rows), args.out, nrow=args.num, scale=1 if rows[0].shape[-1] > 16 else 4)
    print(f"wrote {args.out}: rows test images, then E[x|z] and a draw per run: "
          + ", ".join(vaekit.load(r).config.model.likelihood for r in args.runs))


if __name__ == "__main__":
    main()
