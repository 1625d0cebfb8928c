"""Everything a finished run recorded, read back: config, tags, metrics, history, model and data.

Reports, analysis of old runs or registered model versions, and ``cnnexp reproduce`` all start
from an MLflow run id and rebuild what they need from its record alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import mlflow
import yaml
from mlflow.exceptions import MlflowException

from cnnexp.config import ExperimentConfig, config_from_dict
from cnnexp.data.sources import load_dataset
from cnnexp.data.split import Split, split_dataset
from cnnexp.errors import ConfigError, DataChanged, RunError
from cnnexp.tracking import tags

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class RunRecord:
    run: mlflow.entities.Run
    config: ExperimentConfig

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def tags(self) -> dict[str, str]:
        return self.run.data.tags

    @property
    def metrics(self) -> dict[str, float]:
        return self.run.data.metrics

    @property
    def params(self) -> dict[str, str]:
        return self.run.data.params


def get_run(run_id: str) -> mlflow.entities.Run:
    try:
        return mlflow.MlflowClient().get_run(run_id)
    except MlflowException as e:
        uri = mlflow.get_tracking_uri()
        raise RunError(f"run {run_id!r} not found in tracking store {uri} ({e.message.splitlines()[0]})") from None


def load_record(run_id: str) -> RunRecord:
    """The run and its logged ``config.yaml``, parsed and validated as when it was trained."""
    run = get_run(run_id)
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml")
    except (MlflowException, OSError):
        raise RunError(f"run {run_id} has no config.yaml artifact: it was not made by `cnnexp train`") from None
    with open(path) as f:
        data = yaml.safe_load(f)
    try:
        config = config_from_dict(data)
    except ConfigError as e:
        raise RunError(f"run {run_id}: its config.yaml is not valid for this cnnexp version: {e}") from None
    return RunRecord(run, config)


def run_id_of_model_uri(uri: str) -> str:
    """The training run behind ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``."""
    rest = uri.removeprefix("models:/")
    if rest == uri or not rest:
        raise RunError(f"{uri!r} is not a registered model URI: use models:/NAME/VERSION or models:/NAME@ALIAS")
    name, _, version = rest.rpartition("@") if "@" in rest else rest.rpartition("/")
    if not name or not version:
        raise RunError(f"{uri!r}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
    return run_id_of_model_version(name, version)


def run_id_of_model_version(name: str, version: str) -> str:
    """The training run behind a registered model version (``version`` may be a number or an alias)."""
    client = mlflow.MlflowClient()
    try:
        mv = (
            client.get_model_version(name, version)
            if version.isdigit()
            else client.get_model_version_by_alias(name, version)
        )
    except MlflowException as e:
        what = f"version {version!r}" if version.isdigit() else f"alias {version!r}"
        raise RunError(f"registered model {name!r} {what} not found ({e.message.splitlines()[0]})") from None
    if not mv.run_id:
        raise RunError(f"registered model {name!r} version {version} has no source run to analyse")
    return mv.run_id


def history(run_id: str) -> dict[str, list[float]]:
    """Per-epoch curves (as autolog logged them), ordered by epoch."""
    client = mlflow.MlflowClient()
    out = {}
    for key in HISTORY_KEYS:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        if points:
            out[key] = [m.value for m in points]
    return out


def check_data_hash(record: RunRecord, split: Split) -> None:
    """Refuse to go on when the data content differs from what the run recorded."""
    recorded = record.tags.get(tags.DATA_HASH)
    if recorded and recorded != split.data_hash:
        raise DataChanged(
            f"the {record.config.data.dataset} data on this machine does not match run {record.run_id}: "
            f"its content hash is {split.data_hash[:12]}..., the run recorded {recorded[:12]}... "
            "Restore the original dataset files (or point --data-dir at them) to re-use this run."
        )


def load_split(record: RunRecord) -> Split:
    """The run's exact train/validation/test split, after checking the data is the same."""
    cfg = record.config
    split = split_dataset(load_dataset(cfg.data), cfg.data, cfg.train.seed)
    check_data_hash(record, split)
    return split


def load_keras_model(run_id: str | None = None, model_uri: str | None = None) -> keras.Model:
    """The Keras model inside the run's logged pyfunc model (or inside any pyfunc model URI)."""
    uri = model_uri or f"runs:/{run_id}/model"
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as e:
        raise RunError(f"cannot load the model at {uri} ({str(e).splitlines()[0]})") from None
    return pyfunc.unwrap_python_model().model
