"""Smoke runs of the benchmarks (issue 6): each script runs end to end on digits with a tiny model and
writes its JSON with positive numbers. They check the scripts, they measure nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from conftest import tracking_store

from benchmarks import input_pipeline, serving, tracking_overhead


def _result(out: Path, name: str) -> dict:
    path = out / f"{name}.json"
    assert path.is_file()
    data = json.loads(path.read_text())
    assert data["benchmark"] == name and 1 <= data["machine"]["usable_cores"] <= data["machine"]["cores"]
    return data


def _all_positive(summary: dict, sides: set[str], metrics: set[str]) -> None:
    assert set(summary) == sides
    for side, per_metric in summary.items():
        assert metrics <= set(per_metric), side
        for metric in metrics:
            spread = per_metric[metric]
            assert spread["n"] == 1 and spread["median"] > 0 and spread["min"] <= spread["max"], (side, metric)


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_tracking_overhead_smoke(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    tracking_overhead.main(["--smoke", "--repeats", "1", "--out", str(tmp_path / "out")])
    data = _result(tmp_path / "out", "tracking_overhead")
    _all_positive(data["summary"], {"bare", "tracked"}, {"images_per_s", "epoch_s"})
    assert data["ratio_tracked_over_bare"] > 0 and data["target"] == 0.95
    assert data["settings"]["timed_epochs"] >= 1 and data["settings"]["train_images"] > 1000
    assert list(cwd.iterdir()) == []  # the throwaway store lived in a temporary folder, not in ./mlruns


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_input_pipeline_smoke(tmp_path):
    input_pipeline.main(["--smoke", "--repeats", "1", "--out", str(tmp_path)])
    data = _result(tmp_path, "input_pipeline")
    sides = {"pipeline aug", "pipeline no-aug", "model step", "fit aug", "fit no-aug"}
    _all_positive(data["summary"], sides, {"images_per_s", "cpu_ms_per_100_images", "cores_busy"})
    assert data["ratios"]["pipeline_aug_over_model_step"] > 0 and data["ratios"]["fit_aug_over_fit_no_aug"] > 0
    assert data["settings"]["augment"]["shift"] > 0


SERVING_SIDES = {"server", "pyfunc", "keras predict()", "keras predict_on_batch()", "keras call (eager)"}
SERVING_METRICS = {"p50_ms", "p99_ms", "mean_ms", "batch_images_per_s"}


def test_serving_smoke_against_the_session_server(tmp_path, champion_store, scoring_server):
    """The session's `mlflow models serve` of the champion (shared with test_serving.py) as the server side."""
    argv = ["--smoke", "--repeats", "1", "--out", str(tmp_path / "out")]
    argv += ["--model-uri", champion_store["model_uri"], "--server-url", scoring_server]
    with tracking_store(champion_store["root"], champion_store["uri"]):
        serving.main(argv)
    data = _result(tmp_path / "out", "serving")
    _all_positive(data["summary"], SERVING_SIDES, SERVING_METRICS)
    assert data["ratio_server_over_pyfunc_p50"] > 0 and data["server_startup_s"] is None


@pytest.mark.slow
def test_serving_smoke_starts_and_stops_its_own_server(tmp_path, monkeypatch):
    """Trains and logs a tiny model, starts `mlflow models serve` itself and stops it again."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    payload = serving.main(["--smoke", "--repeats", "1", "--out", str(tmp_path / "out")])
    data = _result(tmp_path / "out", "serving")
    _all_positive(data["summary"], SERVING_SIDES, SERVING_METRICS)
    assert data["server_startup_s"] > 0 and payload["meets_target"] == data["meets_target"]
    assert list(cwd.iterdir()) == []
    with pytest.raises(requests.ConnectionError):  # the server was stopped
        requests.get(data["server_url"] + "/ping", timeout=5)
