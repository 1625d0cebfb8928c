"""Optimizers and learning-rate schedules.

A schedule normally follows the step count (``epochs`` x steps per epoch). With
``train.time_budget_minutes`` the same Keras schedule is fed the run's progress by the clock
(:class:`cnnexp.training.budget.TimeBudget`), so "the best model in 10 minutes" anneals fully on a
slow or busy machine too, where a step schedule would be cut off at a high learning rate.

Two schedules exist for studies whose pruner compares trials part-way: ``wsd`` (warm-up, stable,
decay: a fixed short warm-up, a constant rate, a linear cool-down to zero over the last 20% only;
Hägele et al., NeurIPS 2024) and ``linear`` (the same warm-up, then linear decay to zero over the
whole run; "Budgeted Training", Li et al., ICLR 2020). Their warm-up is a fixed number of epochs,
so every trial is past it at the same epoch: :func:`warmup_epochs` tells the pruner when that is.
"""

from __future__ import annotations

import keras

from cnnexp.config import TrainConfig

ONECYCLE_WARMUP = 0.2  # fraction of the run spent ramping the learning rate up
WSD_COOLDOWN = 0.2  # fraction of the run at the end over which wsd decays to zero (Hägele et al.)
Schedule = keras.optimizers.schedules.LearningRateSchedule


def warmup_epochs(cfg: TrainConfig) -> float:
    """Epochs a run spends ramping its rate up: no pruner should judge a trial before they are over."""
    if cfg.lr_schedule == "onecycle":
        return ONECYCLE_WARMUP * cfg.epochs
    if cfg.lr_schedule in ("wsd", "linear"):
        return min(cfg.warmup_epochs, cfg.epochs)
    return 0.0


@keras.saving.register_keras_serializable(package="cnnexp")
class WarmupStableDecay(Schedule):
    """Linear warm-up from 0 to ``peak``, constant, then linear decay to 0 over the last ``decay_steps``."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int, decay_steps: int) -> None:
        self.peak = float(peak)
        self.total_steps = max(1, int(total_steps))
        self.decay_steps = max(1, min(int(decay_steps), self.total_steps))
        self.warmup_steps = max(0, min(int(warmup_steps), self.total_steps - self.decay_steps))

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = (step + 1) / max(1, self.warmup_steps)  # step 0 already trains at a small, non-zero rate
        decay = (self.total_steps - step) / self.decay_steps
        return self.peak * keras.ops.clip(keras.ops.minimum(warm, decay), 0.0, 1.0)

    def get_config(self) -> dict:
        return {k: getattr(self, k) for k in ("peak", "warmup_steps", "total_steps", "decay_steps")}


def learning_rate(cfg: TrainConfig, steps_per_epoch: int) -> float | Schedule:
    """The constant rate or the per-step schedule the config asks for (plateau is a callback)."""
    total = cfg.epochs * steps_per_epoch
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total)
    if cfg.lr_schedule == "onecycle":
        # One-cycle shape (Smith; the fast CIFAR-10 records): a linear ramp from lr/10 to the peak over
        # the first 20% of steps, then cosine annealing to zero. Needs fewer epochs than a constant lr.
        warmup = max(1, int(ONECYCLE_WARMUP * total))
        return keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate / 10,
            decay_steps=max(1, total - warmup),
            warmup_target=cfg.learning_rate,
            warmup_steps=warmup,
        )
    if cfg.lr_schedule in ("wsd", "linear"):
        warmup = round(warmup_epochs(cfg) * steps_per_epoch)
        decay = WSD_COOLDOWN * total if cfg.lr_schedule == "wsd" else total - warmup
        return WarmupStableDecay(cfg.learning_rate, warmup, total, round(decay))
    return cfg.learning_rate


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr = learning_rate(cfg, steps_per_epoch)
    if cfg.time_budget_minutes and isinstance(lr, Schedule):
        lr = float(lr(0))  # a plain variable: TimeBudget sets it every batch
    # EMA: Keras keeps the average in the optimizer and writes it into the model when fit ends.
    ema = {"use_ema": cfg.ema_momentum > 0, "ema_momentum": cfg.ema_momentum or 0.99}
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay, **ema)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=True, **ema)
    return keras.optimizers.Adam(lr, **ema)
