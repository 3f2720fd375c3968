"""Run directories: saving and loading trained models (safetensors + JSON config, never a
pickle), and the pictures every image run leaves behind."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_tensors, save_tensors, unflatten_state
from .config import RunConfig, config_from_dict
from .errors import CheckpointError, ConfigError, DataError
from .images import save_grid
from .latents import slerp
from .model import VAE, build_model, posterior_mean

WEIGHTS = "model.safetensors"
EVALUATION = "evaluation.json"  # written by `vaekit evaluate` on the run's own test set


def save_weights(model: VAE, config: RunConfig, dataset, path: str | Path) -> None:
    """Writes the model's parameters with the resolved config and data description."""
    from . import __version__

    meta = {
        "config": config.model_dump(mode="json"),
        "data_shape": list(model.data_shape),
        "value_kind": dataset.value_kind,
        "is_image": dataset.is_image,
        "versions": {"vaekit": __version__, "torch": torch.__version__},
    }
    save_tensors(path, dict(model.state_dict()), meta)


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> VAE:
    """Rebuilds the model of a run directory from its saved config and loads its weights
    (from ``model.safetensors``, or from the checkpoint of an unfinished run). The returned
    model is in eval mode and has ``.config`` (:class:`RunConfig`) and ``.info`` (dict)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    weights, checkpoint = run_dir / WEIGHTS, run_dir / "checkpoint.safetensors"
    if weights.exists():
        tensors, meta = load_tensors(weights)
        state = tensors
    elif checkpoint.exists():
        tensors, meta = load_tensors(checkpoint)
        state = unflatten_state(meta["state"], tensors)["model"]
    else:
        raise CheckpointError(
            f"{run_dir} is not a vaekit run directory (no {WEIGHTS} or checkpoint.safetensors); "
            "pass the --out directory of a `vaekit train` run"
        )
    try:
        config = config_from_dict(meta.get("config"))
    except ConfigError as err:
        raise CheckpointError(f"{run_dir}: config in the checkpoint is invalid ({err}); it may "
                              "come from another vaekit version") from None
    data_shape = tuple(meta.get("data_shape") or _data_shape_from(run_dir))
    model = build_model(config.model, data_shape)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{run_dir}: weights do not match the saved config ({err})") from None
    model.config = config
    model.info = {k: meta.get(k) for k in ("value_kind", "is_image", "versions")}
    return model.to(device).eval()


def _data_shape_from(run_dir: Path) -> tuple[int, ...]:
    raise CheckpointError(f"{run_dir}: checkpoint lacks the data shape; finish or retrain the run")


def check_data_shape(model: VAE, x: torch.Tensor, what: str = "data") -> None:
    if tuple(x.shape[1:]) != model.data_shape:
        raise DataError(
            f"{what} has examples of shape {tuple(x.shape[1:])} but the model was trained on "
            f"{model.data_shape}; use data like the training data"
        )


@torch.no_grad()
def reconstruction_grid(model: VAE, x: torch.Tensor, rows: int = 4, per_row: int = 8) -> torch.Tensor:
    """Inputs above their reconstructions: ``rows`` pairs of rows of ``per_row`` images."""
    x = x[: rows * per_row]
    recon = model.reconstruct(x)
    pairs = []
    for r in range(rows):
        pairs += [x[r * per_row : (r + 1) * per_row], recon[r * per_row : (r + 1) * per_row]]
    return torch.cat(pairs)


@torch.no_grad()
def interpolation_grid(model: VAE, x: torch.Tensor, pairs: int = 6, steps: int = 10,
                       method=slerp) -> torch.Tensor:
    """Each row decodes ``steps`` codes between the posterior means of two test examples."""
    z = posterior_mean(model.encode(x[: 2 * pairs]))
    rows = [model.decode(method(z[2 * i], z[2 * i + 1], steps)).mean for i in range(len(z) // 2)]
    return torch.cat(rows)


@torch.no_grad()
def write_pictures(model: VAE, test_x: torch.Tensor, run_dir: str | Path, seed: int = 0) -> None:
    """``samples.png`` (64 prior samples, decoder means), ``reconstructions.png`` (inputs above
    reconstructions) and ``interpolation.png`` (spherical interpolations between test codes)."""
    run_dir = Path(run_dir)
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    save_grid(model.sample(64, generator=generator).cpu(), run_dir / "samples.png", nrow=8)
    x = test_x[:64].to(device)
    save_grid(reconstruction_grid(model, x).cpu(), run_dir / "reconstructions.png", nrow=8)
    save_grid(interpolation_grid(model, x).cpu(), run_dir / "interpolation.png", nrow=10)


SPLIT_SEED_OFFSET = {"val": 1, "test": 2, "train": 3}


def run_data(model: VAE, source: str | None = None, data_dir: str | None = None,
             split: str = "test") -> tuple[torch.Tensor, torch.Tensor | None]:
    """A split of the run's data set (or of ``source``), prepared as in training: binarized
    once with the run's fixed seed when the run used binarization, checked against the model's
    data shape and likelihood support. Returns ``(x, labels)``."""
    from .data import binarize_fixed, load_dataset

    dc = model.config.data
    same_source = source is None
    dataset = load_dataset(dc.name if same_source else source,
                           dc.data_dir if same_source and data_dir is None else data_dir,
                           val_fraction=dc.val_fraction, split_seed=dc.split_seed,
                           download=dc.download)
    x, labels = dataset.split(split)
    check_data_shape(model, x, f"split '{split}' of {dataset.name}")
    if dc.binarize != "none":
        x = binarize_fixed(x, dc.split_seed + SPLIT_SEED_OFFSET[split])
    model.decoder.check_support(x)
    return x, labels
