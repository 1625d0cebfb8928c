"""Tracked training: one config in, one MLflow run out (metrics, artifacts, model).

The run's life reads top to bottom in :func:`train`: seed, load and split the data, build and
compile the model, fit under MLflow autologging, evaluate on the test set, log our own artifacts.
Tuning reuses the same function for its trials (nested runs, no test set, no model).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import keras
import mlflow
import tensorflow as tf

import cnnexp
from cnnexp.analysis import figures as plots
from cnnexp.analysis.diagnose import analyze
from cnnexp.analysis.evaluate import evaluate
from cnnexp.analysis.files import log_analysis
from cnnexp.config import ANNEALING_SCHEDULES, ExperimentConfig, TrainConfig
from cnnexp.data.pipeline import build_augmenter, make_dataset
from cnnexp.data.sources import load_dataset
from cnnexp.data.split import Split, split_dataset
from cnnexp.errors import ConfigError, TrainingDiverged
from cnnexp.models.cnn import build_models
from cnnexp.models.init import initialise
from cnnexp.serving.pyfunc import log_image_model
from cnnexp.tracking import tags
from cnnexp.tracking.record import CONFIG_ARTIFACT
from cnnexp.tracking.runs import git_commit, tracked_run, use_experiment
from cnnexp.training.budget import BudgetPlan, TimeBudget, plan_budget
from cnnexp.training.inputs import log_split_inputs
from cnnexp.training.interrupts import interrupts_between_batches
from cnnexp.training.schedules import learning_rate, make_optimizer

log = logging.getLogger(__name__)

CROSSENTROPY = "crossentropy"  # per-epoch plain cross-entropy: history keys crossentropy, val_crossentropy


@dataclass
class TrainResult:
    run_id: str
    model: keras.Model
    history: dict[str, list[float]]
    split: Split
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Fitted:
    model: keras.Model
    history: dict[str, list[float]]
    seconds: float  # wall time of fit, planning included
    plan: BudgetPlan | None = None  # how a time budget was sized, when the epochs came from it


class _RaiseOnNaN(keras.callbacks.Callback):
    """Keras' TerminateOnNaN stops quietly; a diverged run must fail loudly, with the epoch."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(f"loss became {loss} at epoch {epoch + 1}; lower train.learning_rate")


def set_seeds(cfg: TrainConfig) -> None:
    keras.utils.set_random_seed(cfg.seed)  # python, numpy and backend generators
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()


def compile_model(model: keras.Model, cfg: TrainConfig, steps_per_epoch: int) -> None:
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        # Sparse labels stay ints; label smoothing needs one-hot, so it is applied on the fly.
        loss=_loss(cfg.label_smoothing),
        # Plain cross-entropy next to the (smoothed) loss: val_crossentropy is on test_loss's scale.
        metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy(name=CROSSENTROPY)],
    )


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Layers built inside compute in ``name`` (e.g. mixed_bfloat16); Keras' global policy is restored."""
    saved = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(saved)


def _loss(label_smoothing: float) -> keras.losses.Loss:
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy()
    return _SmoothedSparseCrossentropy(label_smoothing)


