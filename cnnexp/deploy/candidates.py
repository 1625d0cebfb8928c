"""What promotion compares: a training run found by id or by study, and the test set it was measured on.

The test set is rebuilt from the run's logged ``config.yaml`` with the same loader and split code
the run used; the rebuilt split must hash to the run's recorded ``cnnexp.split_hash``, so a model
is never scored on data other than what its run recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import mlflow
import numpy as np
import yaml
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from cnnexp.config import DataConfig, config_from_dict
from cnnexp.data.sources import Dataset, load_dataset
from cnnexp.data.split import split_dataset
from cnnexp.errors import ConfigError, PromotionError
from cnnexp.tracking import tags

MODEL_ARTIFACT = "model"


@dataclass
class HeldOut:
    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]
    dataset: str
    split_hash: str
    test_hash: str  # identifies the test examples alone, whatever the train/val split was


def get_training_run(run_id: str) -> tuple[Run, str]:
    """The run, which must have finished and logged a ``model``, and that model's URI."""
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        raise PromotionError(f"run {run_id!r} not found in the tracking store {mlflow.get_tracking_uri()}") from None
    if run.info.status != "FINISHED":
        raise PromotionError(f"run {run_id} is {run.info.status}, not FINISHED: only finished runs can be promoted")
    logged = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_ARTIFACT}'",
        output_format="list",
    )
    if not logged:
        raise PromotionError(f"run {run_id} logged no '{MODEL_ARTIFACT}' (trained with log_model=False?)")
    return run, logged[0].model_uri


def find_study_run(study: str) -> tuple[Run, str]:
    """The newest finished retrained-best run of a study (tags cnnexp.study=NAME, cnnexp.role=best)."""
    if not study or "'" in study:
        raise PromotionError(f"study name {study!r} must be non-empty and contain no quote")
    base = f"tags.`{tags.STUDY}` = '{study}'"
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"{base} AND tags.`{tags.ROLE}` = '{tags.ROLE_BEST}' AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    if runs:
        return get_training_run(runs[0].info.run_id)
    if mlflow.search_runs(search_all_experiments=True, filter_string=base, max_results=1, output_format="list"):
        raise PromotionError(f"study {study!r} has no finished retrained best run ({tags.ROLE}={tags.ROLE_BEST}) yet")
    raise PromotionError(f"no run tagged {tags.STUDY}={study!r} in the tracking store {mlflow.get_tracking_uri()}")


@lru_cache(maxsize=2)
def _load(dataset: str, data_dir: str | None, image_size, channels, skip_bad_images: bool) -> Dataset:
    # Champion and challenger usually share a dataset: load it once per process.
    return load_dataset(
        DataConfig(
            dataset=dataset,
            data_dir=data_dir,
            image_size=image_size,
            channels=channels,
            skip_bad_images=skip_bad_images,
        )
    )


def held_out_set(run: Run) -> HeldOut:
    """Rebuild the run's test set from its logged config; refuse if the data no longer matches."""
    run_id = run.info.run_id
    try:
        raw = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    except MlflowException:
        raise PromotionError(f"run {run_id} has no config.yaml: not a cnnexp training run") from None
    try:
        cfg = config_from_dict(yaml.safe_load(raw))
    except ConfigError as e:
        raise PromotionError(f"run {run_id}: its logged config.yaml is not valid for this cnnexp ({e})") from None
    d = cfg.data
    tuple_size = tuple(d.image_size) if d.image_size else None
    split = split_dataset(_load(d.dataset, d.data_dir, tuple_size, d.channels, d.skip_bad_images), d, cfg.train.seed)
    recorded = run.data.tags.get(tags.SPLIT_HASH)
    if recorded != split.split_hash:
        raise PromotionError(
            f"run {run_id}: rebuilding its split from config.yaml gives split hash {split.split_hash}, "
            f"but the run recorded {recorded}: the dataset files changed since training"
        )
    return HeldOut(split.x_test, split.y_test, split.class_names, d.dataset, split.split_hash, split.part_hash("test"))
