"""The MLflow side of a study: one parent run per study, trial runs marked with their Optuna state.

Trial runs are created by :func:`cnnexp.training.train.train` with an explicit ``parent_run_id``; this
module owns the parent (created once, its id kept in the study's user attributes, resumed by every
later worker), marks each trial's run with the trial's final state, and keeps the parent's best
value, best params, trials table and Optuna plots up to date.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import mlflow
import optuna
from mlflow.entities import Run
from optuna.trial import FrozenTrial, TrialState

from cnnexp.tracking import tags
from cnnexp.tracking.runs import mark_model_development
from cnnexp.tuning.space import SearchSpace

log = logging.getLogger(__name__)

# How long a worker that lost the creation race waits for the creator to record the parent run.
PARENT_WAIT_SECONDS = 60

T = TypeVar("T")


def retry_locked(fn: Callable[[], T], attempts: int = 6) -> T:
    """Retry an MLflow call that hit SQLite's "database is locked" under concurrent workers."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - MLflow wraps the driver error in several types
            if attempt == attempts - 1 or "locked" not in str(e).lower():
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def trial_tags(study_name: str, number: int) -> dict[str, str]:
    return {tags.STUDY: study_name, tags.ROLE: tags.ROLE_TRIAL, tags.TRIAL_NUMBER: str(number)}


def experiment_id(name: str) -> str:
    """The experiment for a new study: `mlflow run`'s (from the environment) or the named one."""
    exp_id = os.environ.get("MLFLOW_EXPERIMENT_ID") or retry_locked(lambda: mlflow.set_experiment(name)).experiment_id
    retry_locked(lambda: mark_model_development(exp_id))
    return exp_id


def ensure_parent_run(
    study: optuna.Study,
    created: bool,
    storage: optuna.storages.BaseStorage,
    space: SearchSpace,
    storage_url: str,
    experiment_name: str,
) -> str:
    """The study's parent run id: created by the worker that created the study, found by the others."""
    if not created:
        deadline = time.monotonic() + PARENT_WAIT_SECONDS
        while time.monotonic() < deadline:
            run_id = study.user_attrs.get(tags.PARENT_RUN_ATTR)
            if run_id:
                return run_id
            time.sleep(0.5)
            # a fresh Study object re-reads the storage's user attributes
            study = optuna.load_study(study_name=study.study_name, storage=storage)
        log.warning("study %s has no MLflow parent run yet; creating one", study.study_name)
    client = mlflow.MlflowClient()
    run_tags = {
        tags.STUDY: study.study_name,
        tags.ROLE: tags.ROLE_STUDY,
        tags.DIRECTION: space.direction,
        tags.STORAGE: storage_url,
        "mlflow.runName": study.study_name,
    }
    run = retry_locked(lambda: client.create_run(experiment_id(experiment_name), tags=run_tags))
    run_id = run.info.run_id
    params = {
        "space": space.path,
        "dataset": space.dataset,
        "objective": space.objective,
        "direction": space.direction,
        "trials.epochs": space.trial_epochs,
        "trials.train_subset": space.trial_train_subset,
        "retrain.epochs": space.retrain_epochs,
    }
    retry_locked(lambda: client.log_batch(run_id, params=_params(params)))
    retry_locked(lambda: client.log_text(run_id, space.text, "search_space.yaml"))
    study.set_user_attr(tags.PARENT_RUN_ATTR, run_id)
    return run_id


def _params(d: dict[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)) for k, v in d.items()]


@contextmanager
def parent_running(run_id: str) -> Iterator[None]:
    """Mark the parent RUNNING while this worker works and end it with an explicit status."""
    client = mlflow.MlflowClient()
    retry_locked(lambda: client.update_run(run_id, status="RUNNING"))
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException as e:
        reason = f"{type(e).__name__}: {e}"[:4000]
        retry_locked(lambda: client.set_tag(run_id, tags.FAILURE_REASON, reason))
        raise
    finally:
        retry_locked(lambda: client.set_terminated(run_id, status))


def find_trial_run(parent_id: str, number: int) -> Run | None:
    parent = mlflow.MlflowClient().get_run(parent_id)
    runs = retry_locked(
        lambda: mlflow.search_runs(
            experiment_ids=[parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and tags.`{tags.TRIAL_NUMBER}` = '{number}'",
            output_format="list",
        )
    )
    return runs[0] if runs else None


def mark_trial(study_name: str, parent_id: str, trial: FrozenTrial, reason: str | None = None) -> str:
    """Tag the trial's run with its Optuna state; a trial that died before or outside its run gets one."""
    client = mlflow.MlflowClient()
    run = find_trial_run(parent_id, trial.number)
    if run is None:
        exp = client.get_run(parent_id).info.experiment_id
        new_tags = {**trial_tags(study_name, trial.number), "mlflow.parentRunId": parent_id}
        new_tags["mlflow.runName"] = f"{study_name}-trial-{trial.number}"
        run = retry_locked(lambda: client.create_run(exp, tags=new_tags))
        retry_locked(lambda: client.log_batch(run.info.run_id, params=_params(trial.params)))
    run_id = run.info.run_id
    run_tags = {tags.TRIAL_STATE: trial.state.name}
    if trial.value is not None:
        run_tags[tags.TRIAL_VALUE] = str(trial.value)
    reason = reason or trial.system_attrs.get("fail_reason")
    if trial.state == TrialState.FAIL and reason and tags.FAILURE_REASON not in run.data.tags:
        run_tags[tags.FAILURE_REASON] = reason[:4000]
    for key, value in run_tags.items():
        retry_locked(lambda k=key, v=value: client.set_tag(run_id, k, v))
    if trial.state == TrialState.FAIL and run.info.status in ("RUNNING", "SCHEDULED"):
        retry_locked(lambda: client.set_terminated(run_id, "FAILED"))
    return run_id


def completed(study: optuna.Study) -> list[FrozenTrial]:
    # Pruned trials carry a partial value: only COMPLETE trials can be the best.
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    done = completed(study)
    if not done:
        return None
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    return pick(done, key=lambda t: t.value)


def log_best(parent_id: str, study: optuna.Study) -> FrozenTrial | None:
    """Best value as a metric (its history is the study's progress), best params as tags and JSON."""
    best = best_trial(study)
    if best is None:
        return None
    client = mlflow.MlflowClient()
    n_finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    retry_locked(lambda: client.log_metric(parent_id, "best_value", best.value, step=n_finished))
    # Params are immutable in MLflow and the best changes: tags and an artifact, never log_param.
    run_tags = {
        tags.BEST_TRIAL: str(best.number),
        **{f"{tags.BEST_PARAM_PREFIX}{k}": str(v) for k, v in best.params.items()},
    }
    for key, value in run_tags.items():
        retry_locked(lambda k=key, v=value: client.set_tag(parent_id, k, v))
    payload = {"trial": best.number, "value": best.value, "params": best.params}
    retry_locked(lambda: client.log_text(parent_id, json.dumps(payload, indent=2), "best_params.json"))
    return best
