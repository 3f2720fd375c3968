"""A run: what ``vaekit train`` leaves in a run directory, as one object.

:func:`load` rebuilds a :class:`Run` from its directory without unpickling anything: the model
from the saved config and safetensors weights (``model.safetensors``, or the checkpoint of an
unfinished run), the data description (name, shape, value kind, class names), the history
(``metrics.jsonl``), the test results (``results.json``) and the latest evaluation
(``evaluation.json``). Report, explorer, evaluation and the command line all start from it.

Files of a run directory:

==========================  ===========================================================
``config.json``             the resolved config (every default filled in)
``model.safetensors``       weights, with the config and data description in the metadata
``checkpoint.safetensors``  everything needed to resume (``vaekit.training.checkpoint``)
``metrics.jsonl``           one record per epoch
``results.json``            test-set ELBO and its terms at the end of training
``evaluation.json``         the latest :meth:`Run.evaluate` on the run's own test set
==========================  ===========================================================
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .batched import bound_to, model_device, rows
from .conditional import standardize_covariates
from .config import RunConfig, config_from_dict
from .data import class_names_of, load_dataset, prepare_split
from .distributed import process_group, resolve_device
from .errors import CheckpointError, ConfigError, DataError
from .evaluation import DEFAULT_NUM_SAMPLES, evaluate_model
from .families import build_model
from .model import VAE
from .posteriors import posterior_mean
from .precision import MATMUL_PRECISIONS
from .precision import matmul_precision as matmul_precision_of
from .storage import atomic_write_bytes, load_tensors, save_tensors, unflatten_state

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
EVALUATION = "evaluation.json"


@dataclass(frozen=True)
class DataInfo:
    """What a run knows of its data without loading it."""

    name: str  # the data set (a registered name or the user's path)
    data_shape: tuple[int, ...]  # one example
    value_kind: str  # binary, unit (grey levels in [0, 1]) or real
    is_image: bool
    class_names: tuple[str, ...] | None = None  # what label i means, when known
    column_names: tuple[str, ...] | None = None  # a mixed-type table's columns

    def to_meta(self) -> dict[str, Any]:
        """The JSON form stored in weights and checkpoints."""
        meta = asdict(self)
        meta["data_shape"] = list(self.data_shape)
        meta["class_names"] = list(self.class_names) if self.class_names is not None else None
        meta["column_names"] = list(self.column_names) if self.column_names is not None else None
        del meta["name"]  # the config holds it
        return meta

    @classmethod
    def from_meta(cls, name: str, meta: dict[str, Any]) -> DataInfo:
        """From stored metadata; runs written before class names were stored get those of the
        registered data set they were trained on."""
        names = meta.get("class_names")
        data_shape = meta.get("data_shape")
        if not data_shape:
            raise CheckpointError("the run's files lack the data shape; finish or retrain the run")
        columns = meta.get("column_names")
        return cls(name, tuple(data_shape), meta.get("value_kind", "unit"),
                   bool(meta.get("is_image", len(data_shape) == 3)),
                   tuple(names) if names is not None else class_names_of(name),
                   tuple(columns) if columns is not None else None)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; empty when the file is missing or not an object."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def write_json(path: Path, value: dict) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def read_history(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Run:
    """A trained (or training) run: its directory, resolved config, model, data description,
    history, results and latest evaluation.

    ``run.model`` is the VAE (an ``nn.Module`` in eval mode). For code written when
    ``vaekit.load`` returned the model itself, a Run also answers the model's attributes
    (``run.encode(x)``, ``vaekit.elbo(run, x)``) with a DeprecationWarning."""

    dir: Path
    config: RunConfig
    model: VAE
    data: DataInfo
    versions: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # metrics.jsonl, one record per epoch
    results: dict = field(default_factory=dict)  # results.json
    evaluation: dict = field(default_factory=dict)  # evaluation.json
    # split -> (x, labels, y): prepared, with what a conditional model is given (its labels, or
    # a --condition-columns run's standardized covariates; None for a model without one)
    prepared: dict = field(default_factory=dict, repr=False)

    @property
    def metrics(self) -> dict:
        """The test results overlaid with the latest evaluation (log p(x) & co.)."""
        return {**self.results, **self.evaluation}

    @property
    def info(self) -> dict:
        """The pre-Run ``model.info`` dict (value_kind, is_image, versions)."""
        return {"value_kind": self.data.value_kind, "is_image": self.data.is_image,
                "versions": self.versions}

    # -- data ------------------------------------------------------------------------------
    def split(self, name: str = "test", source: str | None = None,
              data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split ``name`` of the run's data set (or of ``source``), prepared as in training:
        binarized once with the split's fixed seed when the run binarizes, checked against
        the model's data shape and the likelihood's support. Returns ``(x, labels)``."""
        x, labels, _ = self._prepared(name, source, data_dir)
        return x, labels

    def condition(self, name: str = "test", source: str | None = None,
                  data_dir: str | None = None) -> torch.Tensor | None:
        """What the model is conditioned on in split ``name`` (of the run's data, or of
        ``source``): the class labels ``[N]`` of a class-conditional run, the covariates of a
        ``--condition-columns`` run standardized with its training mean and std ``[N, C]``
        (:func:`vaekit.conditional.standardize_covariates`), None for an unconditional one."""
        if self.model.condition_kind is None:
            return None
        y = self._prepared(name, source, data_dir)[2]
        if y is None:
            raise DataError(f"split '{name}' has no labels, and this model is conditioned on "
                            "them (MNIST, Fashion-MNIST, digits, image folders with class "
                            "sub-folders and CSV files with a label column have them)")
        return y

    def _prepared(self, name: str, source: str | None, data_dir: str | None):
        own = source is None and data_dir is None
        if own and name in self.prepared:
            return self.prepared[name]
        dc = self.config.data
        dataset = load_dataset(dc.name if source is None else source,
                               dc.data_dir if data_dir is None and source is None else data_dir,
                               val_fraction=dc.val_fraction, split_seed=dc.split_seed,
                               download=dc.download, column_types=dc.column_types,
                               condition_columns=dc.condition_columns)
        x, labels = dataset.split(name)
        check_data_shape(self.model, x, f"split '{name}' of {dataset.name}")
        x = prepare_split(x, name, dc.binarize, dc.split_seed, self.config.model.levels,
                          dataset.levels)
        self.model.decoder.check_support(x)
        y = labels  # what a conditional model is given: its labels, or its covariates
        if dc.condition_columns:
            y = standardize_covariates(dataset.conditions[name], dc.condition_mean,
                                       dc.condition_std)
        if own:
            self.prepared[name] = (x, labels, y)
        return x, labels, y

    # -- what a run can do -----------------------------------------------------------------
    def evaluate(self, *, split: str = "test", source: str | None = None,
                 data_dir: str | None = None, num_samples: int | None = None,
                 num_examples: int | None = None, spread: bool = False, batch_size: int = 1000,
                 seed: int = 0, progress: bool = False, distributed: bool = False,
                 save: bool | None = None, matmul_precision: str = "highest") -> dict:
        """ELBO and its terms, the importance-sampled log p(x) with K = ``num_samples`` and the
        latent diagnostics (:func:`vaekit.evaluation.evaluate_model`) on a split of the run's
        data (or of ``source``), only ``num_examples`` of it when given: the first ones, or with
        ``spread`` ones evenly spaced through the split (example floor(i N_split / N), i < N: a
        subset that samples every part of a split whose order is not random, like MNIST's test
        set, whose first half is the cleaner). The result says which (``examples``). ``save``
        (default: when it is the run's own test set) keeps the result as ``evaluation.json`` so
        the report shows it. ``matmul_precision``: of float32 matrix products
        (:func:`vaekit.precision.matmul_precision`; the result records it)."""
        num_samples = DEFAULT_NUM_SAMPLES if num_samples is None else num_samples
        if num_samples < 0:
            raise ConfigError("--num-samples must be 0 (skip log p(x)) or a positive K")
        if num_examples is not None and num_examples <= 0:
            raise ConfigError("--num-examples must be a positive number of examples")
        if spread and not num_examples:
            raise ConfigError("--spread picks --num-examples N examples through the split; "
                              "give --num-examples")
        x, _ = self.split(split, source, data_dir)
        y = self.condition(split, source, data_dir)
        examples = "all"
        if num_examples and num_examples < len(x):
            if spread:
                index = torch.arange(num_examples) * len(x) // num_examples
                examples = f"{num_examples} spread through {len(x)} (every {len(x) / num_examples:g}th)"
            else:
                index = torch.arange(num_examples)
                examples = f"first {num_examples} of {len(x)}"
            x, y = x[index], (y[index] if y is not None else None)
        if matmul_precision not in MATMUL_PRECISIONS:
            raise ConfigError(f"unknown matmul precision '{matmul_precision}' (valid: "
                              f"{', '.join(MATMUL_PRECISIONS)})")
        with matmul_precision_of(matmul_precision):
            result = {"split": split, **evaluate_model(
                self.model, x, y, num_samples=num_samples, batch_size=batch_size,
                is_image=self.data.is_image, seed=seed, progress=progress,
                distributed=distributed)}
        if matmul_precision != "highest":
            result["matmul_precision"] = matmul_precision
        if self.config.data.condition_columns:
            result["condition_columns"] = list(self.config.data.condition_columns)
        result["examples"] = examples
        own_test_set = source is None and split == "test"  # (a --data-dir of its own data set too)
        if own_test_set if save is None else save:
            self.evaluation = result
            write_json(self.dir / EVALUATION, result)
        return result

    @torch.no_grad()
    def latent_codes(self, split: str = "test", source: str | None = None,
                     data_dir: str | None = None,
                     *, num: int | None = None, num_samples: int = 0, batch_size: int = 1000,
                     layer: int | None = None) -> dict:
        """Posterior means E_q[z|x] ``[N, L]`` of a split (first ``num`` examples), with
        ``num_samples`` draws z ~ q(z|x) per example ``[N, S, L]`` when asked, and the labels
        when the data has them: ``{"mean", "samples"?, "labels"?}`` as numpy arrays. With
        several stochastic layers, of the layer ``layer`` (1 = next to x; None: the top). A
        conditional model's codes are those of q(z | x, y) with the split's labels (or
        covariates)."""
        where = self.model.layer_slice(layer)
        x, labels = self.split(split, source, data_dir)
        y = self.condition(split, source, data_dir)
        if num:
            x, labels = x[:num], (labels[:num] if labels is not None else None)
            y = y[:num] if y is not None else None
        means, draws = [], []
        for start in range(0, len(x), batch_size):
            bound = bound_to(self.model, rows(y, start, start + batch_size))  # q(z | x[, y])
            q_z = bound.encoder(x[start : start + batch_size].to(model_device(self.model)))
            means.append(posterior_mean(q_z)[..., where])
            if num_samples:
                draws.append(q_z.sample((num_samples,)).transpose(0, 1)[..., where])
        out = {"mean": torch.cat(means).numpy()}
        if num_samples:
            out["samples"] = torch.cat(draws).numpy()
        if labels is not None:
            out["labels"] = labels.numpy()
        return out

    def __getattr__(self, name: str):
        # only reached for names a Run does not have: the pre-Run API where load() gave the model
        if name.startswith("__") or name in ("model", "data", "config", "dir"):
            raise AttributeError(name)
        model = self.__dict__.get("model")
        if model is None or not hasattr(model, name):
            raise AttributeError(f"'Run' object has no attribute '{name}'")
        warnings.warn(f"vaekit.load() now returns a Run; use run.model.{name} (the model is "
                      "run.model)", DeprecationWarning, stacklevel=2)
        return getattr(model, name)


