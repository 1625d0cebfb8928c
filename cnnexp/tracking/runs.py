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
    if not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(name)


@contextmanager
def tracked_run(
    run_name: str | None = None,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start (or resume) a run and always end it with an explicit status.

    MLflow's own context manager ends a Ctrl-C'd run as FAILED; users expect KILLED. The failure
    reason is tagged so the MLflow UI shows why a run failed without digging through logs.
    """
    run = mlflow.start_run(run_id=run_id, run_name=run_name, parent_run_id=parent_run_id, tags=tags)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM under the CLI (cnnexp.errors.Terminated)
        status = "KILLED"
        _tag_failure(run.info.run_id, f"interrupted ({str(e) or 'KeyboardInterrupt'})")
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


def leave_launcher_run() -> str | None:
    """Under `mlflow run`, its run id is in the environment and the next start_run would resume it:
    take it out, so the command's runs go where they go without `mlflow run`; returns that id."""
    return os.environ.pop("MLFLOW_RUN_ID", None)


def point_launcher(run_id: str | None, run_tags: dict[str, str]) -> None:
    """Tag the `mlflow run` launcher run (if any) as such, pointing at the runs that hold the record."""
    if run_id:
        client = mlflow.MlflowClient()
        for key, value in {tags.ROLE: tags.ROLE_LAUNCHER, **run_tags}.items():
            client.set_tag(run_id, key, value)
