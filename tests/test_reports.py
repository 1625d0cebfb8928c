"""Analysis logged by training, run reports, registered-model reports, reproduce and the runs table.

One tiny digits run is trained once for the module (a real training run in a real SQLite store);
each test reads it back the way a user would, through the ``cnnexp`` command.
"""

import re

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import TINY, tracking_store
from PIL import Image

from cnnexp.cli import main
from cnnexp.config import build_config
from cnnexp.tracking import tags
from cnnexp.training.train import train


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    with tracking_store(root):
        result = train(build_config(overrides=TINY))
        yield root, result


def _artifacts(run_id, path=""):
    out = []
    for item in mlflow.MlflowClient().list_artifacts(run_id, path):
        out += _artifacts(run_id, item.path) if item.is_dir else [item.path]
    return out


def _download(run_id, path):
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)


def test_training_logs_analysis(store):
    _, result = store
    run_id = result.run_id
    files = _artifacts(run_id, "analysis")
    for name in ("reliability_diagram.png", "misclassified.png", "confused_pairs.csv", "confidently_wrong.csv"):
        assert f"analysis/{name}" in files
    run = mlflow.get_run(run_id)
    # ECE logged = bin-weighted |accuracy - confidence| of the logged bins
    bins = pd.read_csv(_download(run_id, "analysis/calibration_bins.csv"))
    filled = bins[bins["count"] > 0]
    ece = (filled["count"] / filled["count"].sum() * (filled["accuracy"] - filled["confidence"]).abs()).sum()
    assert run.data.metrics["test_ece"] == pytest.approx(ece, abs=1e-9)
    assert filled["count"].sum() == 360
    wrong = pd.read_csv(_download(run_id, "analysis/confidently_wrong.csv"), dtype={"true": str, "predicted": str})
    assert len(wrong) > 0 and (wrong["true"] != wrong["predicted"]).all()
    assert wrong["confidence"].is_monotonic_decreasing
    # the wrong images really are wrong: re-predict them with the trained model
    probs = result.model.predict(result.split.x_test[wrong["index"]].astype(np.float32), verbose=0)
    assert [str(i) for i in probs.argmax(axis=1)] == wrong["predicted"].tolist()
    summary = open(_download(run_id, "analysis/summary.md")).read()
    assert "## Strengths" in summary and "## Limitations" in summary and "Weakest classes (F1)" in summary
    assert Image.open(_download(run_id, "analysis/reliability_diagram.png")).size[0] > 200


def test_report_for_run(store, capsys):
    root, result = store
    out = root / "report-run"
    assert main(["report", "--run", result.run_id, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    for section in (
        "## Data",
        "## Model and parameters",
        "## Training curves",
        "## Test metrics",
        "## Confusion matrix",
    ):
        assert section in text
    for section in ("## Misclassifications", "## Calibration", "## Findings", "### Next steps"):
        assert section in text
    logged = mlflow.get_run(result.run_id).data.metrics
    row = re.search(r"\| test_accuracy\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*(\w+)", text)
    assert row.group(1) == row.group(2) == f"{logged['test_accuracy']:.4f}" and row.group(3) == "yes"
    assert "All recomputed values match the logged ones." in text
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert len(links) == 5 and all((out / link).is_file() for link in links)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and 'src="figures/' not in html
    logged_files = _artifacts(result.run_id, "report")
    assert "report/report.md" in logged_files and "report/figures/training_curves.png" in logged_files
    assert mlflow.get_run(result.run_id).info.status == "FINISHED"
    assert result.run_id in capsys.readouterr().out


def test_report_for_registered_model_version(store):
    root, result = store
    mlflow.register_model(f"runs:/{result.run_id}/model", "digits-cnn")
    mlflow.MlflowClient().set_registered_model_alias("digits-cnn", "champion", "1")
    out = root / "report-model"
    assert main(["report", "--model", "models:/digits-cnn@champion", "--out", str(out), "--no-log"]) == 0
    text = (out / "report.md").read_text()
    assert "registered version `models:/digits-cnn@champion`" in text and result.run_id in text
    assert (out / "figures" / "misclassified.png").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--run", "0" * 32], "not found in tracking store"),
        (["--model", "models:/no-such-model/1"], "registered model 'no-such-model' version '1' not found"),
        (["--model", "digits-cnn"], "is not a registered model URI"),
        (["--study", "nope"], "no study named 'nope'"),
    ],
)
def test_report_bad_target_is_named(store, argv, message, capsys):
    assert main(["report", *argv, "--no-log"]) == 1
    assert message in capsys.readouterr().err


def test_reproduce_same_metrics(store, capsys):
    _, result = store
    assert main(["reproduce", result.run_id]) == 0
    out = capsys.readouterr().out
    copies = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`cnnexp.reproduced_from` = '{result.run_id}'",
        output_format="list",
    )
    assert len(copies) == 1 and copies[0].info.status == "FINISHED"
    new = copies[0].data.metrics
    old = mlflow.get_run(result.run_id).data.metrics
    assert new["test_accuracy"] == old["test_accuracy"]
    assert re.search(rf"test_accuracy\s+{old['test_accuracy']:.4f}\s+{new['test_accuracy']:.4f}\s+\+0\.0000", out)
    assert copies[0].info.run_id in out


def test_reproduce_refuses_changed_data(store, capsys):
    _, result = store
    client = mlflow.MlflowClient()
    real = mlflow.get_run(result.run_id).data.tags[tags.DATA_HASH]
    before = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    client.set_tag(result.run_id, tags.DATA_HASH, "f" * 64)  # as if the files had changed since
    try:
        assert main(["reproduce", result.run_id]) == 1
    finally:
        client.set_tag(result.run_id, tags.DATA_HASH, real)
    err = capsys.readouterr().err
    assert "does not match run" in err and "ffffffffffff" in err
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == before  # no run started


def test_runs_table_compares_by_metric(store, capsys):
    _, result = store
    assert (
        main(["runs", "--experiment", "tests", "--metrics", "test_accuracy,test_ece", "--params", "model.filters"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["run_id", "run_name", "status", "test_accuracy", "test_ece", "model.filters"]
    ids = [line.split()[0] for line in lines[1:]]
    assert result.run_id in ids and len(ids) == len(mlflow.search_runs(experiment_names=["tests"]))
    accuracy = f"{mlflow.get_run(result.run_id).data.metrics['test_accuracy']:.4f}"
    assert accuracy in lines[ids.index(result.run_id) + 1]
    assert main(["runs", "--experiment", "nope"]) == 1
    assert "no experiment named 'nope'" in capsys.readouterr().err
