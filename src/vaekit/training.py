"""The training loop: one explicit loop in named blocks (prepare, step, evaluate, checkpoint,
log), with exact resume.

A run directory holds ``config.json`` (the resolved config), ``model.safetensors`` (weights),
``checkpoint.safetensors`` (everything needed to resume), ``metrics.jsonl`` (one JSON object
per epoch) and pictures. Only rank 0 writes files, so the same loop runs under DDP."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import __version__
from .batches import TensorBatches
from .checkpoint import atomic_write_bytes, flatten_state, load_tensors, save_tensors, unflatten_state
from .config import RunConfig, resolve, save_config
from .data import Dataset, binarize_fixed, load_dataset
from .distributed import (all_ranks_agree, all_reduce_sum, describe_batch, per_rank_batch_size,
                          rank_and_world_size, rank_seed, wrap_for_training)
from .errors import CheckpointError, ConfigError, DataError, TrainingDiverged, TrainingInterrupted
from .evaluation import evaluate_elbo
from .interrupts import StopSignals, signal_name
from .model import VAE, build_model
from .objectives import ElboTerms, training_loss
from .precision import grad_scaler
from .board import EpochBoard
from .report import write_report
from .runs import save_weights, write_pictures

CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
MAX_BAD_STEPS = 20  # consecutive non-finite losses or gradients before training stops


@dataclass
class PreparedData:
    """Tensors ready for the loop: validation/test binarized once when binarization is on."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor | None
    dynamic_binarize: bool


def prepare_data(dataset: Dataset, config: RunConfig, model: VAE) -> PreparedData:
    """Applies the resolved binarization and checks every split against the likelihood's
    support (grey levels under a plain Bernoulli likelihood are refused)."""
    mode, seed = config.data.binarize, config.data.split_seed
    train, val, test = dataset.train, dataset.val, dataset.test
    if mode != "none":
        if dataset.value_kind == "real":
            raise DataError(
                f"--binarize {mode} needs data in [0, 1] but '{dataset.name}' has real values; "
                "use --binarize none with --likelihood gaussian"
            )
        val, test = binarize_fixed(val, seed + 1), binarize_fixed(test, seed + 2)
        if mode == "static":
            train = binarize_fixed(train, seed + 3)
    for split in (val, test) if mode == "dynamic" else (train, val, test):
        model.decoder.check_support(split)
    return PreparedData(train, val, test, dataset.test_labels, mode == "dynamic")


def dynamic_binarize(x: torch.Tensor) -> torch.Tensor:
    """A fresh draw x_b = [u < x] each time, u uniform on the 2^16 levels {j / 2^16}: so
    P(x_b = 1) = ceil(2^16 x) / 2^16, Bernoulli(x) to within 2^-16 (exact at 0 and 1; grey
    levels of 8-bit images k/255 are off by less than 1.6e-5).

    Written by hand for speed: torch's CPU generator (mt19937) runs on one thread and costs per
    draw, and ``rand_like`` takes one 32-bit draw per pixel (0.47 ms per 128 x 784 batch on a
    2-core CPU, about a tenth of a training step) while 64 random bits cover 4 pixels here
    (0.13 ms); ``torch.bernoulli`` is slower still. On other devices (a parallel generator)
    it is ``rand_like(x) < x``. Uses the global generator, so seeding and resuming from a saved
    random state reproduce the draws exactly."""
    if x.device.type != "cpu":
        return (torch.rand_like(x) < x).to(x.dtype)
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
    bits.random_(-(2**63), None)  # all 64 bits uniform (to=None: the whole int64 range)
    u = bits.view(torch.int16)[:n].view(x.shape)  # uniform on {-2^15, ..., 2^15 - 1}
    return (u < x.float() * 65536.0 - 32768.0).to(x.dtype)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available")
    return device


def make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam; the fused implementation when the device supports it (3x faster optimizer step
    measured on CPU, see benchmarks)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)


@dataclass
class EpochProgress:
    """Where the loop is inside the current epoch: batches consumed (taken or skipped), and the
    running sums of the ELBO terms over the examples of the steps taken, so that a checkpoint
    written mid-epoch resumes with the same epoch metrics as the uninterrupted run."""

    batch: int = 0
    seen: int = 0
    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(3))  # elbo, reconstruction, kl
    bad_in_a_row: int = 0  # consecutive skipped steps