@keras.saving.register_keras_serializable(package="cnnexp")
class _SmoothedSparseCrossentropy(keras.losses.Loss):
    def __init__(self, label_smoothing: float = 0.0, name: str = "smoothed_sparse_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self._inner = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)

    def call(self, y_true, y_pred):
        depth = keras.ops.shape(y_pred)[-1]
        one_hot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), depth)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def make_callbacks(
    cfg: TrainConfig, steps_per_epoch: int, plan: BudgetPlan | None = None, started: float | None = None
) -> list[keras.callbacks.Callback]:
    """The run's callbacks; ``plan`` and ``started`` (the budget clock's start) come from :func:`fit`."""
    callbacks: list[keras.callbacks.Callback] = [_RaiseOnNaN()]
    if cfg.ema_momentum:  # validation sees the averaged weights; fit's end writes them into the model
        callbacks.append(keras.callbacks.SwapEMAWeights())
    if cfg.time_budget_minutes:
        total = cfg.epochs * steps_per_epoch
        reserve = plan.val_seconds if plan else 0.0  # the last validation pass ends inside the budget
        schedule = learning_rate(cfg, steps_per_epoch)
        callbacks.append(TimeBudget(cfg.time_budget_minutes, schedule, total, started, reserve))
    # A planned budget anneals by the clock: stopping early would leave it unused at a high rate.
    if cfg.early_stopping_patience and plan is None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=cfg.early_stopping_patience,
                # Restoring would put back raw weights over the average that fit's end writes in.
                restore_best_weights=not cfg.ema_momentum,
                # An annealing schedule does most of its work late: stopping at a plateau in the
                # high-rate first half would throw that away, so the first half is not judged.
                start_from_epoch=cfg.epochs // 2 if cfg.lr_schedule in ANNEALING_SCHEDULES else 0,
            )
        )
    if cfg.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1))
    return callbacks


def run_tags(cfg: ExperimentConfig, split: Split) -> dict[str, str]:
    return {
        tags.DATASET: cfg.data.dataset,
        tags.SEED: str(cfg.train.seed),
        tags.SPLIT_HASH: split.split_hash,
        tags.DATA_HASH: split.data_hash,
        tags.GIT_COMMIT: git_commit(),
        tags.VERSION: cnnexp.__version__,
    }


def _refuse_autolog_clash(run: mlflow.ActiveRun, cfg: TrainConfig) -> None:
    """Autolog logs fit's own ``epochs`` and ``batch_size``. Another value already on the run (say
    ``mlflow run -P epochs=``) would be refused by MLflow, and autolog would then log no per-epoch metrics."""
    for name, value in (("epochs", cfg.epochs), ("batch_size", cfg.batch_size)):
        logged = run.data.params.get(name)
        if logged is not None and value is not None and logged != str(value):
            raise ConfigError(
                f"run {run.info.run_id} already has param {name}={logged!r} but trains with train.{name}={value}: "
                f"give {name} as the whole number {value}, or leave it out so the config's value is logged"
            )


def fit(cfg: ExperimentConfig, split: Split, extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> Fitted:
    """Build, compile and fit one model on the split's train part, validating on its val part.

    With a time budget and no epoch count, the epochs come from the measured speed (training/budget.py).
    """
    started = time.perf_counter()  # a time budget counts from here: planning is part of it
    t = cfg.train
    with dtype_policy(t.precision):
        # Trained and validated without test-time augmentation (a pass per image, not six); the
        # saved model is the same network inside it.
        trained, model = build_models(cfg.model, split.x_train.shape[1:], len(split.class_names))
    initialise(trained, cfg.model, split.x_train)
    steps = math.ceil(len(split.y_train) / t.batch_size)
    # With a budget the rate is set by the clock every batch; the epoch count only shapes the schedule.
    compile_model(trained, dataclasses.replace(t, epochs=t.epochs or 1), steps)
    augmenter = build_augmenter(cfg.data.augment, t.seed)
    plan = None
    if t.time_budget_minutes and t.epochs is None:
        seconds, elapsed = t.time_budget_minutes * 60, time.perf_counter() - started
        plan = plan_budget(
            trained, split.x_train, split.y_train, t.batch_size, augmenter, len(split.y_val), seconds, elapsed
        )
        log.info("%s", plan.describe())
        t = dataclasses.replace(t, epochs=plan.max_epochs)
    train_ds = make_dataset(split.x_train, split.y_train, t.batch_size, training=True, augmenter=augmenter, seed=t.seed)
    val_ds = make_dataset(split.x_val, split.y_val, max(t.batch_size, 256))
    with warnings.catch_warnings(), interrupts_between_batches() as stopper:
        # Keras warns that fit's default shuffle=True is ignored for a tf.data input; ours is shuffled.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        history = trained.fit(
            train_ds,
            validation_data=val_ds,
            epochs=t.epochs,
            callbacks=[*make_callbacks(t, steps, plan, started), *extra_callbacks, stopper],
            verbose=1 if sys.stdout.isatty() else 2,  # a bar in a terminal, one line per epoch in logs
        )
    history = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    if model is not trained:  # the saved model carries the trained one's optimizer and loss, as before
        model.compile(optimizer=trained.optimizer, loss=trained.loss, metrics=["accuracy"])
    return Fitted(model, history, time.perf_counter() - started, plan)


