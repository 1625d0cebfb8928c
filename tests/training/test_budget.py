"""A time budget: epochs planned from measured speed, the schedule driven by the clock, the budget used."""

from types import SimpleNamespace

import keras
import mlflow
import numpy as np
import pytest

from cnnexp.config import DEFAULT_EPOCHS, build_config
from cnnexp.errors import ConfigError
from cnnexp.models.cnn import build_model
from cnnexp.training import budget as budget_module
from cnnexp.training.budget import TimeBudget, plan_budget
from cnnexp.training.train import compile_model, make_callbacks, train


def test_epochs_default_without_a_budget_and_follow_it_with_one(tiny_overrides):
    plain = {k: v for k, v in tiny_overrides.items() if k != "train.epochs"}
    assert build_config(overrides=plain).train.epochs == DEFAULT_EPOCHS
    assert build_config(overrides={**plain, "train.time_budget_minutes": 5}).train.epochs is None  # planned
    explicit = build_config(overrides={**plain, "train.time_budget_minutes": 5, "train.epochs": 3})
    assert explicit.train.epochs == 3  # an explicit count wins; the budget only caps it
    with pytest.raises(ConfigError, match="train.epochs=0 must be at least 1"):
        build_config(overrides={**plain, "train.epochs": 0})


def test_planning_times_the_real_model_and_leaves_it_untouched(tiny_config):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 255, (640, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 640)
    model = build_model(tiny_config.model, (8, 8, 1), 10)
    compile_model(model, tiny_config.train, steps_per_epoch=10)
    model.optimizer.build(model.trainable_variables)
    before = [v.numpy().copy() for v in model.weights + model.optimizer.variables]
    plan = plan_budget(model, x, y, batch_size=64, augmenter=None, val_images=128, seconds=60.0, elapsed=2.0)
    after = [v.numpy() for v in model.weights + model.optimizer.variables]
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))  # weights, moments, step count
    assert plan.step_seconds > 0 and plan.steps_per_epoch == 10
    assert plan.epochs * plan.epoch_seconds <= 58.0 < (plan.epochs + 1) * plan.epoch_seconds
    assert plan.max_epochs > plan.epochs
    assert f"about {plan.epochs} epochs" in plan.describe()


def test_a_budgeted_run_plans_its_epochs_uses_the_budget_and_ends_annealed(tracking, tiny_overrides):
    overrides = {k: v for k, v in tiny_overrides.items() if k != "train.epochs"}
    cfg = build_config(overrides={**overrides, "train.time_budget_minutes": 0.2})  # 12 s, epochs planned
    result = train(cfg, evaluate_test=False, log_model=False)
    run = mlflow.get_run(result.run_id)
    planned = int(run.data.params["budget.planned_epochs"])
    assert planned >= 1 and run.data.params["train.epochs"] == "None"
    assert int(run.data.params["epochs"]) > planned  # fit's limit leaves room; the clock ends the run
    assert len(result.history["loss"]) == run.data.metrics["epochs_trained"] >= 2
    # The clock, not an epoch count, ended it: the budget is used, and not overrun by more than a pass.
    assert 0.9 <= run.data.metrics["budget.used_fraction"] <= 1.5
    # The rate reached the end of its schedule with the budget (one-cycle anneals to zero).
    assert float(result.model.optimizer.learning_rate) < 0.05 * cfg.train.learning_rate


def test_time_budget_stops_fit(tracking, tiny_overrides):
    budget = {"train.epochs": 500, "train.time_budget_minutes": 0.05, "train.early_stopping_patience": 0}
    cfg = build_config(overrides={**tiny_overrides, **budget})
    result = train(cfg, evaluate_test=False, log_model=False)
    assert 1 <= len(result.history["loss"]) < 500  # 3 seconds of fit, not 500 epochs


def test_time_budget_drives_the_schedule_by_the_clock(tiny_overrides, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: clock[0])
    cfg = build_config(overrides={**tiny_overrides, "train.epochs": 10, "train.time_budget_minutes": 1})
    (budget,) = [c for c in make_callbacks(cfg.train, 100) if isinstance(c, TimeBudget)]
    model = SimpleNamespace(optimizer=budget_module.keras.optimizers.Adam(1e-3), stop_training=False)
    budget.set_model(model)
    budget.on_train_begin()
    peak = cfg.train.learning_rate
    for seconds, expected in ((0, peak / 10), (12, peak), (36, peak / 2)):  # 20% warm-up, then cosine
        clock[0] = 100.0 + seconds
        budget.on_train_batch_begin(0)
        assert float(model.optimizer.learning_rate) == pytest.approx(expected, rel=1e-3)
        budget.on_train_batch_end(0)
    assert not model.stop_training
    clock[0] = 160.0
    budget.on_train_batch_end(0)
    assert model.stop_training and budget.stopped_by_time


def test_time_budget_counts_from_its_start_and_keeps_the_last_validation_inside(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: clock[0])
    budget = TimeBudget(1, 1e-3, total_steps=1000, started=40.0, reserve=5.0)  # planning took 10 s
    budget.set_model(SimpleNamespace(stop_training=False))
    budget.on_train_begin()
    assert budget.progress() == pytest.approx(10 / 55)
    clock[0] = 95.0  # 55 s after the start: the last 5 s are the final validation's
    budget.on_train_batch_end(0)
    assert budget.model.stop_training


def test_time_budget_follows_steps_when_they_run_out_first(tiny_overrides):
    cfg = build_config(overrides={**tiny_overrides, "train.epochs": 10, "train.time_budget_minutes": 60})
    (budget,) = [c for c in make_callbacks(cfg.train, 100) if isinstance(c, TimeBudget)]
    budget.on_train_begin()
    budget.steps = 500  # half the steps, a second of the hour: progress is the steps'
    assert budget.progress() == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ConfigError, match="time_budget_minutes"):
        build_config(overrides={**tiny_overrides, "train.time_budget_minutes": -1})
