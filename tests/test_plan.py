"""The deadline planner's arithmetic (cnnexp/tuning/plan.py): pure functions, no training."""

import pytest

from cnnexp.tuning import plan as plans


def test_expected_epochs_under_each_pruner():
    assert plans.expected_epochs("none", 9, []) == 9
    # Successive halving, rungs after epochs 1 and 3 of 9: all train 1, a third 2 more, a ninth 6 more.
    assert plans.expected_epochs("sha", 9, [1, 3]) == pytest.approx(1 + 2 / 3 + 6 / 9)
    assert plans.expected_epochs("median", 9, [2, 3, 4, 5, 6, 7, 8, 9]) == pytest.approx(2 + 0.5 * 7)


def test_a_60_minute_plan_splits_trials_retrain_and_reserve():
    p = plans.plan_study(3600, elapsed_s=70, first_trial_s=60, trial_epochs=9, pruner="sha", rungs=[2, 4])
    assert p.reserve_s == pytest.approx(180)  # 5% of the budget
    left = 3600 - 70 - 180
    assert p.retrain_s == pytest.approx(0.45 * left) and p.trials_s == pytest.approx(0.55 * left)
    per_trial = plans.expected_epochs("sha", 9, [2, 4]) * 60 / 9  # seconds a configuration costs on average
    assert p.n_trials == int(p.trials_s // per_trial)
    assert p.elapsed_s + p.trials_s + p.retrain_s + p.reserve_s == pytest.approx(3600)


def test_a_trials_fixed_cost_is_paid_by_every_trial_however_early_it_is_stopped():
    # First trial: 9 epochs of 2 s and 12 s besides. Proportionally a pruned trial would cost 2.33 x 30 / 9 s.
    p = plans.plan_study(3600, 70, 30, 9, "sha", [1, 3], epoch_s=2.0)
    assert (p.epoch_s, p.fixed_trial_s) == (2.0, pytest.approx(12.0))
    assert p.n_trials == int(p.trials_s // (12 + plans.expected_epochs("sha", 9, [1, 3]) * 2))
    proportional = plans.plan_study(3600, 70, 30, 9, "sha", [1, 3])
    assert proportional.fixed_trial_s == 0 and proportional.n_trials > 1.5 * p.n_trials
    # An epoch measured slower than the trial's average (a noisy clock) never makes the fixed cost negative.
    assert plans.plan_study(3600, 70, 30, 9, "sha", [1, 3], epoch_s=5.0).fixed_trial_s == 0
    # A first trial that ran 4 epochs (early stopping): its fixed cost is what those 4 did not take.
    assert plans.plan_study(3600, 70, 30, 9, "sha", [1, 3], epoch_s=2.0, first_epochs=4).fixed_trial_s == 22


def test_the_space_caps_the_retrain_and_n_trials_caps_the_trials():
    p = plans.plan_study(3600, 70, 60, 9, "none", [], retrain_cap_s=600, max_trials=5)
    assert p.retrain_s == 600 and p.trials_s == pytest.approx(3600 - 70 - 180 - 600)
    assert p.n_trials == 4  # five in all, the timed first one included


def test_a_short_budget_reserves_at_least_a_trial_for_the_report_and_model():
    assert plans.plan_study(60, 20, 15, 2, "none", []).reserve_s == 25


def test_no_time_left_plans_no_more_trials():
    p = plans.plan_study(60, elapsed_s=55, first_trial_s=50, trial_epochs=4, pruner="median", rungs=[2, 3, 4])
    assert p.n_trials == 0 and p.trials_s == 0 and p.retrain_s == 0


def test_the_retrain_gets_what_is_left_but_not_less_than_its_floor():
    p = plans.plan_study(600, 20, 10, 4, "none", [])
    assert plans.retrain_seconds(p, elapsed_s=300) == pytest.approx(600 - p.reserve_s - 300)  # trials ended early
    late = plans.retrain_seconds(p, elapsed_s=600)  # trials ran long: the deadline is already here
    assert late == pytest.approx(plans.RETRAIN_FLOOR * p.retrain_s)


def test_the_plan_and_its_outcome_read_as_sentences():
    p = plans.plan_study(600, 20, 10, 4, "sha", [2])
    text = plans.describe(p)
    assert "10-minute study" in text and f"{p.n_trials} more configuration(s)" in text and "epoch(s) 2" in text
    result = plans.outcome(p, total_s=590, trials_end_s=300, n_run=7, states={"COMPLETE": 3, "PRUNED": 4})
    assert (
        result["within_budget"] and result["retrain_and_report_s"] == 290 and result["planned_trials"] == p.n_trials + 1
    )
    assert "within the deadline" in plans.describe_outcome(result) and "4 pruned" in plans.describe_outcome(result)
    assert "10s over the deadline" in plans.describe_outcome({**result, "total_s": 610, "within_budget": False})


def test_tune_needs_a_trial_count_or_a_deadline(tmp_path, capsys):
    from cnnexp.cli import main

    code = main(["tune", "--space", "search_spaces/digits.yaml", "--storage", f"sqlite:///{tmp_path / 'o.db'}"])
    assert code != 0 and "--n-trials N, or --time-budget-minutes M" in capsys.readouterr().err
