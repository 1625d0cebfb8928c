"""The deadline planner against a stand-in for tune's trial loop: what the planned phase is asked to run."""

import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import create_trial

from cnnexp.tuning.deadline import Planner
from cnnexp.tuning.plan import NO_CAP
from cnnexp.tuning.space import sample
from cnnexp.tuning.space_file import load_space
from cnnexp.tuning.tune import TuneOptions

SPACE = str(Path(__file__).resolve().parents[2] / "search_spaces" / "digits.yaml")


def new_planner(n_trials: int, created: bool, seed: int | None = None) -> Planner:
    """A 1-minute deadline study's planner on digits.yaml, under a fresh parent run."""
    parent = mlflow.MlflowClient().create_run(mlflow.set_experiment("dl").experiment_id).info.run_id
    opts = TuneOptions(SPACE, "dl", n_trials, pruner="none", time_budget_minutes=1, seed=seed)
    return Planner(opts, load_space(SPACE), parent, time.monotonic(), created=created)


def plan_with(n_trials: int) -> tuple[Planner, list[tuple[int, float | None, int | None, float]]]:
    """A 1-minute study whose trials (stood in for) take 0.2 s; returns the planner and what each run was
    asked: trials, timeout, the plan's estimate, and when (seconds into the study)."""
    planner = new_planner(n_trials, created=True)
    asked = []

    def run(study, space, opts, parent_id, expected=None):
        asked.append((opts.n_trials, opts.timeout, expected, planner.elapsed()))
        time.sleep(0.2)
        study.add_trial(create_trial(value=0.5))

    planner.run_trials(optuna.create_study(direction="maximize"), run)
    return planner, asked


def test_the_planned_trials_run_until_their_time_is_up_not_to_the_estimated_count(tracking):
    planner, asked = plan_with(NO_CAP)
    (first_n, first_timeout, _, _), (n, timeout, expected, at) = asked
    assert (first_n, first_timeout) == (1, None)  # the timed trial
    # One timed trial predicts the rest poorly: the count is shown as an estimate, the timeout decides.
    assert n == NO_CAP and expected == planner.plan.n_trials > 0
    assert at + timeout == pytest.approx(planner.plan.elapsed_s + planner.plan.trials_s, abs=0.05)  # planned end


def test_a_users_n_trials_still_caps_a_deadline_study(tracking):
    planner, asked = plan_with(1000)  # more than the plan expects: the cap is the user's, not the estimate
    assert planner.plan.n_trials < 999 and asked[1][0] == 999  # 1,000 in all, the timed first one included


def run_deadline_study(study: optuna.Study, created: bool) -> Planner:
    """A 3-trial deadline study through tune's loop, its training stood in for by sampling the space."""
    planner = new_planner(3, created=created, seed=0)

    def run(study, space, opts, parent_id, expected=None):
        study.optimize(lambda trial: len(sample(trial, space)), n_trials=opts.n_trials, timeout=opts.timeout)

    planner.run_trials(study, run)
    return planner


def test_a_new_deadline_study_times_the_package_defaults_first(tracking, capsys):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    run_deadline_study(study, created=True)
    defaults, outside = load_space(SPACE).default_params()
    # digits.yaml allows 1-2 blocks, the default is 3: that one is drawn, every other one is the default.
    assert outside == ["model.blocks"] and "model.blocks" in study.trials[0].params
    assert {k: study.trials[0].params[k] for k in defaults} == defaults
    assert "model.blocks: default outside the space, drawn by the sampler" in capsys.readouterr().out


def test_a_joined_or_resumed_study_does_not_time_the_defaults_again(tracking, capsys):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.add_trial(create_trial(value=0.5))  # an earlier worker's trial
    run_deadline_study(study, created=False)
    defaults, _ = load_space(SPACE).default_params()
    assert all({k: t.params.get(k) for k in defaults} != defaults for t in study.trials[1:])
    assert "package defaults" not in capsys.readouterr().out