def train(
    cfg: ExperimentConfig,
    *,
    parent_run_id: str | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    evaluate_test: bool = True,
    log_model: bool = True,
    tags: dict[str, str] | None = None,
) -> TrainResult:
    """Train one model from ``cfg`` inside one MLflow run; returns the run id, model and metrics."""
    set_seeds(cfg.train)
    if parent_run_id is None:
        use_experiment(cfg.experiment_name)
    # One fit per run: autolog refuses a second fit with changed params in the same run. Not silent:
    # MLflow warns when the installed Keras is older than its autolog supports (pyproject pins keras
    # at or above that minimum). Datasets are logged by log_split_inputs, without the pixels.
    mlflow.keras.autolog(log_models=False, log_datasets=False)
    with tracked_run(
        cfg.run_name, parent_run_id=parent_run_id, tags=tags, log_system_metrics=cfg.train.system_metrics
    ) as run:
        _refuse_autolog_clash(run, cfg.train)
        mlflow.log_text(cfg.to_yaml(), CONFIG_ARTIFACT)
        mlflow.log_params(cfg.flat())
        split = split_dataset(load_dataset(cfg.data), cfg.data, cfg.train.seed)
        mlflow.set_tags(run_tags(cfg, split))
        # A trial never sees the test set: its run does not list it.
        log_split_inputs(cfg.data.dataset, split, ("train", "val", "test") if evaluate_test else ("train", "val"))
        mlflow.log_params({f"split.{k}_size": v for k, v in split.sizes().items()})
        log.info("split sizes %s, hash %s", split.sizes(), split.split_hash)

        fitted = fit(cfg, split, extra_callbacks)
        model, history = fitted.model, fitted.history
        if fitted.plan is not None:
            mlflow.log_params(fitted.plan.params())
        if cfg.train.time_budget_minutes:
            budget_s = cfg.train.time_budget_minutes * 60
            mlflow.log_metrics(
                {"budget.used_fraction": fitted.seconds / budget_s, "epochs_trained": len(history["loss"])}
            )
        metrics = {
            # Plain cross-entropy, as test_loss; with label smoothing the loss fit minimised is higher.
            "best_val_loss": min(history[f"val_{CROSSENTROPY}"]),
            "best_val_loss_smoothed": min(history["val_loss"]),
            "best_val_accuracy": max(history["val_accuracy"]),
        }
        mlflow.log_metrics(metrics)
        _log_figure(plots.training_curves(history), "plots/training_curves.png")

        if evaluate_test:
            result = evaluate(model, split.x_test, split.y_test, split.class_names)
            metrics.update(result.metrics)
            mlflow.log_metrics(result.metrics)
            mlflow.log_text(result.per_class.to_csv(index=False), "evaluation/per_class_report.csv")
            _log_figure(plots.confusion_figure(result.confusion, split.class_names), "plots/confusion_matrix.png")
            _log_figure(
                plots.confusion_figure(result.confusion, split.class_names, normalize=True),
                "plots/confusion_matrix_normalized.png",
            )
            # Mistakes, calibration and a written summary of strengths and limits (analysis/).
            analysis = analyze(result, split.class_names, history, cfg, split.x_test.shape[1:])
            metrics.update(log_analysis(analysis, split.x_test))
        if log_model:
            log_image_model(model, split.class_names, split.x_test[:2])
        return TrainResult(run.info.run_id, model, history, split, metrics)


def _log_figure(fig, path: str) -> None:
    mlflow.log_figure(fig, path)
    plots.close(fig)
