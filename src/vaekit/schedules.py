"""Learning-rate schedules, built on ``torch.optim.lr_scheduler`` and stepped once per epoch
(``plateau`` with the epoch's validation ELBO). Their state is saved in every checkpoint, so a
resumed run follows the same schedule.

``iwae`` is the schedule of Burda et al. (2016, section 5): 3^i passes over the data at
lr = 1e-3 * 10^(-i/7) for i = 0..7, 3,280 passes in all. With fewer epochs E every stage is
shrunk in proportion (stage i ends at epoch round(E * (3^0 + ... + 3^i) / 3280), each stage at
least one epoch long when E >= 8), and the learning rate is ``train.lr`` times 10^(-i/7), so
``--lr 1e-3`` gives the paper's values."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch.optim import lr_scheduler

IWAE_STAGES = 8  # i = 0..7
IWAE_TOTAL_PASSES = sum(3**i for i in range(IWAE_STAGES))  # 3,280


def iwae_stage_ends(epochs: int) -> list[int]:
    """The epoch at which each of the 8 stages of the IWAE schedule ends, scaled to ``epochs``
    (the paper's 1, 4, 13, ..., 3280 at ``epochs = 3280``). With 8 epochs or more every stage
    keeps at least one epoch (the short early stages would otherwise round away, and a short
    run would start at a lower learning rate than the paper's)."""
    ends, cumulative = [], 0
    for i in range(IWAE_STAGES):
        cumulative += 3**i
        end = round(epochs * cumulative / IWAE_TOTAL_PASSES)
        if epochs >= IWAE_STAGES:
            end = min(max(end, i + 1), epochs - (IWAE_STAGES - 1 - i))
        ends.append(max(0, min(end, epochs)))
    return ends


def iwae_factor(epochs: int) -> Callable[[int], float]:
    """The multiplier of the base learning rate in epoch ``e`` (0-based) of the IWAE schedule
    over ``epochs`` epochs: 10^(-i/7) in stage i."""
    ends = iwae_stage_ends(epochs)

    def factor(epoch: int) -> float:
        stage = next((i for i, end in enumerate(ends) if epoch < end), IWAE_STAGES - 1)
        return 10 ** (-stage / 7)

    return factor


def _constant(optimizer, train):
    return lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)


def _exponential(optimizer, train):
    return lr_scheduler.ExponentialLR(optimizer, gamma=train.lr_gamma)


def _cosine(optimizer, train):
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.epochs, eta_min=train.lr_min)


def _plateau(optimizer, train):
    # mode "max": it watches the validation ELBO, which should grow
    return lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=train.lr_factor,
                                          patience=train.lr_patience, min_lr=train.lr_min)


def _iwae(optimizer, train):
    return lr_scheduler.LambdaLR(optimizer, iwae_factor(train.epochs))


# config train.lr_schedule -> (optimizer, resolved TrainConfig) -> scheduler stepped per epoch
LR_SCHEDULES = {
    "constant": _constant,
    "exponential": _exponential,  # lr * lr_gamma^epoch
    "cosine": _cosine,  # from lr to lr_min over the run's epochs
    "plateau": _plateau,  # lr * lr_factor after lr_patience epochs without a better val ELBO
    "iwae": _iwae,  # Burda et al. 2016, scaled to the run's epochs
}


def make_scheduler(optimizer: torch.optim.Optimizer, train) -> object:
    """The scheduler ``train.lr_schedule`` names, for ``optimizer``."""
    return LR_SCHEDULES[train.lr_schedule](optimizer, train)


def step_scheduler(scheduler, val_elbo: float) -> None:
    """Advances the schedule by one epoch (``plateau`` looks at the validation ELBO)."""
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_elbo if math.isfinite(val_elbo) else -math.inf)
    else:
        scheduler.step()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def kl_weight(beta: float, warmup_steps: float, step: int) -> float:
    """The KL term's weight at optimizer step ``step`` (0-based) of a KL warm-up: rising
    linearly from beta / warmup_steps to ``beta`` over ``warmup_steps`` steps, then ``beta``
    (no warm-up when ``warmup_steps`` is 0)."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)
