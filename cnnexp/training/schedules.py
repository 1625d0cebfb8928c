"""Optimizers and learning-rate schedules, by step or by wall-clock time.

A schedule normally follows the step count (``epochs`` x steps per epoch). With
``train.time_budget_minutes`` it follows whichever runs out first, steps or time: the
:class:`TimeBudget` callback feeds the same Keras schedule the run's progress fraction each batch
and stops training when the time is up. "The best model in 10 minutes" then anneals fully on a
slow or busy machine too, where a step schedule would be cut off at a high learning rate.

Two schedules exist for studies whose pruner compares trials part-way: ``wsd`` (warm-up, stable,
decay: a fixed short warm-up, a constant rate, a linear cool-down to zero over the last 20% only;
Hägele et al., NeurIPS 2024) and ``linear`` (the same warm-up, then linear decay to zero over the
whole run; "Budgeted Training", Li et al., ICLR 2020). Their warm-up is a fixed number of epochs,
so every trial is past it at the same epoch: :func:`warmup_epochs` tells the pruner when that is.
"""

from __future__ import annotations

import time

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
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=True)
    return keras.optimizers.Adam(lr)


class TimeBudget(keras.callbacks.Callback):
    """Stops training after ``minutes`` of fit and drives the schedule by max(time, step) progress."""

    def __init__(self, minutes: float, schedule: float | Schedule, total_steps: int) -> None:
        super().__init__()
        self.seconds = minutes * 60
        self.schedule = schedule if isinstance(schedule, Schedule) else None
        self.total_steps = total_steps
        self.steps = 0
        self.stopped_by_time = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def progress(self) -> float:
        return min(1.0, max((time.perf_counter() - self.start) / self.seconds, self.steps / self.total_steps))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.schedule is not None:
            self.model.optimizer.learning_rate = float(self.schedule(self.progress() * self.total_steps))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps += 1
        if time.perf_counter() - self.start >= self.seconds:
            self.stopped_by_time = self.model.stop_training = True
