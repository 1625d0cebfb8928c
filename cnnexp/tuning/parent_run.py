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
from collections.abc import Callable
from typing import Any

import mlflow
import optuna
from mlflow.entities import Run
from optuna.trial import FrozenTrial, TrialState

from cnnexp.errors import ConfigError
from cnnexp.tracking import tags
from cnnexp.tracking.runs import MAX_REASON, mark_model_development, retry_locked
from cnnexp.tuning import storage as storages
from cnnexp.tuning.space import SearchSpace

log = logging.getLogger(__name__)

# How long a worker that lost the creation race waits for the creator to record the parent run.
PARENT_WAIT_SECONDS = 60
# Characters that would break the MLflow filters the study's runs are found with.
_NAME_FORBIDDEN = "'\"`\\"


def check_study_name(name: str) -> None:
    if not name.strip() or any(c in name for c in _NAME_FORBIDDEN):
        raise ConfigError(
            f"study name {name!r}: must be non-empty, without quotes or backslashes (MLflow searches match it)"
        )


def trial_tags(study_name: str, number: int, space_digest: str | None = None) -> dict[str, str]:
    out = {tags.STUDY: study_name, tags.ROLE: tags.ROLE_TRIAL, tags.TRIAL_NUMBER: str(number)}
    return out | ({tags.SPACE_DIGEST: space_digest} if space_digest else {})


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
        "space": space.path,  # the space the study was created with; see record_space for later ones
        "space.digest": space.digest,
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


def _trial_runs(parent_id: str, condition: str) -> list[Run]:
    """The parent's child runs that also match ``condition`` (an MLflow filter)."""
    parent = mlflow.MlflowClient().get_run(parent_id)
    return retry_locked(
        lambda: mlflow.search_runs(
            experiment_ids=[parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and {condition}",
            output_format="list",
        )
    )


def find_trial_run(parent_id: str, number: int) -> Run | None:
    runs = _trial_runs(parent_id, f"tags.`{tags.TRIAL_NUMBER}` = '{number}'")
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
    reason = reason or trial.user_attrs.get(tags.FAIL_REASON_ATTR)
    if trial.state == TrialState.FAIL and reason and tags.FAILURE_REASON not in run.data.tags:
        run_tags[tags.FAILURE_REASON] = reason[:MAX_REASON]
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


def retry_hook(reason: str) -> Callable[[optuna.Study, FrozenTrial], None]:
    """For trials that a dead worker left RUNNING: their runs end FAILED with ``reason`` (``{worker}`` is filled in)."""

    def hook(study: optuna.Study, trial: FrozenTrial) -> None:
        parent = study.user_attrs.get(tags.PARENT_RUN_ATTR)
        if parent:
            worker = trial.user_attrs.get(tags.WORKER_ATTR, "?")
            mark_trial(study.study_name, parent, trial, reason.format(worker=worker) + "; the trial is retried")

    return hook


def already_retrained(study: optuna.Study, best: FrozenTrial) -> bool:
    """A resumed study whose best trial did not change keeps its retrained model (no second copy)."""
    attrs = study.user_attrs
    if attrs.get(tags.BEST_RUN_TRIAL_ATTR) != best.number or not attrs.get(tags.BEST_RUN_ATTR):
        return False
    try:
        return mlflow.MlflowClient().get_run(attrs[tags.BEST_RUN_ATTR]).info.status == "FINISHED"
    except mlflow.exceptions.MlflowException:
        return False  # the run was deleted: retrain


def record_space(study: optuna.Study, space: SearchSpace, parent_id: str) -> None:
    """Every space version the study ran is on the parent as spaces/<digest>.yaml; each trial and retrain
    run is tagged with its digest. search_space.yaml and the cnnexp.space_digest tag are the current one;
    the parent's params stay those of the space the study was created with."""
    client = mlflow.MlflowClient()
    retry_locked(lambda: client.log_text(parent_id, space.text, f"spaces/{space.digest}.yaml"))
    retry_locked(lambda: client.log_text(parent_id, space.text, "search_space.yaml"))
    retry_locked(lambda: client.set_tag(parent_id, tags.SPACE_DIGEST, space.digest))
    first = study.user_attrs.get(tags.SPACE_DIGEST_ATTR)
    if first is None:
        study.set_user_attr(tags.SPACE_DIGEST_ATTR, space.digest)
    elif first != space.digest:
        log.warning(
            "study %s was started with space %s, resumed with %s (compatible); each trial's space is "
            "spaces/<digest>.yaml on the parent run",
            study.study_name,
            first,
            space.digest,
        )
        retry_locked(lambda: client.set_tag(parent_id, tags.SPACE_CHANGED, "true"))


def mark_unmarked(study: optuna.Study, parent_id: str) -> int:
    """Mark the finished trials whose runs lack their state (an interrupt, a killed worker); returns how many."""
    runs = _trial_runs(parent_id, f"tags.`{tags.ROLE}` = '{tags.ROLE_TRIAL}'")
    marked = {r.data.tags.get(tags.TRIAL_NUMBER): r.data.tags.get(tags.TRIAL_STATE) for r in runs}
    n = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        if marked.get(str(trial.number)) != trial.state.name:
            mark_trial(study.study_name, parent_id, trial)
            n += 1
    return n


def join_workers(study: optuna.Study) -> Callable[[], bool]:
    """Count this process among the study's workers; returns its way out: True when it is the last one.

    Each worker owns one study attribute (no read-modify-write race between workers); a worker on
    this machine that died without leaving is marked dead by the next one that joins.
    """
    me = tags.WORKER_STATE_PREFIX + storages.worker_id()
    for key in _active_workers(study, count_dead=True):
        if not storages.worker_alive(key.removeprefix(tags.WORKER_STATE_PREFIX)):
            study.set_user_attr(key, tags.WORKER_DEAD)
    study.set_user_attr(me, tags.WORKER_ACTIVE)

    def last_out() -> bool:
        study.set_user_attr(me, tags.WORKER_LEFT)
        return not _active_workers(study)

    return last_out


def _active_workers(study: optuna.Study, count_dead: bool = False) -> list[str]:
    return [
        key
        for key, state in study.user_attrs.items()
        if key.startswith(tags.WORKER_STATE_PREFIX)
        and state == tags.WORKER_ACTIVE
        and (count_dead or storages.worker_alive(key.removeprefix(tags.WORKER_STATE_PREFIX)))
    ]