def save_weights(path: Path, model: VAE, config: RunConfig, data: DataInfo) -> None:
    """Writes the model's parameters with the resolved config and data description."""
    from .version import __version__

    meta = {"config": config.model_dump(mode="json"), **data.to_meta(),
            "versions": {"vaekit": __version__, "torch": torch.__version__}}
    save_tensors(path, dict(model.state_dict()), meta)


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """The :class:`Run` in ``run_dir``: its model rebuilt from the saved config with the saved
    weights (``model.safetensors``, or the checkpoint of an unfinished run), in eval mode on
    ``device``, and its records."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    weights, checkpoint = run_dir / WEIGHTS, run_dir / CHECKPOINT
    if weights.exists():
        state, meta = load_tensors(weights)
    elif checkpoint.exists():
        tensors, meta = load_tensors(checkpoint)
        state = unflatten_state(meta["state"], tensors)["model"]
    else:
        raise CheckpointError(
            f"{run_dir} is not a vaekit run directory (no {WEIGHTS} or {CHECKPOINT}); "
            "pass the --out directory of a `vaekit train` run"
        )
    try:
        config = config_from_dict(meta.get("config"))
    except ConfigError as err:
        raise CheckpointError(f"{run_dir}: config in the checkpoint is invalid ({err}); it may "
                              "come from another vaekit version") from None
    try:
        data = DataInfo.from_meta(config.data.name, meta)
    except CheckpointError as err:
        raise CheckpointError(f"{run_dir}: {err}") from None
    model = build_model(config.model, data.data_shape)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{run_dir}: weights do not match the saved config ({err})") from None
    return Run(run_dir, config, model.to(device).eval(), data, dict(meta.get("versions") or {}),
               read_history(run_dir), read_json(run_dir / RESULTS),
               read_json(run_dir / EVALUATION))


def evaluate(run: Run | str | Path, *, device: str = "auto", **options) -> dict:
    """:meth:`Run.evaluate` of a run, or of a run directory loaded on ``device`` (``auto``: CUDA
    when available, as in training). Under torchrun the batches are spread over the workers, each on
    the device of its rank (every rank gets the result; rank 0 alone writes
    ``evaluation.json``)."""
    with process_group(device) as group:
        if not isinstance(run, Run):
            run = load(run, device=group.device or resolve_device(device))
        if not group.is_main:
            options["save"] = False
        return run.evaluate(distributed=group.active, **options)


def check_data_shape(model: VAE, x: torch.Tensor, what: str = "data") -> None:
    if tuple(x.shape[1:]) != model.data_shape:
        raise DataError(
            f"{what} has examples of shape {tuple(x.shape[1:])} but the model was trained on "
            f"{model.data_shape}; use data like the training data"
        )
