"""Smoke test of benchmarks/search_efficiency.py: two tiny digits studies, the JSON's shape and sanity."""

from __future__ import annotations

import json
import os

import mlflow
import pytest

from benchmarks import rank_correlation, search_efficiency


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_search_efficiency_smoke(tracking, tmp_path, capsys, monkeypatch):
    # The study report's five plots cost seconds per study and are tested in test_tune; here they measure nothing.
    monkeypatch.setattr("cnnexp.tuning.tune.log_report", lambda parent_id, study: [])
    out = tmp_path / "results"
    assert search_efficiency.main(["--smoke", "--out", str(out)]) == 0
    result = json.loads((out / "search_efficiency.json").read_text())
    assert result["benchmark"] == "search_efficiency" and result["settings"]["smoke"]
    assert {"machine", "settings", "studies", "ratios", "rounds"} <= result.keys()
    assert result["complete_rounds"] == 1 and result["unfinished_round"] == {}  # rewritten after every study

    (round_,) = result["rounds"]
    unpruned, pruned = round_["studies"]["unpruned"], round_["studies"]["pruned-sha"]
    assert (unpruned["pruner"], pruned["pruner"]) == ("none", "sha")
    for study in (unpruned, pruned):
        s, trials = study["summary"], study["trials"]
        assert s["trials"] == len(trials) == 2
        assert s["complete"] + s["pruned"] + s["failed"] == s["trials"]
        for t in trials:
            assert 1 <= t["epochs"] <= 2 and t["images"] == t["epochs"] * 200 and t["wall_s"] > 0
        assert s["images"] == sum(t["images"] for t in trials) == trials[-1]["cum_images"]
        assert s["wall_s"] == pytest.approx(sum(t["wall_s"] for t in trials))
        assert 0 < s["best_val_accuracy"] <= 1 and s["study_wall_s"] >= s["wall_s"]
    # One seeded random sampler: the same configurations in both studies, the list draw_configs gives.
    assert [t["params"] for t in pruned["trials"]] == [t["params"] for t in unpruned["trials"]]
    assert round_["same_configs"] == {"unpruned": True, "pruned-sha": True}
    assert result["settings"]["sampler"] == "random" and result["settings"]["schedule"] == "wsd"
    kept = round_["survival"]["pruned-sha"]
    assert kept["winner"] == any(t["state"] == "COMPLETE" and t["value"] == unpruned["summary"]["best_val_accuracy"]
                                 for t in pruned["trials"])  # fmt: skip
    assert round_["survival"]["unpruned"]["winner"] is True  # a study always keeps its own winner
    assert unpruned["summary"]["pruned"] == 0 and all(t["epochs"] == 2 for t in unpruned["trials"])
    assert all(len(t["curve"]) == t["epochs"] for t in unpruned["trials"] + pruned["trials"])
    assert [r["rung_epoch"] for r in result["rank_correlation"]] == [1]  # 2 epochs: one rung before the end
    assert pruned["summary"]["images"] <= unpruned["summary"]["images"]

    # The target: the unpruned best minus half a point, which the unpruned study reaches by definition.
    assert round_["target"] == pytest.approx(unpruned["summary"]["best_val_accuracy"] - 0.005)
    assert round_["to_target"]["unpruned"]["images"] <= unpruned["summary"]["images"]
    ratio = round_["ratios"]["pruned-sha"]
    if round_["to_target"]["pruned-sha"] is None:  # pruned the config that mattered: n/a, with the gap
        assert ratio["images"] is None and ratio["shortfall"] > 0
    else:
        assert ratio["images"] >= 1 and ratio["wall"] > 0 and ratio["shortfall"] is None
    (summary,) = result["ratios"]
    assert summary["study"] == "pruned-sha" and summary["rounds"] == 1
    assert [row["study"] for row in result["studies"]] == ["unpruned", "pruned-sha"]

    # --unpruned-from: the unpruned side is the first run's; only the pruned study trains again, and it
    # repeats its curves exactly (seeded, deterministic training: what benchmarks/pruner_replay.py relies on).
    first = out / "search_efficiency.json"
    assert search_efficiency.main(["--smoke", "--out", str(tmp_path / "again"), "--unpruned-from", str(first)]) == 0
    second = json.loads((tmp_path / "again" / "search_efficiency.json").read_text())
    studies = second["rounds"][0]["studies"]
    assert studies["unpruned"]["reused_from"] == str(first) and studies["unpruned"]["trials"] == unpruned["trials"]
    assert [t["curve"] for t in studies["pruned-sha"]["trials"]] == [t["curve"] for t in pruned["trials"]]
    assert second["settings"]["unpruned_from"] == [str(first)]
    assert "| pruned-sha |" in capsys.readouterr().out

    # The caller's MLflow store and working directory are untouched: the studies had stores of their own.
    assert os.environ["MLFLOW_TRACKING_URI"] == mlflow.get_tracking_uri() == tracking
    assert mlflow.search_runs(search_all_experiments=True).empty
    assert not (tmp_path / "mlruns").exists()


