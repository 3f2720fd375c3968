"""The training loop: ``fit`` runs epochs, an epoch runs steps, a step runs the loss of
:func:`vaekit.objectives.training_loss` and one optimizer update, with exact resume. It writes
the run directory's files (see :mod:`vaekit.run`) and calls the callbacks for the rest; only
rank 0 writes, so the same loop runs under DDP."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import RunConfig, save_config
from ..data import Dataset, dynamic_binarize, prepare_data
from ..distributed import (all_ranks_agree, all_reduce_sum, per_rank_batch_size, process_group,
                           rank_and_world_size, rank_seed)
from ..errors import ConfigError, TrainingDiverged, TrainingInterrupted
from ..evaluation import evaluate_elbo, log_likelihood
from ..families import build_model
from ..model import VAE
from ..objectives import ElboTerms
from ..precision import grad_scaler, matmul_precision
from ..run import CONFIG, METRICS, RESULTS, WEIGHTS, Run, save_weights, write_json
from ..schedules import current_lr, kl_weight, make_scheduler, step_scheduler
from ..storage import atomic_write_bytes
from ..version import __version__
from .callbacks import default_callbacks
from .checkpoint import (CHECKPOINT, EpochProgress, TrainingState, load_checkpoint, save_checkpoint,
                         saved_config)
from .interrupts import StopSignals, signal_name
from .launch import (check_run_dir, check_run_request, config_for_resume, default_run_dir,
                     resume_decision)
from .setup import data_info, describe_run, fit_to_training_data, load_run_dataset, resolved_run
from .step import (exploding_term, gradient_sum, make_optimizer, resolve_device,
                   resolve_kl_dispatch, wrap_for_training)

MAX_BAD_STEPS = 20  # consecutive non-finite losses or gradients before training stops


class Trainer:
    """Trains a VAE as ``config`` says, writing into ``run_dir``.

    ``Trainer(config, run_dir).fit()`` is the whole job; ``resume=True`` continues from the
    run directory's checkpoint exactly where the interrupted run stopped. Finer control:
    :meth:`run_epoch` (train, validate, record, checkpoint), :meth:`train_epoch` (the
    training part only), :meth:`train_step` (one optimizer update)."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path | None = None,
        *,
        resume: bool = False,
        dataset: Dataset | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
        callbacks: list | None = None,
    ) -> None:
        self.rank, self.world_size = rank_and_world_size()
        self.is_main = self.rank == 0
        self.log = log if self.is_main else (lambda _msg: None)
        self.progress = progress and self.is_main
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
        check_run_dir(self.run_dir, resume)
        checkpoint = self.run_dir / CHECKPOINT
        if resume and checkpoint.exists():
            config = config_for_resume(saved_config(checkpoint), config)
        elif resume:
            self.log(f"no checkpoint in {self.run_dir} yet; starting the run from the beginning")
        self.dataset = dataset or load_run_dataset(config)
        # the config resolved from the data set, and what the batches carry beside x (the
        # condition y the model family needs)
        self.config, self.condition = resolved_run(config, self.dataset)
        tc = self.config.train
        if tc.objective != "elbo" and tc.num_samples < 2:
            self.log(f"note: --objective {tc.objective} with --num-samples 1 is the ELBO")
        self.device = resolve_device(tc.device)
        torch.manual_seed(tc.seed)
        self.model = build_model(self.config.model, self.dataset.data_shape).to(self.device)
        self.data = prepare_data(self.dataset, self.config.data.binarize,
                                 self.config.data.split_seed, self.model.decoder.check_support,
                                 self.config.model.levels)
        if tc.batch_size > len(self.data.train):
            raise ConfigError(
                f"--batch-size {tc.batch_size} is larger than the training set "
                f"({len(self.data.train)} examples); use a smaller batch"
            )
        self.train_x = self.data.train.to(self.device)
        # (resume overwrites them below)
        fit_to_training_data(self.model, self.train_x, self.config.model, self.condition)
        # x with its y (if any), shuffled together
        self.batches = self.condition.batches(
            self.data.batch_source().to(self.device),
            per_rank_batch_size(tc.batch_size, self.world_size), seed=tc.seed, rank=self.rank,
            world_size=self.world_size)
        self.optimizer = make_optimizer(self.model, tc.lr, self.device, betas=tc.adam_betas,
                                        eps=tc.adam_eps)
        self.scheduler = make_scheduler(self.optimizer, tc)
        # the weights that are evaluated and saved: an exponential moving average when asked
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema),
                                 use_buffers=True) if tc.ema else None
        self.best_weights: dict | None = None  # of the evaluated model at the best epoch
        self.state = TrainingState()
        self.resumed = resume and checkpoint.exists()
        if self.resumed:
            self._load_checkpoint()
        self.callbacks = default_callbacks(self.config) if callbacks is None else list(callbacks)
        self.stop = StopSignals()  # entered by fit(); outside it, never requested
        # the loss module: the family's training loss inside DDP under a process group,
        # autocast, compiled
        self.loss = wrap_for_training(self.model, self.device, precision=tc.precision,
                                      compile=tc.compile)
        self.scaler = grad_scaler(self.device, tc.precision)
        # beta as an input of the compiled graph, updated in place: a float would be a constant
        # in it, and every new value during KL warm-up would compile the loss again
        self.beta_input = torch.zeros((), device=self.device) \
            if tc.compile and tc.objective == "elbo" else None
        if tc.compile:
            x, y = next(self.batches.pairs(0, 0, 1))
            resolve_kl_dispatch(self.model, x[:2], None if y is None else y[:2],
                                self._loss_options(), self.device)
        if self.rank > 0:
            torch.manual_seed(rank_seed(tc.seed, self.rank, self.step))

    # the loop's counters, read-only views of self.state
    epoch = property(lambda self: self.state.epoch, doc="completed epochs")
    step = property(lambda self: self.state.step, doc="completed optimizer steps")
    skipped_steps = property(lambda self: self.state.skipped_steps,
                             doc="steps skipped for a non-finite loss or gradient")
    history = property(lambda self: self.state.history, doc="one metrics record per epoch")

    @property
    def eval_model(self) -> VAE:
        """The model that is validated, tested and saved: the weight average with ``--ema``."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def stopped_early(self) -> bool:
        patience = self.config.train.early_stopping
        return bool(patience) and self.state.epochs_since_best >= patience

    data_info = property(lambda self: data_info(self.config, self.dataset),
                         doc="what the run's files record of its data")

    # -- the whole job ---------------------------------------------------------------------
    def fit(self) -> Path:
        """Trains the remaining epochs, evaluates the test set and writes the run's files."""
        tc = self.config.train
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.run_dir / CONFIG)
            self.condition.write(self.run_dir)
            for line in describe_run(self.config, self.dataset, self.device, self.world_size,
                                     resumed=self.resumed):
                self.log(line)
        # a stop signal after the last epoch lets the final outputs complete
        with self.stop, matmul_precision(tc.matmul_precision):
            while self.epoch < tc.epochs and not self.stopped_early:
                self.run_epoch()
            if self.best_weights is not None:  # early stopping: the best epoch's weights
                self.eval_model.load_state_dict(self.best_weights)
            # every rank takes part; rank 0 writes
            test = self.evaluate(self.data.test, self.condition.y["test"])
            if self.is_main:
                self._finish(test)
        return self.run_dir

    def run_epoch(self) -> dict:
        """Trains the rest of the current epoch, validates, records the epoch in
        ``metrics.jsonl``, writes a checkpoint and returns the epoch's record."""
        start = time.perf_counter()
        train = self.train_epoch()
        seconds = time.perf_counter() - start
        val = self.evaluate(self.data.val, self.condition.y["val"])
        metrics = {"epoch": self.epoch, "step": self.step, **train,
                   "val_elbo": val["elbo"], "val_reconstruction": val["reconstruction"],
                   "val_kl": val["kl"], "beta": self._beta(), "lr": current_lr(self.optimizer),
                   "seconds": seconds, "images_per_second": len(self.train_x) / max(seconds, 1e-9),
                   "skipped_steps": self.skipped_steps,
                   **{f"val_{k}": v for k, v in val.items() if k == "classification_error"}}
        step_scheduler(self.scheduler, val["elbo"])
        if self.config.train.early_stopping:
            metrics.update(self._track_best(val["elbo"]))
        self.state.history.append(metrics)
        self.log(f"epoch {self.epoch:>3}/{self.config.train.epochs}  train ELBO "
                 f"{metrics['train_elbo']:9.2f}  val ELBO {val['elbo']:9.2f}  (recon "
                 f"{val['reconstruction']:.2f}, KL {val['kl']:.2f})  {seconds:.1f}s")
        self.save_checkpoint()
        self._write_metrics()
        if self.is_main:
            for callback in self.callbacks:
                getattr(callback, "on_epoch_end", lambda *_: None)(self, metrics)
        if self.stop.requested:
            self._interrupt()
        return metrics

    def train_epoch(self, num_batches: int | None = None) -> dict:
        """Trains on the next ``num_batches`` batches of the current epoch (all that remain by
        default) and returns the epoch's mean train ELBO terms so far; when the epoch's last
        batch is done the epoch counter advances (validation and records: :meth:`run_epoch`)."""
        tc = self.config.train
        self.model.train()
        progress = self.state.progress
        progress.sums = progress.sums.to(self.device)
        last = len(self.batches) if num_batches is None else min(len(self.batches),
                                                                 progress.batch + num_batches)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(self.batches), initial=progress.batch, leave=False,
                       desc=f"epoch {self.epoch + 1}/{tc.epochs}", dynamic_ncols=True)
        for x, y in self.batches.pairs(self.epoch, progress.batch, last):
            # (semi-supervised: followed by a batch of the labelled examples)
            x, y = self.condition.with_extra(self.batches, x, y, self.step)
            if self.data.dynamic_binarize:
                x = dynamic_binarize(x)
            elif self.data.train_scale is not None:
                x = self.data.draw_features(x)
            terms = self.train_step(x, y)
            if bar is not None:
                bar.update()
                if terms is not None and self.step % 20 == 0:
                    bar.set_postfix(elbo=f"{terms.elbo.mean().item():.2f}")
            if self.stop.requested:
                self._interrupt()
        if bar is not None:
            bar.close()
        totals = all_reduce_sum(torch.cat([progress.sums,
                                           torch.tensor([float(progress.seen)], device=self.device)]))
        sums = totals[:3].cpu() / max(int(totals[3]), 1)  # over all ranks: full-data values
        if progress.batch == len(self.batches):
            self.state.epoch += 1
            self.state.progress = EpochProgress(bad_in_a_row=progress.bad_in_a_row)
        return {"train_elbo": float(sums[0]), "train_reconstruction": float(sums[1]),
                "train_kl": float(sums[2])}

    def train_step(self, x: torch.Tensor, y: torch.Tensor | None = None) -> ElboTerms | None:
        """One optimizer step on the batch ``x``: loss = :func:`~vaekit.objectives.training_loss`,
        backward (gradients all-reduced under DDP), update. Returns the batch's ELBO terms, or
        None when the loss or a gradient is not finite: the step is then skipped (parameters
        and Adam moments untouched) and counted. One host sync per step checks both: loss +
        sum(g) is finite iff each is. ``y``: the batch's condition (labels, covariates) for a
        model family that has one."""
        progress = self.state.progress
        progress.batch += 1
        loss, terms = self.loss(x, y, **self._loss_options())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        # with fp16 loss scaling, inf gradients are the scaler's business (it skips and rescales)
        check = loss.detach() if self.scaler.is_enabled() else loss.detach() + gradient_sum(self.model)
        if not all_ranks_agree(torch.isfinite(check), self.device):
            self.optimizer.zero_grad(set_to_none=True)
            self._skipped(x, y)
            return None
        if self.config.train.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.state.step += 1
        progress.bad_in_a_row = 0
        with torch.no_grad():
            progress.sums += torch.stack([terms.elbo.sum(), terms.reconstruction.sum(),
                                          terms.kl.sum()])
        progress.seen += len(x)
        every = self.config.train.checkpoint_every_steps
        if every and self.step % every == 0:
            self.save_checkpoint()
        return terms

    def evaluate(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict:
        """Mean ELBO terms of ``x`` given its condition ``y`` (:func:`vaekit.evaluation.
        evaluate_elbo`, batches spread over the ranks) and the family's extras (M2's U(x))."""
        size = self.config.train.eval_batch_size
        result = evaluate_elbo(self.eval_model, x, y, batch_size=size, distributed=True)
        return self.eval_model.evaluation_extras(result, x, y, batch_size=size, seed=0)

    def _track_best(self, val_elbo: float) -> dict:
        """Early stopping's bookkeeping after an epoch: the validation bound (the ELBO, or
        IWAE_K with ``early_stopping_samples`` K > 1), and the weights when it is the best."""
        tc, state = self.config.train, self.state
        bound = val_elbo
        if tc.early_stopping_samples > 1:
            bound = float(log_likelihood(self.eval_model, self.data.val, tc.early_stopping_samples,
                                         self.condition.y["val"], seed=tc.seed).mean())
        if bound > state.best_value:
            state.best_value, state.best_epoch, state.epochs_since_best = bound, self.epoch, 0
            self.best_weights = {k: v.detach().clone()
                                 for k, v in self.eval_model.state_dict().items()}
        else:
            state.epochs_since_best += 1
        return {"val_bound": bound, "best_epoch": state.best_epoch}

    # -- loss options --------------------------------------------------------------------
    def _beta(self) -> float:
        tc = self.config.train
        return kl_weight(tc.beta, tc.kl_warmup_epochs * len(self.batches), self.step)

    def _loss_options(self) -> dict:
        tc = self.config.train
        beta = self._beta()
        if self.beta_input is not None:
            beta = self.beta_input.fill_(beta)
        return dict(objective=tc.objective, beta=beta, free_bits=tc.free_bits,
                    num_samples=tc.num_samples, gradient_estimator=tc.gradient_estimator,
                    **self.condition.loss_options)

    # -- failures and stops --------------------------------------------------------------
    def _skipped(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        self.state.skipped_steps += 1
        progress = self.state.progress
        progress.bad_in_a_row += 1
        if progress.bad_in_a_row >= MAX_BAD_STEPS:
            term = exploding_term(self.model, x, y, self._loss_options())
            raise TrainingDiverged(
                f"training diverged: the {term} term (or its gradient) exploded, giving a "
                f"non-finite loss or gradient for {progress.bad_in_a_row} steps in a row after "
                f"step {self.step}; lower --lr or check the data (last good checkpoint "
                f"kept in {self.run_dir / CHECKPOINT})")

    def _interrupt(self) -> None:
        """Saves a checkpoint at the current step and stops with a message saying how to resume."""
        self.save_checkpoint()
        self._write_metrics()
        name = signal_name(self.stop.received)
        raise TrainingInterrupted(
            f"{name}: stopped at epoch {self.epoch + 1}, step {self.step}; checkpoint saved "
            f"to {self.run_dir / CHECKPOINT}; continue with: vaekit train --out {self.run_dir} "
            "--resume", self.stop.received)

    # -- files ---------------------------------------------------------------------------
    def _load_checkpoint(self) -> None:
        self.state, parts = load_checkpoint(self.run_dir / CHECKPOINT, self.model, self.optimizer,
                                            {"scheduler": self.scheduler, "ema": self.ema})
        self.best_weights = parts.get("best_weights")
        batch = self.state.progress.batch
        where = f", batch {batch} of epoch {self.epoch + 1}" if batch else ""
        self.log(f"resumed from {self.run_dir / CHECKPOINT} at epoch {self.epoch}, step "
                 f"{self.step}{where}")

    def save_checkpoint(self) -> None:
        """Writes everything needed to continue exactly from the current step (rank 0 only).
        A model with non-finite parameters is never saved over the last good checkpoint."""
        if not self.is_main:
            return
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise TrainingDiverged(
                f"training diverged: the parameters are no longer finite at step "
                f"{self.step}; lower --lr (last good checkpoint kept in "
                f"{self.run_dir / CHECKPOINT})")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        parts = {"scheduler": self.scheduler.state_dict(), "best_weights": self.best_weights,
                 "ema": self.ema.state_dict() if self.ema is not None else None}
        save_checkpoint(self.run_dir / CHECKPOINT, self.model, self.optimizer, self.state,
                        self.config, self.data_info.to_meta(), parts)

    def _write_metrics(self) -> None:
        if self.is_main:
            lines = "".join(json.dumps(m) + "\n" for m in self.history)
            atomic_write_bytes(self.run_dir / METRICS, lines.encode())

    def _finish(self, test: dict) -> None:
        model = self.eval_model.eval()
        save_weights(self.run_dir / WEIGHTS, model, self.config, self.data_info)
        results = {"split": "test", **test}
        if self.config.train.early_stopping:
            results.update(best_epoch=self.state.best_epoch, stopped_early=self.stopped_early)
        write_json(self.run_dir / RESULTS, results)
        self.log(f"test ELBO {test['elbo']:.2f} nats/example (reconstruction "
                 f"{test['reconstruction']:.2f}, KL {test['kl']:.2f}) on {test['num_examples']} examples")
        run = Run(self.run_dir, self.config, model, self.data_info,
                  {"vaekit": __version__, "torch": torch.__version__}, self.history, results,
                  prepared={"test": (self.data.test, self.data.test_labels,
                                     self.condition.y["test"])})
        for callback in self.callbacks:
            getattr(callback, "on_fit_end", lambda *_: None)(self, run)
        self.log(f"results in {self.run_dir}/")


def train(config: RunConfig | None = None, run_dir: str | Path | None = None, *,
          resume: bool = False, progress: bool = True, log: Callable[[str], None] = print,
          **options) -> Path:
    """Trains a VAE (defaults: the embedded digits) and returns its run directory.

    Under torchrun every worker joins the job's process group, and a checkpoint in ``run_dir``
    means the job was restarted (or launched again): every worker continues it. Other keywords
    (``dataset``, ``callbacks``) go to :class:`Trainer`."""
    config = config or RunConfig()
    check_run_request(run_dir, resume)
    with process_group(config.train.device) as group:
        resume = resume_decision(run_dir, resume, group, log=lambda m: print(m, flush=True))
        return Trainer(config, run_dir, resume=resume, progress=progress, log=log,
                       **options).fit()

