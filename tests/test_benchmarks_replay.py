"""benchmarks/pruner_replay.py: Optuna's pruners replayed over recorded curves, and the ratios it reads off."""

from __future__ import annotations

import json
from types import SimpleNamespace

import optuna
import pytest

from benchmarks import pruner_replay
from cnnexp.tuning.storage import make_pruner


def _curves(n: int = 12, epochs: int = 9) -> list[list[float]]:
    # Trial i climbs at its own rate: the final order is the order at every epoch, except trial 5's late surge.
    curves = [[(0.3 + 0.04 * i) * (1 - 0.5 ** (e + 1)) for e in range(epochs)] for i in range(n)]
    curves[5] = [0.1] * (epochs - 1) + [0.99]
    return curves


def _through_tune_callback(study: optuna.Study, curve: list[float], monkeypatch) -> int:
    """The epochs tune()'s own pruning callback lets a trial with this validation curve train."""
    from cnnexp.tuning.tune import _PruneBetweenEpochs

    monkeypatch.setattr("cnnexp.tuning.pruning.tag_active_run", lambda trial, step: None)  # no MLflow run here
    trial = study.ask()
    callback = _PruneBetweenEpochs(trial, "val_accuracy")
    callback.set_params({"epochs": len(curve)})
    callback.set_model(SimpleNamespace(stop_training=False))
    for epoch, value in enumerate(curve):
        callback.on_epoch_end(epoch, {"val_accuracy": value})
        if callback.model.stop_training:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return epoch + 1
    study.tell(trial, curve[-1])
    return len(curve)


def test_a_replay_stops_trials_where_tunes_pruning_callback_does(monkeypatch):
    curves, order = _curves(), [3, 0, 7, 5, 11, 1, 9, 2, 4, 10, 6, 8]
    curves[7][-1] = 0.01  # a collapse in the last epoch: the result, never a reason to prune a finished trial
    live = optuna.create_study(direction="maximize", pruner=make_pruner("sha", 9, warmup_epochs=0.5))
    expected = [_through_tune_callback(live, curves[i], monkeypatch) for i in order]
    values = [c[-1] for c in curves]
    assert pruner_replay.replay(curves, values, order, "sha", 1) == expected
    assert set(expected) == {1, 3, 9}  # rungs after epochs 1 and 3
    assert expected[order.index(5)] == 1  # the late surge is lost: what rank correlation below 1 costs
    assert expected[order.index(7)] == 9 and live.trials[order.index(7)].state.name == "COMPLETE"
    oracle = pruner_replay.replay(curves, values, order, "oracle", 1)
    assert oracle == [9 if i == 5 else 1 for i in order]


def test_the_ratios_count_compute_until_the_target_and_for_the_whole_study():
    trials = [{"value": v, "curve": [v] * 3} for v in (0.5, 0.9, 0.6)]
    cost = {"fixed": 0.0, "per_epoch": [1.0, 1.0, 1.0]}
    # In order 0, 1, 2: trial 0 runs in full, 1 (the winner) in full, 2 is stopped after epoch 1.
    out = pruner_replay.outcome(trials, [0, 1, 2], [3, 3, 1], cost)
    assert out["images"] == pytest.approx(1.0) and out["whole_images"] == pytest.approx(9 / 7)
    assert out["survived"] and out["complete"] == 2
    # The winner last, the others stopped after epoch 1: 9 epochs unpruned against 1 + 1 + 3.
    out = pruner_replay.outcome(trials, [0, 2, 1], [1, 1, 3], cost | {"fixed": 2.0})
    assert out["images"] == pytest.approx(9 / 5) and out["wall"] == pytest.approx((9 + 6) / (5 + 6))
    lost = pruner_replay.outcome(trials, [0, 2, 1], [3, 3, 1], cost)
    assert lost["images"] is None and not lost["survived"]


def test_the_replay_checks_itself_against_the_pruned_study_it_stands_for(tmp_path):
    curves = _curves()
    unpruned = [{"number": i, "value": c[-1], "curve": c, "wall_s": 10.0 + 9} for i, c in enumerate(curves)]
    ran = pruner_replay.replay(curves, [c[-1] for c in curves], list(range(12)), "sha", 1)
    pruned = [
        {"number": i, "epochs": e, "wall_s": 10.0 + e, "state": "COMPLETE" if e == 9 else "PRUNED"}
        for i, e in enumerate(ran)
    ]
    doc = {"settings": {"first_epoch_step": 1},
           "rounds": [{"round": 1, "seed": 0, "studies": {"unpruned": {"trials": unpruned},
                                                          "pruned-sha": {"trials": pruned}}}]}  # fmt: skip
    (tmp_path / "r.json").write_text(json.dumps(doc))
    result = pruner_replay.run(tmp_path / "r.json", orders=5, seed=0)
    assert result["checks"] == [{"round": 1, "design": "sha, rungs after epochs 1, 3", "reproduces_measured": True}]
    assert result["rows"][0]["fixed_cost_s"] == pytest.approx(10.0)  # fitted from the twins
    assert {r["design"] for r in result["pooled"]} == set(pruner_replay.DESIGNS)
    # A run stopped before a round's pruned study: that round's unpruned curves are replayed too, at the
    # fixed cost fitted in the rounds that have twins.
    doc["unfinished_round"] = {"unpruned": [{"seed": 1, "trials": unpruned}]}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    rows = pruner_replay.run(tmp_path / "r.json", orders=2, seed=0)["rows"]
    assert [r["round"] for r in rows] == [1] * len(pruner_replay.DESIGNS) + [2] * len(pruner_replay.DESIGNS)
    assert rows[-1]["fixed_cost_s"] == pytest.approx(10.0) and rows[-1]["seed"] == 1
    del doc["unfinished_round"]
    pruned[0]["state"] = "PRUNED"  # a study the replay does not reproduce (here: a finished trial pruned) is flagged
    (tmp_path / "r.json").write_text(json.dumps(doc))
    assert pruner_replay.run(tmp_path / "r.json", orders=1, seed=0)["checks"][0]["reproduces_measured"] is False
