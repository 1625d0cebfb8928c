"""MLflow run lifecycle: every run ends FINISHED, FAILED (with the reason) or KILLED, never RUNNING.

Also the retry of calls that race other workers on one store."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import mlflow

import cnnexp
from cnnexp.errors import Terminated
from cnnexp.tracking import tags

T = TypeVar("T")
MAX_REASON = 4000  # MLflow's limit on a tag value is 5000 characters
INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
def ends_with_status(run_id: str, end: Callable[[str], None]) -> Iterator[None]:
    """Run the body, then ``end(status)``: FINISHED, KILLED (Ctrl-C or SIGTERM) or FAILED with the reason tagged.

    The one run lifecycle of cnnexp: training runs, trial runs and a study's parent run all end here.
    A second Ctrl-C while the run is being ended must not leave it RUNNING, so the end is shielded.
    """
    status = "FAILED"
    try:
        yield
        status = "FINISHED"
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM under the CLI (cnnexp.errors.Terminated)
        status = "KILLED"
        tag_failure(run_id, f"interrupted ({str(e) or 'KeyboardInterrupt'})")
        raise
    except BaseException as e:
        tag_failure(run_id, f"{type(e).__name__}: {e}")
        raise
    finally:
        with interrupts_deferred():
            end(status)


@contextmanager
def tracked_run(
    run_name: str | None = None,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    log_system_metrics: bool | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start (or resume) an active run and always end it with an explicit status.

    MLflow's own context manager ends a Ctrl-C'd run as FAILED; users expect KILLED. The failure
    reason is tagged so the MLflow UI shows why a run failed without digging through logs.
    """
    run = mlflow.start_run(
        run_id=run_id, run_name=run_name, parent_run_id=parent_run_id, tags=tags, log_system_metrics=log_system_metrics
    )

    def end(status: str) -> None:
        # end_run ends the *active* run; make sure that is ours even if a nested one leaked.
        while mlflow.active_run() and mlflow.active_run().info.run_id != run.info.run_id:
            mlflow.end_run(status)
        mlflow.end_run(status)

    with ends_with_status(run.info.run_id, end):
        yield run


@contextmanager
def marked_running(run_id: str, last_out: Callable[[], bool] | None = None) -> Iterator[None]:
    """A run that is not this process's active one (a study's parent, shared by workers): RUNNING while
    the body runs, then ended with an explicit status like any other run.

    ``last_out``, for a run shared by several processes, is called at the end: the run is ended only
    when it returns True (no other process still works under it)."""
    client = mlflow.MlflowClient()
    retry_locked(lambda: client.update_run(run_id, status="RUNNING"))

    def end(status: str) -> None:
        if last_out is None or last_out():
            retry_locked(lambda: client.set_terminated(run_id, status))

    with ends_with_status(run_id, end):
        yield


def tag_failure(run_id: str, reason: str) -> None:
    try:
        retry_locked(lambda: mlflow.MlflowClient().set_tag(run_id, tags.FAILURE_REASON, reason[:MAX_REASON]))
    except Exception:  # noqa: BLE001 - never mask the original error with a tracking error
        pass


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then deliver them (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    saved = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in INTERRUPT_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if signal.SIGTERM in caught:
            raise Terminated
        if caught:
            raise KeyboardInterrupt


def retry(
    fn: Callable[[], T],
    *,
    when: tuple[str, ...] = ("locked",),
    errors: tuple[type[BaseException], ...] = (Exception,),
    attempts: int = 6,
) -> T:
    """Call ``fn``; retry with a growing pause while it fails with one of ``errors`` whose message contains ``when``.

    For the races of several workers on one store: SQLite's "database is locked", tables that another
    worker is creating at the same moment.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except errors as e:
            if attempt == attempts - 1 or not any(w in str(e).lower() for w in when):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def retry_locked(fn: Callable[[], T]) -> T:
    """Retry an MLflow call that hit SQLite's "database is locked" under concurrent workers."""
    return retry(fn)


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
