"""Optimizers and learning-rate schedules, by step or by wall-clock time.

A schedule normally follows the step count (``epochs`` x steps per epoch). With
``train.time_budget_minutes`` it follows whichever runs out first, steps or time: the
:class:`TimeBudget` callback feeds the same Keras schedule the run's progress fraction each batch
and stops training when the time is up. "The best model in 10 minutes" then anneals fully on a
slow or busy machine too, where a step schedule would be cut off at a high learning rate.
"""

from __future__ import annotations

import time

import keras

from cnnexp.config import TrainConfig

ONECYCLE_WARMUP = 0.2  # fraction of the run spent ramping the learning rate up
Schedule = keras.optimizers.schedules.LearningRateSchedule


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
