"""The deadline planner against a stand-in for tune's trial loop: what the planned phase is asked to run."""

import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import create_trial

from cnnexp.tuning.deadline import Planner
from cnnexp.tuning.plan import NO_CAP
from cnnexp.tuning.space_file import load_space
from cnnexp.tuning.tune import TuneOptions

SPACE = str(Path(__file__).resolve().parents[2] / "search_spaces" / "digits.yaml")


def plan_with(n_trials: int) -> tuple[Planner, list[tuple[int, float | None, int | None, float]]]:
    """A 1-minute study whose trials (stood in for) take 0.2 s; returns the planner and what each run was
    asked: trials, timeout, the plan's estimate, and when (seconds into the study)."""
    parent = mlflow.MlflowClient().create_run(mlflow.set_experiment("dl").experiment_id).info.run_id
    opts = TuneOptions(SPACE, "dl", n_trials, pruner="none", time_budget_minutes=1)
    planner = Planner(opts, load_space(SPACE), parent, time.monotonic())
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
