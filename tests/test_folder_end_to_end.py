"""A user's own folder of images through every command that reads a run back (issue: folder datasets).

The folder is written here: three classes, PNG and JPEG mixed, RGB, 20x24 pixels, resized to 16x16.
"""

from __future__ import annotations

import dataclasses
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from PIL import Image
from servers import free_port, running, server_env
from tests_helpers import tiny_cli_args

from cnnexp.cli import main
from cnnexp.config import build_config
from cnnexp.serving.pyfunc import encode_image
from cnnexp.tracking import tags

COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (40, 50, 210)}


def write_folder(root, per_class: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noise = rng.integers(-40, 40, (20, 24, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            fmt = "png" if i % 2 else "jpg"
            Image.fromarray(pixels, "RGB").save(root / name / f"{i}.{fmt}")
    return root


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "photos")


def _train(folder, *extra) -> str:
    assert main(["train", "--dataset", f"folder:{folder}", *tiny_cli_args(), *extra]) == 0
    runs = mlflow.search_runs(experiment_names=["tests"], order_by=["attributes.start_time DESC"], output_format="list")
    return runs[0].info.run_id


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_train_tune_promote_serve_report_reproduce(tracking, folder, tmp_path, capsys):
    run_id = _train(folder, "--set", "data.image_size=16x16")
    logged = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    assert "!!" not in logged and yaml.safe_load(logged)["data"]["image_size"] == [16, 16]

    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "dataset": f"folder:{folder}",
                "trials": {"epochs": 1},
                "retrain": {"epochs": 2},
                "fixed": {"data.image_size": [16, 16], "model.filters": 4, "model.head_units": 16,
                          "train.precision": "float32", "experiment_name": "tests"},
                "params": {"train.learning_rate": {"type": "float", "low": 2e-3, "high": 5e-3}},
            }
        )
    )  # fmt: skip
    assert main(["tune", "--space", str(space), "--study-name", "photos", "--n-trials", "2", "--seed", "0"]) == 0

    assert main(["promote", "--run", run_id, "--model-name", "photos"]) == 0
    assert main(["promote", "--study", "photos", "--model-name", "photos-study"]) == 0
    champion = mlflow.MlflowClient().get_model_version_by_alias("photos", "champion")
    assert champion.run_id == run_id

    image = Image.open(next((folder / "green").glob("*.png")))
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/photos@champion",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with running(cmd, env=server_env(tracking), cwd=tmp_path, ready_url=url + "/ping", log=tmp_path / "serve.log"):
        payload = {"dataframe_split": {"columns": ["image"], "data": [[encode_image(image)]]}}
        response = requests.post(url + "/invocations", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    served = response.json()["predictions"][0]
    local = mlflow.pyfunc.load_model("models:/photos@champion").predict(pd.DataFrame({"image": [encode_image(image)]}))
    assert served["label"] == local["label"].iloc[0] and served["label"] in COLOURS

    assert main(["report", "--run", run_id, "--out", str(tmp_path / "report")]) == 0
    assert "All recomputed values match the logged ones." in (tmp_path / "report" / "report.md").read_text()

    capsys.readouterr()
    assert main(["reproduce", run_id]) == 0
    source = mlflow.get_run(run_id).data.metrics
    again = mlflow.search_runs(
        experiment_names=["tests"], filter_string=f"tags.`{tags.REPRODUCED_FROM}` = '{run_id}'", output_format="list"
    )[0]
    for name in ("test_accuracy", "test_loss", "best_val_accuracy"):
        assert again.data.metrics[name] == pytest.approx(source[name], abs=1e-6), name


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_a_run_logged_with_the_tuple_tag_of_0_1_0_still_promotes_reports_and_reproduces(tracking, folder, tmp_path):
    run_id = _train(folder)
    cfg = build_config(yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")))
    legacy = yaml.dump(dataclasses.asdict(cfg))  # what 0.1.0 logged: the tuple as !!python/tuple
    assert "!!python/tuple" in legacy
    mlflow.MlflowClient().log_text(run_id, legacy, "config.yaml")
    assert "!!python/tuple" in mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")

    assert main(["promote", "--run", run_id, "--model-name", "legacy"]) == 0
    assert main(["report", "--run", run_id, "--out", str(tmp_path / "r"), "--no-log"]) == 0
    assert main(["reproduce", run_id]) == 0


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_a_broken_config_artifact_is_one_line_naming_run_and_artifact(tracking, folder, capsys):
    run_id = _train(folder)
    mlflow.MlflowClient().log_text(run_id, "data: [unclosed\n", "config.yaml")
    capsys.readouterr()
    assert main(["report", "--run", run_id, "--no-log"]) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("cnnexp:")]
    assert "Traceback" not in err and f"run {run_id}: config.yaml" in line and "not valid YAML" in line