def gradient_sum(model: nn.Module) -> torch.Tensor:
    """sum_i g_i over every entry of every parameter gradient, without a host sync. It is not
    finite iff some g_i is not (NaN and inf propagate; inf - inf is NaN), or the finite entries
    overflow float32, itself an explosion. Half the cost of the L2 norm (0.08 vs 0.18 ms on the
    784-400-20 MLP, about 1% of a CPU step; benchmarks/nonfinite_check.py)."""
    grads = [p.grad.sum() for p in model.parameters() if p.grad is not None]
    return torch.stack(grads).sum() if grads else torch.zeros(())


def exploding_term(model: VAE, x: torch.Tensor, loss_kwargs: dict) -> str:
    """Names the term of the ELBO that exploded on batch ``x``: "reconstruction" or "KL",
    whichever is not finite in value, else in gradient, else (each finite but their sum
    overflowing) the larger in value or gradient norm. Only called when training stops, so its
    extra backward passes cost nothing in the loop."""
    _loss, terms = training_loss(model, x, **loss_kwargs)
    named = {"reconstruction": terms.reconstruction, "KL": terms.kl}
    for name, term in named.items():
        if not bool(torch.isfinite(term).all()):
            return name
    params = [p for p in model.parameters() if p.requires_grad]
    size = {}
    for name, term in named.items():
        grads = [g for g in torch.autograd.grad(term.mean(), params, retain_graph=True,
                                                allow_unused=True) if g is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if not bool(torch.isfinite(norm)):
            return name
        size[name] = max(float(term.abs().max()), float(norm))
    return max(size, key=size.get)


def default_run_dir(config: RunConfig) -> Path:
    name = Path(config.data.name).stem if Path(config.data.name).exists() else config.data.name
    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


dist_rank_world = rank_and_world_size  # (rank, world size) of the process group, (0, 1) without


class Trainer:
    """Trains a VAE as ``config`` says, writing into ``run_dir``.

    ``Trainer(config, run_dir).fit()`` is the whole job; ``resume=True`` continues from the
    run directory's checkpoint exactly where the interrupted run stopped."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path | None = None,
        *,
        resume: bool = False,
        dataset: Dataset | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.rank, self.world_size = dist_rank_world()
        self.is_main = self.rank == 0
        self.log = log if self.is_main else (lambda _msg: None)
        self.progress = progress and self.is_main
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
        self._check_run_dir(resume)
        if resume and (self.run_dir / CHECKPOINT).exists():
            config = self._config_for_resume(config)
        elif resume:
            self.log(f"no checkpoint in {self.run_dir} yet; starting the run from the beginning")
        self.dataset = dataset or load_dataset(
            config.data.name, config.data.data_dir, val_fraction=config.data.val_fraction,
            split_seed=config.data.split_seed, download=config.data.download,
        )
        self.config = resolve(config, dataset_name=self.dataset.name,
                              value_kind=self.dataset.value_kind)
        tc = self.config.train
        if tc.objective != "elbo" and tc.num_samples < 2:
            self.log(f"note: --objective {tc.objective} with --num-samples 1 is the ELBO")
        self.device = resolve_device(tc.device)
        torch.manual_seed(tc.seed)
        self.model = build_model(self.config.model, self.dataset.data_shape).to(self.device)
        self.data = prepare_data(self.dataset, self.config, self.model)
        if self.config.model.standardize:
            loc, scale = self.data.train.mean(0), self.data.train.std(0)
            # constant columns keep their values: scale 1 instead of a division by zero
            self.model.set_data_scaling(loc, torch.where(scale > 1e-6, scale, torch.ones_like(scale)))
        self.train_x = self.data.train.to(self.device)
        if self.config.model.vamp_init_from_data and hasattr(self.model.prior, "init_from_data"):
            self.model.prior.init_from_data(self.train_x)  # (resume overwrites it below)
        if tc.batch_size > len(self.train_x):
            raise ConfigError(
                f"--batch-size {tc.batch_size} is larger than the training set "
                f"({len(self.train_x)} examples); use a smaller batch"
            )
        self.batches = TensorBatches(self.train_x, per_rank_batch_size(tc.batch_size, self.world_size),
                                     seed=tc.seed, rank=self.rank, world_size=self.world_size)
        self.optimizer = make_optimizer(self.model, tc.lr, self.device)
        self.epoch = 0  # completed epochs
        self.step = 0  # completed optimizer steps
        self.skipped_steps = 0
        self.in_epoch = EpochProgress()
        self.history: list[dict] = []
        self.resumed = False
        self.stop = StopSignals()  # entered by fit(); outside it, never requested
        if resume and (self.run_dir / CHECKPOINT).exists():
            self._load_checkpoint()
        self._prepare_parallel_step()

    def _prepare_parallel_step(self) -> None:
        """The loss module (inside DDP under a process group, autocast, compiled when asked),
        the fp16 loss scaler, and a distinct noise stream for every rank but rank 0."""
        tc = self.config.train
        # the loss is looked up in this module at call time (tests replace it to inject faults)
        self.loss_module = wrap_for_training(
            self.model, self.device, precision=tc.precision, compile=tc.compile,
            loss_fn=lambda model, x, **options: training_loss(model, x, **options))
        self.scaler = grad_scaler(self.device, tc.precision)
        # beta as an input of the compiled graph, updated in place: a float would be a constant
        # in it, and every new value during KL warm-up would compile the loss again
        self.beta_input = torch.zeros((), device=self.device) \
            if tc.compile and tc.objective == "elbo" else None
        if tc.compile:
            self._resolve_dispatch_before_compiling()
        if self.rank > 0:
            torch.manual_seed(rank_seed(tc.seed, self.rank, self.step))
        self.board = EpochBoard(self.run_dir, enabled=tc.tensorboard and self.is_main, log=self.log)

    def _resolve_dispatch_before_compiling(self) -> None:
        """One eager loss on two examples before the first compiled step. The first
        ``kl_divergence(q, p)`` of a pair of types looks the pair up in torch's KL registry
        with Python the compiler cannot trace, and that graph break split the compiled loss
        into three graphs (0.64x the speed of an unbroken one, measured on the MLP); once
        resolved it is a dictionary hit. The random state is restored, so the run draws the
        same numbers as it would without this call."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            training_loss(self.model, self.train_x[:2], **self._loss_kwargs())

    # -- resume --------------------------------------------------------------------------
    def _check_run_dir(self, resume: bool) -> None:
        """Refuses a run directory that is a file, or that already holds a run when not resuming
        (training there would overwrite its checkpoint)."""
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ConfigError(f"--out {self.run_dir} is a file; give a directory for the run")
        if not resume and (self.run_dir / CHECKPOINT).exists():
            raise ConfigError(f"{self.run_dir} already holds a run; pass --resume to continue it "
                              "or choose another --out")

    def _config_for_resume(self, config: RunConfig) -> RunConfig:
        """The run's saved config; only the number of epochs may be raised on resume."""
        _, meta = load_tensors(self.run_dir / CHECKPOINT)
        try:
            saved = RunConfig.model_validate(meta["config"])
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{self.run_dir / CHECKPOINT}: its config is missing or invalid "
                                  f"({' '.join(str(err).split())}); start a new run") from None
        if config.train.epochs is not None and config.train.epochs != saved.train.epochs:
            return saved.model_copy(update={"train": saved.train.model_copy(
                update={"epochs": config.train.epochs})})
        return saved

    def _load_checkpoint(self) -> None:
        tensors, meta = load_tensors(self.run_dir / CHECKPOINT)
        state = unflatten_state(meta["state"], tensors)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"]["torch"])
            self.epoch, self.step = int(meta["epoch"]), int(meta["step"])
            position = meta.get("in_epoch", {})
            self.in_epoch = EpochProgress(
                batch=int(position.get("batch", 0)), seen=int(position.get("seen", 0)),
                sums=state.get("in_epoch_sums", torch.zeros(3)).clone(),
                bad_in_a_row=int(position.get("bad_in_a_row", 0)))
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{self.run_dir / CHECKPOINT}: does not match the model "
                                  f"({' '.join(str(err).split())}); start a new run") from None
        self.skipped_steps = meta.get("skipped_steps", 0)
        self.history = meta.get("history", [])
        self.resumed = True
        where = f", batch {self.in_epoch.batch} of epoch {self.epoch + 1}" if self.in_epoch.batch else ""
        self.log(f"resumed from {self.run_dir / CHECKPOINT} at epoch {self.epoch}, step {self.step}{where}")

    def _save_checkpoint(self) -> None:
        """Writes everything needed to continue exactly from the current step, including the
        position within the epoch. A model with non-finite parameters is never saved over the
        last good checkpoint."""
        if not self.is_main:
            return
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise TrainingDiverged(
                f"training diverged: the parameters are no longer finite at step {self.step}; "
                f"lower --lr (last good checkpoint kept in {self.run_dir / CHECKPOINT})")
        tensors: dict[str, torch.Tensor] = {}
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "in_epoch_sums": self.in_epoch.sums,
        }
        skeleton = flatten_state(state, "state", tensors)
        meta = {
            "config": self.config.model_dump(mode="json"),
            "epoch": self.epoch,
            "step": self.step,
            "skipped_steps": self.skipped_steps,
            "in_epoch": {"batch": self.in_epoch.batch, "seen": self.in_epoch.seen,
                         "bad_in_a_row": self.in_epoch.bad_in_a_row},
            "history": self.history,
            "versions": {"vaekit": __version__, "torch": torch.__version__},
            "state": skeleton,
        }
        save_tensors(self.run_dir / CHECKPOINT, tensors, meta)

    # -- one epoch -----------------------------------------------------------------------
    def _beta(self) -> float:
        tc = self.config.train
        if tc.kl_warmup_epochs <= 0:
            return tc.beta
        warmup_steps = tc.kl_warmup_epochs * len(self.batches)
        return tc.beta * min(1.0, (self.step + 1) / warmup_steps)

    def _loss_kwargs(self) -> dict:
        tc = self.config.train
        beta = self._beta()
        if self.beta_input is not None:
            beta = self.beta_input.fill_(beta)
        return dict(objective=tc.objective, beta=beta, free_bits=tc.free_bits,
                    num_samples=tc.num_samples, gradient_estimator=tc.gradient_estimator)

    def _train_step(self, x: torch.Tensor) -> tuple[torch.Tensor, ElboTerms] | None:
        """One optimizer step on ``x``; None when the loss or a gradient is not finite, in which
        case the step is skipped (parameters and Adam moments untouched) and counted. One host
        sync per step checks both: loss + sum(g) is finite iff each is."""
        loss, terms = self.loss_module(x, **self._loss_kwargs())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # under DDP the gradients are all-reduced here
        # with fp16 loss scaling, inf gradients are the scaler's business (it skips and rescales)
        check = loss.detach() if self.scaler.is_enabled() else loss.detach() + gradient_sum(self.model)
        if not all_ranks_agree(torch.isfinite(check), self.device):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss, terms

    def _skipped(self, x: torch.Tensor) -> None:
        self.skipped_steps += 1
        self.in_epoch.bad_in_a_row += 1
        if self.in_epoch.bad_in_a_row >= MAX_BAD_STEPS:
            term = exploding_term(self.model, x, self._loss_kwargs())
            raise TrainingDiverged(
                f"training diverged: the {term} term (or its gradient) exploded, giving a "
                f"non-finite loss or gradient for "
                f"{self.in_epoch.bad_in_a_row} steps in a row after step {self.step}; lower --lr or "
                f"check the data (last good checkpoint kept in {self.run_dir / CHECKPOINT})")

    def _stop_requested(self) -> bool:
        """Whether a stop signal arrived (a hook for DDP, where all ranks must agree)."""
        return self.stop.requested

    def _interrupt(self) -> None:
        """Saves a checkpoint at the current step and stops with a message saying how to resume."""
        self._save_checkpoint()
        self._write_metrics()
        name = signal_name(self.stop.received)
        raise TrainingInterrupted(
            f"{name}: stopped at epoch {self.epoch + 1}, step {self.step}; checkpoint saved to "
            f"{self.run_dir / CHECKPOINT}; continue with: vaekit train --out {self.run_dir} --resume",
            self.stop.received)

    def _train_epoch(self) -> dict:
        """Trains on the rest of the current epoch (all of it unless resumed mid-epoch) and
        returns its mean train ELBO terms."""
        tc = self.config.train
        self.model.train()
        progress = self.in_epoch
        progress.sums = progress.sums.to(self.device)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self.batches), initial=progress.batch, leave=False,
                       desc=f"epoch {self.epoch + 1}/{tc.epochs}", dynamic_ncols=True)
        for x in self.batches.iterate(self.epoch, progress.batch):
            if self.data.dynamic_binarize:
                x = dynamic_binarize(x)
            result = self._train_step(x)
            progress.batch += 1
            if result is None:
                self._skipped(x)
            else:
                loss, terms = result
                self.step += 1
                progress.bad_in_a_row = 0
                with torch.no_grad():
                    progress.sums += torch.stack([terms.elbo.sum(), terms.reconstruction.sum(),
                                                  terms.kl.sum()])
                progress.seen += len(x)
                if tc.checkpoint_every_steps and self.step % tc.checkpoint_every_steps == 0:
                    self._save_checkpoint()
            if bar is not None:
                bar.update()
                if result is not None and self.step % 20 == 0:
                    bar.set_postfix(loss=f"{result[0].item():.2f}")
            if self._stop_requested():
                self._interrupt()
        if bar is not None:
            bar.close()
        totals = all_reduce_sum(torch.cat([progress.sums,
                                           torch.tensor([float(progress.seen)], device=self.device)]))
        sums, seen = totals[:3].cpu(), int(totals[3])  # over all ranks: full-data values
        sums = sums / max(seen, 1)
        return {"train_elbo": float(sums[0]), "train_reconstruction": float(sums[1]),
                "train_kl": float(sums[2])}

    # -- the whole job -------------------------------------------------------------------
    def fit(self) -> Path:
        tc = self.config.train
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.run_dir / "config.json")
            if not self.resumed:
                self.log(f"training on {self.dataset.name} {tuple(self.dataset.data_shape)}: "
                         f"{len(self.dataset.train)} train / {len(self.dataset.val)} val / "
                         f"{len(self.dataset.test)} test, likelihood {self.config.model.likelihood}, "
                         f"binarize {self.config.data.binarize}, device {self.device}")
            self.log(describe_batch(tc.batch_size, self.world_size, tc.lr)
                     + (f", precision {tc.precision}" if tc.precision != "fp32" else "")
                     + (", compiled" if tc.compile else ""))
        with self.stop:  # a stop signal after the last epoch lets the final outputs complete
            self._train_epochs()
            test = self._evaluate(self.data.test)  # every rank takes part; rank 0 writes
            if self.is_main:
                self._finish(test)
        return self.run_dir

    def _train_epochs(self) -> None:
        tc = self.config.train
        while self.epoch < tc.epochs:
            start = time.perf_counter()
            metrics = self._train_epoch()
            seconds = time.perf_counter() - start
            val = self._evaluate(self.data.val)
            self.epoch += 1
            self.in_epoch = EpochProgress(bad_in_a_row=self.in_epoch.bad_in_a_row)
            metrics = {"epoch": self.epoch, "step": self.step, **metrics,
                       "val_elbo": val["elbo"], "val_reconstruction": val["reconstruction"],
                       "val_kl": val["kl"], "beta": self._beta(), "seconds": seconds,
                       "images_per_second": len(self.train_x) / max(seconds, 1e-9),
                       "skipped_steps": self.skipped_steps}
            self.history.append(metrics)
            self.log(f"epoch {self.epoch:>3}/{tc.epochs}  train ELBO {metrics['train_elbo']:9.2f}  "
                     f"val ELBO {val['elbo']:9.2f}  (recon {val['reconstruction']:.2f}, "
                     f"KL {val['kl']:.2f})  {seconds:.1f}s")
            self._save_checkpoint()
            self._write_metrics()
            self.board.log_epoch(metrics, self.model, self.data.test, self.dataset.is_image)
            if self._stop_requested():
                self._interrupt()

    def _evaluate(self, x: torch.Tensor) -> dict:
        return evaluate_elbo(self.model, x, batch_size=self.config.train.eval_batch_size,
                             distributed=True)

    def _write_metrics(self) -> None:
        if self.is_main:
            lines = "".join(json.dumps(m) + "\n" for m in self.history)
            atomic_write_bytes(self.run_dir / METRICS, lines.encode())

    def _finish(self, test: dict) -> None:
        self.model.eval()
        save_weights(self.model, self.config, self.dataset, self.run_dir / "model.safetensors")
        results = {"split": "test", **test}
        atomic_write_bytes(self.run_dir / "results.json", (json.dumps(results, indent=2) + "\n").encode())
        if self.dataset.is_image:
            write_pictures(self.model, self.data.test, self.run_dir, seed=self.config.train.seed)
        self.log(f"test ELBO {test['elbo']:.2f} nats/example (reconstruction "
                 f"{test['reconstruction']:.2f}, KL {test['kl']:.2f}) on {test['num_examples']} examples")
        self.board.close()
        if self.config.train.report:
            write_report(self.run_dir, self.model, self.data.test, self.data.test_labels,
                         class_names=self.dataset.class_names, is_image=self.dataset.is_image,
                         history=self.history, seed=self.config.train.seed)
        self.log(f"results in {self.run_dir}/")


def train(config: RunConfig | None = None, run_dir: str | Path | None = None, **kwargs) -> Path:
    """Trains a VAE (defaults: the embedded digits) and returns its run directory."""
    return Trainer(config or RunConfig(), run_dir, **kwargs).fit()