def _study(*trials: tuple[str, float | None, int]) -> dict:
    """A study as run_study returns it, from (state, value, epochs) per trial; 100 images and 1 s per epoch."""
    rows, best, images = [], None, 0
    for state, value, epochs in trials:
        images += 100 * epochs
        best = value if value is not None and (best is None or value > best) else best
        rows.append(
            {"state": state, "value": value, "cum_images": images, "cum_wall_s": images / 100, "best_so_far": best}
        )
    states = [t[0] for t in trials]
    counts = {"complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL")}
    summary = {"trials": len(rows), **counts, "best_val_accuracy": best, "images": images, "wall_s": images / 100}
    return {"summary": summary, "trials": rows}


def test_ratio_is_compute_to_target_and_na_with_shortfall_when_missed():
    unpruned = _study(("COMPLETE", 0.80, 9), ("COMPLETE", 0.90, 9), ("COMPLETE", 0.85, 9))
    # Within half a point of 0.90 after 2 + 9 epochs, where the unpruned study needed 18.
    reached = _study(("PRUNED", None, 2), ("COMPLETE", 0.896, 9), ("PRUNED", None, 2))
    missed = _study(("COMPLETE", 0.88, 9), ("PRUNED", None, 2))
    studies = {"unpruned": unpruned, "pruned-a": reached, "pruned-b": missed}
    result = search_efficiency.compare(studies)
    assert result["survival"]["pruned-a"] is None  # rows without params: nothing to match
    assert result["target"] == pytest.approx(0.895)
    assert result["to_target"]["unpruned"] == {"images": 1800, "wall_s": 18, "trials": 2}
    assert result["ratios"]["pruned-a"] == {
        "images": pytest.approx(18 / 11),
        "wall": pytest.approx(18 / 11),
        "shortfall": None,
    }
    assert result["ratios"]["pruned-b"]["images"] is None and result["ratios"]["pruned-b"][
        "shortfall"
    ] == pytest.approx(0.015)

    study_rows, ratio_rows = search_efficiency.summarize([{**result, "studies": studies}], list(studies))
    assert [(r["study"], r["reached"], r["images_to_target"]) for r in study_rows] == [
        ("unpruned", "1/1", 1800),
        ("pruned-a", "1/1", 1100),
        ("pruned-b", "0/1", "n/a"),
    ]
    a, b = (search_efficiency._ratio_cells(r) for r in ratio_rows)
    assert a["reached target"] == "1/1" and a["images ratio (unpruned/pruned)"] == "1.64 [1.64-1.64]"
    assert a[">= 3x images / wall"] == "no / no" and a["winner or one within 0.5 survived"] == "0/1"
    assert b["reached target"] == "0/1 (short by 0.0150)" and b["images ratio (unpruned/pruned)"] == "n/a"


