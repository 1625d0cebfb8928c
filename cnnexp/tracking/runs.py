"""MLflow run lifecycle: every run ends FINISHED, FAILED (with the reason) or KILLED, never RUNNING."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow

import cnnexp
from cnnexp.tracking import tags


def git_commit() -> str:
    """The commit of the working directory's checkout (or the package's), 'unknown' outside git."""
    for where in (Path.cwd(), Path(cnnexp.__file__).resolve().parent):
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
            )
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


def use_experiment(name: str) -> None:
    """Select the experiment, unless `mlflow run` already chose the run (and with it the experiment)."""
    if os.environ.get("MLFLOW_RUN_ID"):
        mark_model_development(mlflow.MlflowClient().get_run(os.environ["MLFLOW_RUN_ID"]).info.experiment_id)
    else:
        mark_model_development(mlflow.set_experiment(name).experiment_id)


def mark_model_development(experiment_id: str) -> None:
    """Tag the experiment as model training, so the MLflow UI opens it on its runs table."""
    client = mlflow.MlflowClient()
    if tags.EXPERIMENT_KIND not in client.get_experiment(experiment_id).tags:  # a user's own choice stays
        client.set_experiment_tag(experiment_id, tags.EXPERIMENT_KIND, tags.KIND_MODEL_DEVELOPMENT)


@contextmanager
def tracked_run(
    run_name: str | None = None,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    log_system_metrics: bool | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start (or resume) a run and always end it with an explicit status.

    MLflow's own context manager ends a Ctrl-C'd run as FAILED; users expect KILLED. The failure
    reason is tagged so the MLflow UI shows why a run failed without digging through logs.
    """
    run = mlflow.start_run(
        run_id=run_id, run_name=run_name, parent_run_id=parent_run_id, tags=tags, log_system_metrics=log_system_metrics
    )
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        _tag_failure(run.info.run_id, "interrupted (KeyboardInterrupt)")
        raise
    except BaseException as e:
        _tag_failure(run.info.run_id, f"{type(e).__name__}: {e}")
        raise
    finally:
        # end_run ends the *active* run; make sure that is ours even if a nested one leaked.
        while mlflow.active_run() and mlflow.active_run().info.run_id != run.info.run_id:
            mlflow.end_run(status)
        mlflow.end_run(status)


def _tag_failure(run_id: str, reason: str) -> None:
    try:
        mlflow.MlflowClient().set_tag(run_id, tags.FAILURE_REASON, reason[:4000])
    except Exception:  # noqa: BLE001 - never mask the original error with a tracking error
        pass
