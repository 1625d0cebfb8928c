"""A wall-clock budget for one fit: how many epochs fit in it here, and a clock that ends the
learning-rate schedule exactly when the budget ends.

Given ``train.time_budget_minutes`` and no ``train.epochs``, :func:`plan_budget` times a few
training steps of the real model on the real input pipeline (weights and optimizer state are put
back afterwards) and sizes the run from them: the planned epochs are what fits at the measured
speed. Speed on a shared CPU swings, so fit may run up to :data:`EPOCH_HEADROOM` times the plan,
and :class:`TimeBudget` ends it by the clock, with the schedule following the clock: the rate
reaches its end when the budget does, on a fast or a slow machine. With an explicit
``train.epochs`` the budget is only a cap, and the schedule follows steps or time, whichever runs
out first. "Budgeted Training" (Li, Yumer and Ramanan, ICLR 2020) is the case for annealing to the
budget rather than to an epoch count.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import keras
import numpy as np

from cnnexp.data.pipeline import make_dataset

PROBE_WARMUP = 3  # untimed steps first: graph tracing, the input pipeline's first batches
PROBE_STEPS = 12  # timed steps
# fit's epoch limit over the plan: room for the machine running faster than its first steps (speed
# swings 2x on a shared CPU; at 1.5x a 1-minute run planned 2 epochs and stopped at 3, 83% of its budget).
EPOCH_HEADROOM = 2.0
INFERENCE_SPEEDUP = 3.0  # a forward pass costs about a third of a training step (no backward pass)
Schedule = keras.optimizers.schedules.LearningRateSchedule


@dataclass(frozen=True)
class BudgetPlan:
    seconds: float  # the whole budget
    step_seconds: float  # one training step, measured
    val_seconds: float  # one validation pass, estimated from the step time
    steps_per_epoch: int
    epochs: int  # what fits at the measured speed
    max_epochs: int  # fit's limit; the clock normally ends the run first

    @property
    def epoch_seconds(self) -> float:
        return self.steps_per_epoch * self.step_seconds + self.val_seconds

    def describe(self) -> str:
        return (
            f"time budget {self.seconds / 60:g} min: about {self.epochs} epochs at {self.epoch_seconds:.1f} s each "
            f"(measured over {PROBE_STEPS} steps); the learning rate anneals by the clock"
        )

    def params(self) -> dict[str, float]:
        return {"budget.planned_epochs": self.epochs, "budget.step_seconds": round(self.step_seconds, 4)}


def plan_budget(
    model: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    batch_size: int,
    augmenter: keras.Layer | None,
    val_images: int,
    seconds: float,
    elapsed: float = 0.0,
) -> BudgetPlan:
    """Times training steps of ``model`` (left as it was) and plans epochs into ``seconds - elapsed``."""
    step = time_steps(model, x_train, y_train, batch_size, augmenter)
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    val = validation_seconds(val_images, batch_size, step)
    epochs = max(1, int((seconds - elapsed) / (steps_per_epoch * step + val)))
    return BudgetPlan(seconds, step, val, steps_per_epoch, epochs, max(epochs + 1, math.ceil(epochs * EPOCH_HEADROOM)))


def validation_seconds(val_images: int, batch_size: int, step_seconds: float) -> float:
    """One validation pass, estimated from a training step: forward passes only."""
    return math.ceil(val_images / batch_size) * step_seconds / INFERENCE_SPEEDUP


def time_steps(
    model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int, augmenter, steps: int = PROBE_STEPS
) -> float:
    """Median seconds of one training step of ``model``, whose weights and optimizer state are put back."""
    n = min(len(y), (PROBE_WARMUP + steps) * batch_size)
    # Its own small dataset, read to the end: a partly read cache() would be discarded with a warning.
    batches = list(make_dataset(x[:n], y[:n], batch_size, training=True, augmenter=augmenter))
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    saved = [v.numpy() for v in model.weights], [v.numpy() for v in optimizer.variables]
    times = []
    for i, (xb, yb) in enumerate(batches * (1 + (PROBE_WARMUP + steps) // len(batches))):
        if i == PROBE_WARMUP + steps:
            break
        began = time.perf_counter()
        model.train_on_batch(xb, yb)
        if i >= PROBE_WARMUP:
            times.append(time.perf_counter() - began)
    for variables, values in zip((model.weights, optimizer.variables), saved, strict=True):
        for v, value in zip(variables, values, strict=True):
            v.assign(value)
    return float(np.median(times))


class TimeBudget(keras.callbacks.Callback):
    """Stops training when the budget is spent and drives the schedule by max(time, step) progress.

    ``started`` is when the budget's clock started (before any planning); ``reserve`` seconds are
    left at the end for the last validation pass, so the run ends within the budget.
    """

    def __init__(
        self,
        minutes: float,
        schedule: float | Schedule,
        total_steps: int,
        started: float | None = None,
        reserve: float = 0.0,
    ) -> None:
        super().__init__()
        self.seconds = max(1e-3, minutes * 60 - reserve)
        self.schedule = schedule if isinstance(schedule, Schedule) else None
        self.total_steps = total_steps
        self.started = started
        self.steps = 0
        self.stopped_by_time = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start = time.perf_counter() if self.started is None else self.started

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def progress(self) -> float:
        return min(1.0, max(self.elapsed() / self.seconds, self.steps / self.total_steps))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self.schedule is not None:
            self.model.optimizer.learning_rate = float(self.schedule(self.progress() * self.total_steps))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps += 1
        if self.elapsed() >= self.seconds:
            self.stopped_by_time = self.model.stop_training = True