def test_survival_matches_configurations_by_params():
    def rows(*trials):
        return [{"params": {"x": x}, "state": st, "value": v} for x, st, v in trials]

    unpruned = rows((1, "COMPLETE", 0.80), (2, "COMPLETE", 0.90), (3, "COMPLETE", 0.897))
    lost_winner = rows((1, "COMPLETE", 0.80), (2, "PRUNED", None), (3, "COMPLETE", 0.897))
    assert search_efficiency.survived(unpruned, lost_winner, 0.895) == {
        "winner": False,
        "within_tolerance": True,  # configuration 3 scored within 0.5 point of the winner unpruned
        "candidates": 2,
    }
    lost_both = rows((1, "COMPLETE", 0.80), (2, "PRUNED", None), (3, "PRUNED", None))
    assert search_efficiency.survived(unpruned, lost_both, 0.895)["within_tolerance"] is False


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_rank_correlation_smoke(tmp_path):
    from benchmarks import rank_correlation

    out = tmp_path / "results"
    assert rank_correlation.main(["--smoke", "--schedules", "wsd", "--subset-rungs", "100", "--out", str(out)]) == 0
    result = json.loads((out / "rank_correlation.json").read_text())
    assert {"machine", "settings", "correlations", "runs"} <= result.keys() and "commit" in result["machine"]
    assert "cpu_flags" in result["machine"] and result["settings"]["sha_rungs"] == {"wsd": [1]}
    runs = result["runs"]["wsd"]
    assert len(runs) == 3 and len({str(r["params"]) for r in runs}) == 3  # three drawn configurations
    for run in runs:
        assert len(run["final"]["val_accuracy"]) == len(run["final"]["epoch_s"]) == 2 and "rungs" not in run
        assert len(run["subsets"]["100"]["val_accuracy"]) == 2  # the subset rung trains every epoch
    subset_row, row = result["correlations"]
    assert subset_row["rung_subset"] == 100 and subset_row["cost_s"] > 0 and not subset_row["sha_rung"]
    # 2 epochs: successive halving's one cut is after epoch 1 (never after the last).
    assert (row["schedule"], row["rung_epoch"], row["sha_rung"]) == ("wsd", 1, True) and row["cost_s"] > 0
    assert row["spearman"] is None or -1 <= row["spearman"] <= 1


def test_rank_correlation_reads_in_trial_rungs_from_the_history_and_budgeted_rungs_from_their_own_runs():
    from benchmarks.rank_correlation import correlate

    def curve(*acc):
        return {"val_accuracy": list(acc), "epoch_s": [1.0] * len(acc)}

    # Ranked 2 > 1 > 0 at the end; at epoch 1 the order is reversed, at epoch 2 it is right.
    runs = [{"final": curve(0.5, 0.6, 0.7)}, {"final": curve(0.4, 0.7, 0.8)}, {"final": curve(0.3, 0.8, 0.9)}]
    rows = correlate(runs, "wsd", [1, 2])
    assert [r["spearman"] for r in rows] == [pytest.approx(-1.0), pytest.approx(1.0)]
    assert [r["cost_s"] for r in rows] == [3.0, 6.0]  # epochs trained up to the rung, over the configurations
    for run, rung in zip(runs, (curve(0.2, 0.3), curve(0.2, 0.1), curve(0.4, 0.5)), strict=True):
        run["rungs"] = {"2": rung}
    (row,) = correlate(runs, "linear", [2])
    assert row["spearman"] == pytest.approx(0.5) and row["cost_s"] == 6.0  # best scores 0.3, 0.2, 0.5
    assert correlate([{"final": curve(0.5, 0.5)}] * 3, "wsd", [1])[0]["spearman"] is None  # constant: undefined


