"""Shared fixtures: a tiny, fast config and an isolated MLflow tracking store per test."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mlflow  # noqa: E402
import pytest  # noqa: E402

from cnnexp.config import ExperimentConfig, build_config  # noqa: E402

TINY = {
    "data.dataset": "digits",
    "model.filters": 8,
    "model.convs_per_block": 1,
    "model.head_units": 32,
    "train.epochs": 2,
    "train.batch_size": 64,
    "train.learning_rate": 3e-3,
    "experiment_name": "tests",
}


@pytest.fixture
def tiny_overrides() -> dict:
    """Dotted overrides for a model that trains on digits in a few seconds."""
    return dict(TINY)


@pytest.fixture
def tiny_config(tiny_overrides) -> ExperimentConfig:
    return build_config(overrides=tiny_overrides)


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> str:
    """A fresh SQLite tracking store with artifacts under tmp_path; the cwd is tmp_path too."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # MLflow's set_experiment/set_tracking_uri write these to os.environ; restore them afterwards.
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def champion_store(tmp_path_factory) -> dict:
    """One tiny digits model, trained once per session and promoted to ``digits-test@champion``.

    For tests that serve the registered model from other processes: returns the tracking URI,
    the store's directory (use it as cwd), the model URI and the training run's test images.
    """
    from cnnexp.registry import promote
    from cnnexp.train import train

    root = tmp_path_factory.mktemp("champion_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # artifacts land in root/mlruns
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            mp.setenv(name, "")  # recorded, so that leaving the context removes what MLflow sets
            mp.delenv(name)
        mlflow.set_tracking_uri(uri)
        try:
            result = train(build_config(overrides={**TINY, "train.epochs": 3}))
            decision = promote("digits-test", run_id=result.run_id)
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)
    return {
        "uri": uri,
        "root": root,
        "model_uri": "models:/digits-test@champion",
        "run_id": result.run_id,
        "version": decision.version,
        "x_test": result.split.x_test,
        "y_test": result.split.y_test,
        "expected": result.model.predict(result.split.x_test[:8].astype("float32"), verbose=0).argmax(axis=1),
    }
