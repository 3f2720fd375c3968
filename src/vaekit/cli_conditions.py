"""What the command line asks of a conditional or semi-supervised run, above the models: label
and condition text parsed (``--label 7``, ``--label sandal``, ``--condition age=40``), the
samples and reconstructions of ``vaekit sample`` / ``vaekit reconstruct`` for a class or
covariates, ``vaekit classify``, and the lines ``vaekit evaluate`` prints for such a run."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .conditional import ConditionalVAE, labels_or_refuse, standardize_covariates
from .errors import ConfigError


def parse_label(text: str, class_names: Sequence[str] | None, num_classes: int) -> int:
    """A label given on the command line: its index or its class name ("7", "sandal")."""
    names = list(class_names or [])
    if text in names:
        return names.index(text)
    try:
        label = int(text)
    except ValueError:
        valid = ", ".join(names) if names else f"0..{num_classes - 1}"
        raise ConfigError(f"label '{text}' is not a class of this model (classes: {valid})"
                          ) from None
    if not 0 <= label < num_classes:
        raise ConfigError(f"--label {label} does not exist: the model has {num_classes} classes "
                          f"(0..{num_classes - 1})")
    return label


# -- what the command line asks of a conditional run --------------------------------------------


# what a model conditioned on the other kind of y is told, by the kind a flag needs
_OTHER_KIND = {
    "labels": "{flag} draws a class, but this run is conditioned on the columns {names}: give "
              "their values with vaekit sample --condition NAME=VALUE",
    "covariates": "{flag} gives the values of covariates, but this run is conditioned on class "
                  "labels: draw a class with --label",
}


def require_condition(run, flag: str, kind: str) -> ConditionalVAE:
    """The run's model when it is conditioned on ``kind`` ("labels": what ``flag`` draws, or
    "covariates" of ``--condition-columns``)."""
    model = run.model
    if model.condition_kind is None:
        trained = "--conditional or --semi-supervised" if kind == "labels" else \
            "--conditional --condition-columns"
        raise ConfigError(f"{flag} needs a model conditioned on {kind} (trained with {trained}); "
                          "this run is unconditional")
    if model.condition_kind != kind:
        names = ",".join(run.config.data.condition_columns or ())
        raise ConfigError(_OTHER_KIND[kind].format(flag=flag, names=names))
    return model


def parse_covariates(text: str, names: Sequence[str], mean: Sequence[float]) -> list[float]:
    """``"age=40,income=50000"`` -> one value per condition column in its own units; columns
    left out are at their training mean."""
    values = dict(zip(names, mean))
    given: set[str] = set()
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--condition: '{item}' is not NAME=VALUE (e.g. "
                              f"{names[0]}={mean[0]:g})")
        if name not in values:
            raise ConfigError(f"--condition: '{name}' is not a condition column of this run "
                              f"(its columns: {', '.join(names)})")
        if name in given:
            raise ConfigError(f"--condition gives '{name}' twice")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"--condition {name}={value}: not a number") from None
        if not math.isfinite(number):
            raise ConfigError(f"--condition {name}={value}: not a finite number")
        values[name] = number
        given.add(name)
    return [values[name] for name in names]


@torch.no_grad()
def covariate_samples(run, text: str | None, num: int | None, *, use_mean: bool = True,
                      generator: torch.Generator | None = None, temperature: float = 1.0
                      ) -> tuple[torch.Tensor, list[float]]:
    """``vaekit sample --condition age=40,income=50000``: ``num`` (default 64) samples x ~
    p(x | z, y), z ~ p(z | y), of the covariates given in their own units (standardized with the
    run's training mean and std; the others at their mean). Returns the samples and the
    covariates' values."""
    model = require_condition(run, "--condition", "covariates")
    dc = run.config.data
    values = parse_covariates(text or "", dc.condition_columns, dc.condition_mean) if text \
        else list(dc.condition_mean)
    y = standardize_covariates([values], dc.condition_mean, dc.condition_std)  # [1, C]
    num = 64 if num is None else num
    return model.sample(num, y=y, use_mean=use_mean, generator=generator,
                        temperature=temperature), values


def class_names_of_run(run) -> list[str]:
    model = run.model
    names = list(run.data.class_names or [])
    return names if len(names) == model.num_classes else [str(c) for c in range(model.num_classes)]


@torch.no_grad()
def conditional_samples(run, label: str, num: int | None, *, use_mean: bool = True,
                        generator: torch.Generator | None = None, temperature: float = 1.0
                        ) -> tuple[torch.Tensor, int]:
    """``vaekit sample --label``: ``num`` (default 64) samples of one class, or with ``label``
    "all" one row of ``num`` (default 8) samples per class. Returns the images and the grid
    width."""
    model = require_condition(run, "--label", "labels")
    if label == "all":
        per_class = 8 if num is None else num
        y = torch.arange(model.num_classes).repeat_interleave(per_class)
        return model.sample(len(y), y=y, use_mean=use_mean, generator=generator,
                            temperature=temperature), per_class
    c = parse_label(label, run.data.class_names, model.num_classes)
    num = 64 if num is None else num
    x = model.sample(num, y=torch.full((num,), c), use_mean=use_mean, generator=generator,
                     temperature=temperature)
    return x, min(num, 8)


@torch.no_grad()
def conditional_reconstructions(run, split: str, source, data_dir, num: int,
                                as_label: str | None, *, grid: bool) -> tuple[torch.Tensor, int | None]:
    """``vaekit reconstruct`` of a conditional run: each example encoded with its true label (or
    covariates) and decoded with it, or with ``as_label`` (the style of the example, drawn as
    that class). With ``grid``: rows of inputs above their reconstructions."""
    model = run.model if as_label is None else require_condition(run, "--as-label", "labels")
    as_y = None if as_label is None else parse_label(as_label, run.data.class_names,
                                                     model.num_classes)
    x, _ = run.split(split, source, data_dir)
    y = labels_or_refuse(run.condition(split, source, data_dir),
                         "reconstructing with a conditional model")
    x, y = x[:num], y[:num]
    recon = model.reconstruct(x, y, as_y)
    if not grid:
        return recon, None
    per_row = min(8, len(x))
    rows = []
    for r in range(len(x) // per_row):
        part = slice(r * per_row, (r + 1) * per_row)
        rows += [x[part], recon[part]]
    return torch.cat(rows), per_row


def format_evaluation(result: dict, split: str) -> str:
    """The first lines ``vaekit evaluate`` prints for a conditional run (the bounds given y, or
    M2's unlabelled bound and classification error); log p(x|y), bits/dim and the latent
    diagnostics follow as for every run."""
    lines = []
    if "classification_error" in result:
        lines.append(f"{split}: classification error {100 * result['classification_error']:.2f}% "
                     f"({result['num_examples']} examples); unlabelled bound U(x) on log p(x) "
                     f"{result['elbo']:.2f} nats/example")
        lines.append(f"ELBO given the label {result['elbo_given_label']:.2f} nats/example "
                     f"(reconstruction {result['reconstruction_given_label']:.2f}, KL "
                     f"{result['kl_given_label']:.2f})")
    else:
        lines.append(f"{split}: ELBO {result['elbo']:.2f} nats/example (a bound on log p(x|y)) "
                     f" reconstruction {result['reconstruction']:.2f}  KL {result['kl']:.2f}  "
                     f"({result['num_examples']} examples)")
        if result.get("conditioned_on") == "columns":
            lines.append("y: the columns " + ", ".join(result.get("condition_columns", []))
                         + ", standardized with the training mean and std")
    return "\n".join(lines)


def classify_split(run, split: str = "test", source=None, data_dir=None, out=None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``vaekit classify``: argmax_y q(y|x) for a split (saved to ``out``: ``.npy`` int64 or
    ``.csv`` with a header ``index,label``). Returns the predictions and the split's labels."""
    from pathlib import Path

    model = run.model
    if not hasattr(model, "classifier"):
        raise ConfigError("vaekit classify needs a semi-supervised run (trained with "
                          "--semi-supervised); this run has no classifier q(y|x)")
    if out is not None and Path(out).suffix not in (".npy", ".csv"):
        raise ConfigError(f"--out {out}: use a .npy or .csv file")
    x, labels = run.split(split, source, data_dir)
    predicted = model.classify(x)
    if out is not None:
        from .storage import atomic_write_bytes, save_arrays

        if Path(out).suffix == ".npy":
            save_arrays(out, {"labels": predicted.numpy()})
        else:
            names = list(run.data.class_names or [])
            rows = ["index,label" + (",class" if names else "")]
            rows += [f"{i},{int(c)}" + (f",{names[int(c)]}" if names else "")
                     for i, c in enumerate(predicted)]
            atomic_write_bytes(out, ("\n".join(rows) + "\n").encode())
    return predicted, labels