def test_the_rank_correlation_table_gives_each_rungs_cost_as_a_share_of_the_full_runs():
    from benchmarks.rank_correlation import correlate
    from benchmarks.tables_search import rank_correlation as table

    runs = [{"final": {"val_accuracy": [0.5, 0.6, 0.7, 0.8], "epoch_s": [2.0, 1.0, 1.0, 1.0]}} for _ in range(3)]
    for run, first, last in zip(runs, (0.5, 0.7, 0.6), (0.8, 0.9, 0.85), strict=True):
        run["final"]["val_accuracy"][0], run["final"]["val_accuracy"][-1] = first, last  # epoch 1 ranks right
    for run, score in zip(runs, (0.6, 0.5, 0.7), strict=True):  # the subset rung ranks 0 above 1
        run["subsets"] = {"500": {"val_accuracy": [0.4, score], "epoch_s": [0.5, 0.5]}}
    rows = [{**r, "sha_rung": r.get("rung_epoch") == 1} for r in correlate(runs, "wsd", [1, 3])]
    lines = table([{"runs": {"wsd": runs}, "correlations": rows}]).splitlines()
    # The subset rung costs 1 s of each run's 5 s (20%), and its order is not the finals' (rho -0.5).
    assert lines[2].split(" | ")[1:6] == ["all epochs on 500 images", "3", "-0.50", "3", "20%"]
    # Epoch 1 costs 2 s of each run's 5 s: 40%; epoch 3 (all alike: rho undefined), 4 of 5: 80%.
    assert lines[3].split(" | ")[1:6] == ["epoch 1 (a rung)", "3", "**1.00**", "6", "40%"]
    assert lines[4].split(" | ")[1:6] == ["epoch 3", "3", "n/a", "12", "80%"] and "0.9000 / 0.8500" in lines[4]


def test_rank_correlations_read_the_unpruned_trials_curves():
    def trial(curve, value=None):
        return {"curve": curve, "value": max(curve) if value is None else value}

    # Epoch 1 ranks the trials as their finals do in round 1 and backwards in round 2; epoch 2 always does.
    one = [trial([0.1, 0.2, 0.5]), trial([0.2, 0.3, 0.6]), trial([0.3, 0.4, 0.7])]
    two = [
        trial([0.3, 0.2, 0.5]),
        trial([0.2, 0.3, 0.6]),
        trial([0.1, 0.4, 0.7]),
        {"curve": [0.1], "value": None},
    ]
    rounds = [{"studies": {"unpruned": {"trials": t}}} for t in (one, two)]
    rows = rank_correlation.rank_correlations(rounds)
    assert [r["rung_epoch"] for r in rows] == [1, 2]  # the final epoch is no rung; a pruned trial is no result
    assert (rows[0]["round 1"], rows[0]["round 2"]) == (pytest.approx(1.0), pytest.approx(-1.0))
    assert rows[1]["round 1"] == rows[1]["round 2"] == pytest.approx(1.0) and rows[1]["configurations"] == 6
    assert -1.0 < rows[0]["pooled"] < 1.0


def test_an_early_stopped_trial_counts_at_the_epochs_it_reached():
    full = [{"curve": [0.1 * i, 0.1 * i + 0.05, 0.1 * i + 0.1], "value": 0.1 * i + 0.1} for i in range(3)]
    stopped = {"curve": [0.5], "value": 0.5}
    rows = rank_correlation.rank_correlations([{"studies": {"unpruned": {"trials": [*full, stopped]}}}])
    assert [(r["rung_epoch"], r["configurations"]) for r in rows] == [(1, 4), (2, 3)]


def test_unpruned_studies_of_other_settings_are_not_reused(tmp_path):
    settings = {"space": "s/fashion_mnist.yaml", "trials": 27, "trial_epochs": 9, "train_subset": 2000}
    settings |= {"sampler": "random", "schedule": "wsd"}
    doc = {"settings": settings | {"trial_epochs": 6}, "machine": {"commit": "abc"}, "rounds": []}
    (tmp_path / "old.json").write_text(json.dumps(doc))
    with pytest.raises(SystemExit, match="other settings \\(trial_epochs\\)"):
        search_efficiency.reused_unpruned([tmp_path / "old.json"], settings)
    doc["settings"] = settings | {"space": "/elsewhere/fashion_mnist.yaml"}  # the same space file, another checkout
    doc["rounds"] = [{"seed": 4, "studies": {"unpruned": {"trials": []}}}]
    (tmp_path / "old.json").write_text(json.dumps(doc))
    reused = search_efficiency.reused_unpruned([tmp_path / "old.json"], settings)
    assert reused[4]["commit"] == "abc" and reused[4]["reused_from"] == str(tmp_path / "old.json")
