"""``python tests/ddp_worker.py ARGS`` = ``vaekit ARGS`` with two test-only hooks, for running
under torchrun from tests/test_distributed.py:

- ``VAEKIT_TEST_SLICED_NOISE=SEED``: :func:`install_sliced_noise`, so W ranks draw exactly the
  posterior noise of one process with the global batch;
- ``VAEKIT_TEST_ZERO_NOISE=1``: :func:`install_zero_noise` (z = the posterior mean in training);
- ``VAEKIT_TEST_WATCH=DIR``: an audit hook records every file this process opens for writing,
  renames or creates under DIR, reported at exit as ``WRITES rank=R count=N``."""

from __future__ import annotations

import atexit
import os
import sys

import torch
import torch.distributions.normal as normal_module


def install_sliced_noise(seed: int) -> None:
    """Every standard-normal draw made with gradients on (a training step's rsample, shape
    ``[K, b, L]``) is drawn for the global batch ``[K, b * W, L]`` from one generator seeded
    alike on every rank, and rank r keeps rows ``r::W``: the global-batch positions of its
    examples (TensorBatches interleaves ranks). Draws under no_grad (evaluation) are left
    alone. With W = 1 this is plain noise from the generator."""
    generator = torch.Generator().manual_seed(seed)
    original = normal_module._standard_normal

    def sliced(shape, dtype, device):
        if not torch.is_grad_enabled():
            return original(shape, dtype, device)
        from vaekit.distributed import rank_and_world_size

        rank, world = rank_and_world_size()
        full = list(shape)
        full[-2] *= world
        eps = torch.randn(full, generator=generator, dtype=torch.float32)
        return eps[..., rank::world, :].to(dtype=dtype, device=device)

    normal_module._standard_normal = sliced


def install_zero_noise() -> None:
    """Every standard-normal draw made with gradients on is 0 (z = the posterior mean): a
    training step is then a function of its examples alone, whichever rank holds them, even
    when ranks' batches differ in composition (M2's labelled and unlabelled examples)."""
    original = normal_module._standard_normal

    def zero(shape, dtype, device):
        if not torch.is_grad_enabled():
            return original(shape, dtype, device)
        return torch.zeros(shape, dtype=dtype, device=device)

    normal_module._standard_normal = zero


def watch_writes(directory: str) -> list[str]:
    """Paths under ``directory`` this process writes, renames or creates (via sys.audit)."""
    root = os.path.realpath(directory)
    seen: list[str] = []

    def under(path) -> bool:
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(root)
        except (TypeError, ValueError):
            return False

    def hook(event, args):
        if event == "open" and args[0] is not None and not isinstance(args[0], int):
            mode, flags = args[1], args[2]
            writing = (mode and any(c in str(mode) for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and under(args[0]):
                seen.append(os.fsdecode(args[0]))
        elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove") and under(args[0]):
            seen.append(f"{event} {os.fsdecode(args[0])}")

    sys.addaudithook(hook)
    return seen


def main() -> int:
    if "VAEKIT_TEST_SLICED_NOISE" in os.environ:
        install_sliced_noise(int(os.environ["VAEKIT_TEST_SLICED_NOISE"]))
    if "VAEKIT_TEST_ZERO_NOISE" in os.environ:
        install_zero_noise()
    if "VAEKIT_TEST_WATCH" in os.environ:
        writes = watch_writes(os.environ["VAEKIT_TEST_WATCH"])
        rank = os.environ.get("RANK", "0")
        atexit.register(lambda: print(f"WRITES rank={rank} count={len(writes)}", flush=True))
    from vaekit.cli import main as vaekit_main

    return vaekit_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
