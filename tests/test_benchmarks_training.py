"""Smoke runs of the training benchmarks (issue 6) on digits, and the arithmetic they report."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import keras
import pytest

from benchmarks import compute, fused_batch_norm, recipe_ablation, time_to_accuracy


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


def test_a_budgeted_run_holds_its_final_accuracy_and_reports_its_plan():
    """A budgeted cnnexp run measures no test accuracy before its end (its clock would pay for it)."""
    run = {"side": "cnnexp", "seed": 1, "planned_epochs": 8, "fit_seconds": 588.0, "budget_minutes": 10}
    run["points"] = [{"epoch": i + 1, "seconds": 70.0 * (i + 1), "test_accuracy": None} for i in range(8)]
    run["final"] = {"seconds": 588.0, "test_accuracy": 0.925}
    row = time_to_accuracy.summarise(run, [10])
    assert row["acc_10min"] == 0.925 and row["to_90_s"] is None
    assert row["planned_epochs"] == 8 and abs(row["used_fraction"] - 0.98) < 1e-9


def test_time_to_accuracy_budgeted_smoke(tmp_path):
    time_to_accuracy.main(["--smoke", "--time-budgeted", "--sides", "cnnexp", "--out", str(tmp_path)])
    (run,) = json.loads((tmp_path / "time_to_accuracy.json").read_text())["runs"]
    assert run["planned_epochs"] >= 1 and run["epochs_given"] is None
    assert 0.0 < run["final"]["test_accuracy"] <= 1.0


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_recipe_ablation_smoke(tmp_path):
    recipe_ablation.main(
        [
            "--smoke",
            "--out",
            str(tmp_path),
            "--variant",
            "default=",
            "--variant",
            "pool_first=model.block_order=conv_pool_bn",
        ]
    )
    data = json.loads((tmp_path / "recipe_ablation-digits.json").read_text())
    rows = {r["variant"]: r for r in data["rows"]}
    assert set(rows) == {"default", "pool_first"} and rows["default"]["vs_default_pt"] == 0
    assert all(r["epochs"] >= 1 and 0 < r["test_accuracy"] <= 1 and r["epoch_s"] > 0 for r in rows.values())


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_fused_batch_norm_smoke(tmp_path):
    fused_batch_norm.main(["--smoke", "--repeats", "1", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "fused_batch_norm.json").read_text())
    assert set(data["median_step_ms"]) == {"keras batch norm", "fused batch norm"} and data["keras_over_fused"] > 0


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
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


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
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


@pytest.mark.parametrize(
    ("vendor", "family", "model", "flags", "per_cycle"),
    [
        ("GenuineIntel", 6, 143, "avx2 fma avx512f amx_bf16", 64),  # Sapphire Rapids: two 512-bit FMA units
        ("AuthenticAMD", 25, 17, "avx2 fma avx512f avx512_bf16", 32),  # Zen 4: AVX-512 on 256-bit units
        ("AuthenticAMD", 25, 1, "avx2 fma", 32),  # Zen 3
        ("AuthenticAMD", 23, 1, "avx2 fma", 16),  # Zen 1: 128-bit units
        ("AuthenticAMD", 26, 2, "avx2 fma avx512f", 64),  # Zen 5: full-width AVX-512
    ],
)
def test_fp32_peak_follows_the_fma_width(tmp_path, vendor, family, model, flags, per_cycle):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        f"vendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
        f"cpu MHz\t\t: 2500.000\nflags\t\t: {flags}\n"
    )
    peak = compute.peak_gflops(str(cpuinfo))
    assert peak["flops_per_cycle"] == per_cycle
    assert peak["fp32_peak_gflops"] == pytest.approx(peak["cores"] * 2.5 * per_cycle)


def test_compute_rows_are_ratios_to_the_first_variant():
    results = {
        "default": {"images_per_s": 100.0, "gflops_per_s": 10.0, "forward_mflops": 15.0},
        "faster": {"images_per_s": 150.0, "gflops_per_s": 15.0, "forward_mflops": 15.0},
    }
    rows = compute._rows(results, {"faster": "140-160"}, peak=100.0)
    assert [r["vs default"] for r in rows] == [1.0, 1.5]
    assert [r["% of fp32 peak"] for r in rows] == [10.0, 15.0] and rows[1]["min-max"] == "140-160"


def test_cifar_shaped_rows_read_back_as_tinted_32x32_rgb(tmp_path):
    import pickle

    import numpy as np

    from benchmarks.cifar_shaped import tinted
    from cnnexp.data.sources import read_cifar_batch

    gray = np.zeros((3, 28, 28), np.uint8)
    gray[:, 10:18, 10:18] = 255
    rows = tinted(gray, np.random.default_rng(0))
    with open(tmp_path / "batch", "wb") as f:
        pickle.dump({b"data": rows, b"labels": [0, 1, 2]}, f)
    images, labels = read_cifar_batch(tmp_path / "batch")
    assert images.shape == (3, 32, 32, 3) and list(labels) == [0, 1, 2]
    centre, corner = images[:, 16, 16].astype(int), images[:, 0, 0].astype(int)
    assert (centre.sum(axis=1) > corner.sum(axis=1)).all()  # the garment is brighter than its background
    assert len({tuple(c) for c in centre}) == 3  # a colour of its own per image


def test_the_budget_table_says_when_cnnexp_did_not_run_its_default():
    from benchmarks.tables_training import time_budgets

    def result(overrides):
        rows = [{"side": "baseline", "acc_10min": 0.9}, {"side": "cnnexp", "acc_10min": 0.92, "epochs_run": 10}]
        return {"budgets_minutes": [10], "rows": rows, **({"overrides": overrides} if overrides is not None else {})}

    assert "| cnnexp default |" in time_budgets([result(None)])  # JSON written before overrides were recorded
    assert "| cnnexp, model.dropout=0 |" in time_budgets([result(["model.dropout=0"])])
    with pytest.raises(ValueError, match="different --set overrides"):
        time_budgets([result([]), result(["model.dropout=0"])])
