"""What promotion compares: a training run found by id or by study, and the test set it was measured on.

The test set is rebuilt from the run's logged ``config.yaml`` with the same loader and split code
the run used; the rebuilt split must hash to the run's recorded ``cnnexp.split_hash``, so a model
is never scored on data other than what its run recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from cnnexp.errors import PromotionError
from cnnexp.tracking import tags
from cnnexp.tracking.record import load_record, newest_study_run, rebuild_split

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
    best = newest_study_run(study, tags.ROLE_BEST, finished=True)
    if best is not None:
        return get_training_run(best.info.run_id)
    base = f"tags.`{tags.STUDY}` = '{study}'"
    if mlflow.search_runs(search_all_experiments=True, filter_string=base, max_results=1, output_format="list"):
        raise PromotionError(f"study {study!r} has no finished retrained best run ({tags.ROLE}={tags.ROLE_BEST}) yet")
    raise PromotionError(f"no run tagged {tags.STUDY}={study!r} in the tracking store {mlflow.get_tracking_uri()}")


def held_out_set(run: Run) -> HeldOut:
    """The run's test set, rebuilt from its record (refused if the data or split no longer match)."""
    record = load_record(run)
    split = rebuild_split(record)
    dataset = record.config.data.dataset
    return HeldOut(split.x_test, split.y_test, split.class_names, dataset, split.split_hash, split.part_hash("test"))
