"""Everything a finished run recorded, read back: config, tags, metrics, history, model and data.

Reports, promotion and ``cnnexp reproduce`` all start from an MLflow run id and rebuild what they
need from its record alone: :func:`load_record` reads and validates its ``config.yaml``, and
:func:`rebuild_split` is the one place that rebuilds its exact split and checks it is the same.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache

import keras
import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from cnnexp.config import DataConfig, ExperimentConfig, logged_config
from cnnexp.config_io import parse_yaml
from cnnexp.data.dataset import Dataset
from cnnexp.data.sources import load_dataset
from cnnexp.data.split import Split, split_dataset
from cnnexp.errors import ConfigError, DataChanged, RunError
from cnnexp.tracking import tags

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
CONFIG_ARTIFACT = "config.yaml"


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


def load_record(run: str | Run) -> RunRecord:
    """The run (by id, or as fetched) and its logged ``config.yaml``, validated as any config file is."""
    run = get_run(run) if isinstance(run, str) else run
    run_id = run.info.run_id
    where = f"run {run_id}: {CONFIG_ARTIFACT}"
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{CONFIG_ARTIFACT}")
    except (MlflowException, OSError):
        raise RunError(f"run {run_id} has no {CONFIG_ARTIFACT} artifact: it was not made by `cnnexp train`") from None
    try:
        config = logged_config(parse_yaml(text, where))
    except ConfigError as e:
        message = str(e).removeprefix(where + ": ")
        raise RunError(f"{where} is not a valid config for this cnnexp version: {message}") from None
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


@lru_cache(maxsize=2)
def _load_cached(data_json: str) -> Dataset:
    # Promotion scores champion and challenger on one dataset: load it once per process.
    return load_dataset(DataConfig(**json.loads(data_json)))


def _load(cfg: DataConfig) -> Dataset:
    data = dataclasses.asdict(cfg)
    del data["augment"]  # augmentation does not change the data
    return _load_cached(json.dumps(data, sort_keys=True))


def rebuild_split(record: RunRecord) -> Split:
    """The run's exact train/validation/test split, refused unless its data and split hashes match the record."""
    cfg = record.config
    split = split_dataset(_load(cfg.data), cfg.data, cfg.train.seed)
    recorded_data, recorded_split = record.tags.get(tags.DATA_HASH), record.tags.get(tags.SPLIT_HASH)
    if recorded_data and recorded_data != split.data_hash:
        raise DataChanged(
            f"the {cfg.data.dataset} data on this machine does not match run {record.run_id}: "
            f"its content hash is {split.data_hash[:12]}..., the run recorded {recorded_data[:12]}... "
            "Restore the original dataset files (or point data.data_dir at them) to re-use this run."
        )
    if recorded_split and recorded_split != split.split_hash:
        # Same data, another split: the split algorithm changed. Comparing would mix test and training images.
        raise RunError(
            f"the split of run {record.run_id} ({recorded_split}) cannot be rebuilt: "
            f"this version of cnnexp splits the same data into {split.split_hash}"
        )
    return split


def load_keras_model(run_id: str | None = None, model_uri: str | None = None) -> keras.Model:
    """The Keras model inside the run's logged pyfunc model (or inside any pyfunc model URI)."""
    uri = model_uri or f"runs:/{run_id}/model"
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as e:
        raise RunError(f"cannot load the model at {uri} ({str(e).splitlines()[0]})") from None
    return pyfunc.unwrap_python_model().model


def newest_study_run(study: str, role: str, *, finished: bool = False) -> Run | None:
    """The newest run of a study (tag ``cnnexp.study``) in the given role, across experiments; None if none."""
    if not study or any(c in study for c in "'\"\\"):
        raise RunError(f"study name {study!r} must be non-empty, without quotes or backslashes")
    where = [f"tags.`{tags.STUDY}` = '{study}'", f"tags.`{tags.ROLE}` = '{role}'"]
    if finished:
        where.append("attributes.status = 'FINISHED'")
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=" AND ".join(where),
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None
