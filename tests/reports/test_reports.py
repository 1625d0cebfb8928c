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


def test_validation_and_test_loss_share_one_scale(store):
    """best_val_loss is plain cross-entropy like test_loss; the label-smoothed one is named so (TINY smooths 0.1)."""
    root, result = store
    client = mlflow.MlflowClient()
    metrics = mlflow.get_run(result.run_id).data.metrics
    plain = [m.value for m in client.get_metric_history(result.run_id, "val_crossentropy")]
    smoothed = [m.value for m in client.get_metric_history(result.run_id, "val_loss")]
    assert len(plain) == len(smoothed) == TINY["train.epochs"]
    assert metrics["best_val_loss"] == pytest.approx(min(plain))
    assert metrics["best_val_loss_smoothed"] == pytest.approx(min(smoothed))
    assert metrics["best_val_loss_smoothed"] > metrics["best_val_loss"]  # smoothing adds its own floor
    from cnnexp.reports.run import report_run

    text = report_run(result.run_id, root / "r-scale", log=False).markdown.read_text()
    assert "best_val_loss is plain cross-entropy, as test_loss" in text


def test_runs_table_sorts_shows_and_refuses(store, capsys):
    _, result = store
    mlflow.set_experiment("tests")
    with mlflow.start_run(tags={tags.KIND: "exploration"}) as exploration:  # as `cnnexp explore` tags its runs
        mlflow.log_param("data.dataset", "digits")
    try:
        # Losses and calibration errors sort ascending (best first), and the sort column is shown.
        assert main(["runs", "--experiment", "tests", "--sort", "test_ece", "--metrics", "test_accuracy"]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines[0].split()[:5] == ["run_id", "run_name", "status", "test_ece", "test_accuracy"]
        ece = [float(line.split()[3]) for line in lines[1:]]
        assert ece == sorted(ece)
        # Training runs only by default: the exploration run appears only when asked for.
        assert exploration.info.run_id not in "\n".join(lines)
        assert main(["runs", "--experiment", "tests", "--kind", "exploration", "--metrics", ""]) == 0
        assert exploration.info.run_id in capsys.readouterr().out
        # Unknown names are refused in one line that lists the known ones.
        for argv, message in (
            (["--sort", "nosuch"], "metric 'nosuch' not logged by any of these runs; known: "),
            (["--metrics", "test_accuracy,nosuch"], "metric 'nosuch' not logged"),
            (["--params", "nosuch"], "param 'nosuch' not logged"),
            (["--filter", "garbage ==="], "filter 'garbage ===' is not a valid MLflow search filter"),
            (["--filter", "metrics.test_accuracy > abc"], "Expected numeric value type for metric. Found abc"),
        ):
            assert main(["runs", "--experiment", "tests", *argv]) == 2
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    finally:
        mlflow.delete_run(exploration.info.run_id)


def test_model_report_keeps_the_run_report_and_names_a_missing_alias(store, capsys):
    root, result = store
    client = mlflow.MlflowClient()
    if not client.search_registered_models("name = 'digits-report'"):
        mlflow.register_model(f"runs:/{result.run_id}/model", "digits-report")
    client.set_registered_model_alias("digits-report", "champion", "1")
    assert main(["report", "--run", result.run_id, "--out", str(root / "r-run")]) == 0
    assert main(["report", "--model", "models:/digits-report@champion", "--out", str(root / "r-model")]) == 0
    assert "under report/models/digits-report-v1/ of run" in capsys.readouterr().out
    logged = _artifacts(result.run_id, "report")
    assert "report/report.md" in logged and "report/models/digits-report-v1/report.md" in logged
    run_report = mlflow.artifacts.load_text(f"runs:/{result.run_id}/report/report.md")
    assert "registered version" not in run_report  # the run's own report was not overwritten
    assert main(["report", "--model", "models:/digits-report@nope", "--no-log"]) == 1
    assert "registered model 'digits-report' alias 'nope' not found" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["report", "explore"])
def test_an_unusable_out_folder_is_one_line(store, command, capsys):
    _, result = store
    target = ["--run", result.run_id] if command == "report" else ["--dataset", "digits"]
    before = len(mlflow.search_runs(search_all_experiments=True))
    assert main([command, *target, "--out", "/dev/null/x"]) == 2
    err = capsys.readouterr().err
    assert err == "cnnexp: configuration error: output folder '/dev/null/x' cannot be created: Not a directory\n"
    assert len(mlflow.search_runs(search_all_experiments=True)) == before  # failed before any run started
