"""Smoke runs of the training benchmarks (issue 6) on digits, and the arithmetic they report."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import keras

from benchmarks import compute, time_to_accuracy


def _points(*pairs):
    return [{"epoch": i + 1, "seconds": s, "test_accuracy": a} for i, (s, a) in enumerate(pairs)]


def test_time_to_accuracy_reads_budgets_from_epoch_ends():
    # Stopped by its 10-minute budget: the last epoch inside the budget counts, not the final model.
    stopped = {
        "side": "cnnexp",
        "seed": 1,
        "epochs_planned": 15,
        "points": _points((200, 0.85), (400, 0.91), (610, 0.93)),
    }
    stopped["final"] = {"seconds": 610, "test_accuracy": 0.93}
    row = time_to_accuracy.summarise(stopped, [10])
    assert row["to_90_s"] == 400 and row["acc_10min"] == 0.91 and row["epochs_run"] == 3
    # Ended inside the budget (early stopping restored its best weights): the final model counts.
    ended = {"side": "cnnexp", "seed": 1, "epochs_planned": 15, "points": _points((100, 0.88), (200, 0.87))}
    ended["final"] = {"seconds": 200, "test_accuracy": 0.885}
    row = time_to_accuracy.summarise(ended, [10])
    assert row["to_90_s"] is None and row["acc_10min"] == 0.885


def test_time_to_accuracy_smoke(tmp_path):
    time_to_accuracy.main(["--smoke", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "time_to_accuracy.json").read_text())
    assert {r["side"] for r in data["rows"]} == {"cnnexp", "baseline"}
    for run in data["runs"]:
        assert len(run["points"]) == 2 and run["train_images"] > 1000
        assert 0.0 < run["final"]["test_accuracy"] <= 1.0
        assert all(b["seconds"] > a["seconds"] for a, b in pairwise(run["points"]))


def test_forward_flops_counts_conv_and_dense_multiply_adds():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
        ]
    )
    assert compute.forward_flops(model) == 2 * 3 * 3 * 3 * 4 * 8 * 8 + 2 * 8 * 8 * 4 * 5


def test_compute_smoke(tmp_path, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # workers run `-m benchmarks.compute`
    compute.main(["--smoke", "--repeats", "1", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "compute.json").read_text())
    assert [r["variant"] for r in data["in_process"]] == [list(compute.IN_PROCESS)[0], "mixed_bfloat16"]
    assert [r["variant"] for r in data["processes"]] == list(compute.PROCESSES)[:1]
    bf16 = data["in_process"][1]
    assert bf16["vs default"] == bf16["images/s"] / data["in_process"][0]["images/s"]  # against the default row
    for rows in (data["in_process"], data["processes"]):
        assert all(r["images/s"] > 0 and r["GFLOP/s"] > 0 for r in rows)
    # Raw figures: one per in-process turn (1 cycle in smoke), one per fresh-process round.
    assert [len(v) for v in data["in_process_samples"].values()] == [1, 1]
    assert [len(v) for v in data["process_samples"].values()] == [1]
    assert data["peak"]["fp32_peak_gflops"] > 0
    assert data["machine"]["commit"] and isinstance(data["machine"]["cpu_flags"], list)


def test_compute_rows_are_ratios_to_the_first_variant():
    results = {
        "default": {"images_per_s": 100.0, "gflops_per_s": 10.0, "forward_mflops": 15.0},
        "faster": {"images_per_s": 150.0, "gflops_per_s": 15.0, "forward_mflops": 15.0},
    }
    rows = compute._rows(results, {"faster": "140-160"}, peak=100.0)
    assert [r["vs default"] for r in rows] == [1.0, 1.5]
    assert [r["% of fp32 peak"] for r in rows] == [10.0, 15.0] and rows[1]["min-max"] == "140-160"
