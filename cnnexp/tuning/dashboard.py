"""optuna-dashboard on a study's own storage: the live view Optuna users open on a running study.

The storage is the one the study's parent run recorded (tag ``cnnexp.storage``) or any URL given;
the dashboard reads it as Optuna's own workers do, so trials appear as they finish.
"""

from __future__ import annotations

import mlflow
import optuna

from cnnexp.errors import ConfigError, RunError
from cnnexp.tracking import tags
from cnnexp.tracking.record import newest_study_run
from cnnexp.tuning.storage import local_file, make_storage

INSTALL_HINT = "pip install 'cnnexp[dashboard]' (or pip install optuna-dashboard)"


def recorded_storage(study: str) -> str:
    """The storage URL the study's parent run recorded."""
    parent = newest_study_run(study, tags.ROLE_STUDY)
    if parent is None:
        raise RunError(
            f"no parent run of study {study!r} ({tags.ROLE}={tags.ROLE_STUDY}) in the tracking store "
            f"{mlflow.get_tracking_uri()}; give the study's storage URL instead"
        )
    url = parent.data.tags.get(tags.STORAGE, "")
    if not url or "***" in url:
        raise RunError(f"study {study!r} recorded its storage as {url!r} (password hidden): give the full URL")
    return url


def open_study_storage(url: str, study: str | None = None) -> tuple[optuna.storages.BaseStorage, int | None]:
    """The storage (which must exist: opening a missing SQLite file would create an empty one) and the
    study's id in it, if a study is named."""
    path = local_file(url)
    if path is not None and not path.is_file():
        raise ConfigError(
            f"storage {url!r}: {path.resolve()} does not exist (relative paths are taken from the current "
            "directory: run this where the study ran, or give an absolute path)"
        )
    storage = make_storage(url)
    if study is None:
        return storage, None
    try:
        return storage, storage.get_study_id_from_name(study)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise ConfigError(f"storage {url!r} holds no study {study!r} (studies: {names})") from None


def serve_dashboard(storage: optuna.storages.BaseStorage, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve optuna-dashboard until interrupted (blocks)."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise ConfigError(f"optuna-dashboard is not installed: {INSTALL_HINT}") from None
    run_server(storage, host=host, port=port)
