import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from PIL import Image

from cnnexp.cli import main
from cnnexp.tracking import tags

ROOT = Path(__file__).resolve().parents[2]


def test_explore_writes_and_logs_files(tracking, tmp_path, capsys):
    out = tmp_path / "expl"
    assert main(["explore", "--dataset", "digits", "--experiment-name", "tests", "--out", str(out)]) == 0
    counts = pd.read_csv(out / "class_counts.csv", dtype={"class": str})
    assert counts["class"].tolist() == [str(i) for i in range(10)]
    assert counts[["train", "val", "test"]].sum().tolist() == [1257, 180, 360]  # the split training uses
    for png in ("sample_grid.png", "class_counts.png", "pixel_histogram.png", "mean_images.png"):
        with Image.open(out / png) as img:
            assert img.size[0] >= 400, png
    summary = (out / "summary.md").read_text()
    assert "8x8 pixels, 1 channel(s), 10 classes" in summary and "1257 train, 180 validation, 360 test" in summary

    run = mlflow.search_runs(experiment_names=["tests"], output_format="list")[0]
    assert run.info.status == "FINISHED" and run.data.tags[tags.KIND] == "exploration"
    assert run.data.params["split.test_size"] == "360" and len(run.data.tags[tags.DATA_HASH]) == 64
    logged = {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "exploration")}
    assert {f"exploration/{p.name}" for p in out.iterdir()} == logged
    assert run.info.run_id in capsys.readouterr().out


def test_explore_bad_dataset_is_named(tracking, tmp_path, capsys):
    assert main(["explore", "--dataset", "imagenet", "--out", str(tmp_path / "x")]) == 2
    assert "data.dataset='imagenet' is unknown" in capsys.readouterr().err
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_mlflow_run_explore_entry_point(tracking, tmp_path):
    """`mlflow run . -e explore --env-manager local`: the exploration lands in the run MLflow created."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PATH": path}
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "explore", "--env-manager", "local"]
    cmd += ["--experiment-name", "proj", "-P", "dataset=digits", "-P", f"out={tmp_path / 'out'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=["proj"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags[tags.KIND] == "exploration"
    assert runs[0].data.tags["mlflow.project.entryPoint"] == "explore"
    logged = {f.path for f in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "exploration")}
    assert "exploration/sample_grid.png" in logged and (tmp_path / "out" / "sample_grid.png").is_file()


@pytest.mark.slow
def test_explore_fashion_mnist(tracking, tmp_path):
    """The real Fashion-MNIST files (Debian's dataset-fashion-mnist): named classes, the official test set."""
    out = tmp_path / "fm"
    assert main(["explore", "--dataset", "fashion_mnist", "--out", str(out)]) == 0
    counts = pd.read_csv(out / "class_counts.csv")
    assert counts["class"].tolist()[:3] == ["T-shirt/top", "Trouser", "Pullover"]
    assert set(counts["train"]) == {5400} and set(counts["val"]) == {600} and set(counts["test"]) == {1000}
    assert "balanced, 10.0% each" in (out / "summary.md").read_text()
