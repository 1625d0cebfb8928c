"""Optuna plumbing for a study: storage from a URL, sampler and pruner by name, race-free creation.

Storages: ``sqlite:///optuna.db`` (the default, one worker at a time), any SQLAlchemy RDB URL such
as ``postgresql://user:pw@host/db`` (several machines; with heartbeats), and ``journal:PATH``
(Optuna's journal file storage: several workers on one machine).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError

from cnnexp.errors import ConfigError
from cnnexp.tracking import tags
from cnnexp.tracking.runs import retry

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///optuna.db"
JOURNAL_PREFIX = "journal:"
SAMPLERS = ("tpe", "random", "cmaes", "qmc")
PRUNERS = ("median", "hyperband", "sha", "none")
REDUCTION_FACTOR = 3  # successive halving and Hyperband keep the best third at each rung
# A trial whose worker has been silent this long is failed and retried (RDB storages only).
HEARTBEAT_INTERVAL = 60
HEARTBEAT_RETRIES = 1

StaleTrialHook = Callable[[optuna.Study, FrozenTrial], None]


def display_url(url: str) -> str:
    """The storage URL without its password, safe to tag on a run or print."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def local_file(url: str) -> Path | None:
    """The file behind a ``sqlite:///FILE`` or ``journal:FILE`` storage (relative to the working folder); else None."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX) :]) if url[len(JOURNAL_PREFIX) :] else None
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database.removeprefix("file:"))


def absolute_url(url: str) -> str:
    """The URL with a file storage's path made absolute: a record that means the same from any folder."""
    path = local_file(url)
    if path is None or path.is_absolute():
        return url
    if url.startswith(JOURNAL_PREFIX):
        return JOURNAL_PREFIX + str(path.resolve())
    return make_url(url).set(database=str(path.resolve())).render_as_string(hide_password=False)


def _check_url(url: str) -> None:
    if url.startswith(JOURNAL_PREFIX) and local_file(url) is None:
        raise ConfigError("storage journal:PATH needs a file path, e.g. journal:./study.log")
    if not url.startswith(JOURNAL_PREFIX):
        try:
            make_url(url)
        except ArgumentError:
            raise ConfigError(
                f"storage {url!r} is not a database URL (sqlite:///FILE, postgresql://...) or journal:PATH"
            ) from None
    path = local_file(url)
    if path is not None and not path.parent.resolve().is_dir():
        raise ConfigError(f"storage {display_url(url)!r}: folder {path.parent} does not exist")


def make_storage(
    url: str, *, heartbeat_interval: int = HEARTBEAT_INTERVAL, on_stale_trial: StaleTrialHook | None = None
) -> optuna.storages.BaseStorage:
    """Open the storage. RDB storages get heartbeats: a killed worker's trial is failed, then retried."""
    _check_url(url)
    if url.startswith(JOURNAL_PREFIX):
        return JournalStorage(JournalFileBackend(str(local_file(url))))
    with optuna_experimental():
        retry_stale = RetryHeartbeatStaleTrialCallback(max_retry=HEARTBEAT_RETRIES)

    def stale(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_stale_trial is not None:
            on_stale_trial(study, trial)
        retry_stale(study, trial)

    def open_rdb() -> RDBStorage:
        with optuna_experimental():
            return RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=2 * heartbeat_interval,
                heartbeat_stale_trial_callback=stale,
            )

    # Workers starting together on a fresh database race to create its tables: SQLite reports
    # "locked", PostgreSQL a duplicate type or table. The loser retries and finds them created.
    races = ("locked", "duplicate key", "already exists")
    try:
        return retry(open_rdb, when=races, errors=(OperationalError, IntegrityError, ProgrammingError), attempts=5)
    except (ArgumentError, ImportError) as e:  # an unknown dialect (foo://) or a driver not installed
        raise ConfigError(
            f"storage {display_url(url)!r} cannot be opened ({str(e).splitlines()[0]}); "
            "use sqlite:///FILE, postgresql+psycopg://USER@HOST/DB or journal:PATH"
        ) from None
    except OperationalError as e:  # unreachable server, unwritable file: not a bug
        message = str(e.orig or e).splitlines()[0]
        raise ConfigError(f"storage {display_url(url)!r} cannot be opened: {message}") from None


def read_only_storage(url: str) -> optuna.storages.BaseStorage:
    """Open an existing storage to read it (reports): a missing file is an error, never created."""
    path = local_file(url)
    if path is not None and not path.is_file():
        raise FileNotFoundError(f"storage file {path.resolve()} does not exist")
    if url.startswith(JOURNAL_PREFIX):
        return JournalStorage(JournalFileBackend(str(path)))
    if path is not None:  # SQLite opened read-only, so a reader never writes into a study's database
        url = f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"
    return RDBStorage(url, skip_table_creation=True)


@contextmanager
def optuna_experimental() -> Iterator[None]:
    """Optuna marks heartbeats, the retry callback, its QMC sampler, TPE's group mode and its matplotlib
    plots experimental (for years): that warning is not news to a cnnexp user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def worker_id() -> str:
    """host:pid:start-time of this process; the start time guards against a recycled pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _start_time(pid: int) -> str:
    try:  # Linux: field 22 of /proc/<pid>/stat, in clock ticks since boot
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def worker_alive(worker: str) -> bool:
    """False only for a worker on this machine whose process is gone (pid absent, or reused by another process)."""
    host, pid, started = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return True  # another machine's worker: only heartbeats (RDB storages) can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return started == "?" or _start_time(int(pid)) == started


def fail_dead_local_trials(study: optuna.Study, storage: optuna.storages.BaseStorage, on_dead: StaleTrialHook) -> int:
    """Fail (and retry once) RUNNING trials whose worker process on this machine is gone; returns how many.

    On every storage, when a worker starts: a study restarted after a crash on one machine is clean
    at once, not after the heartbeat grace. Heartbeats (RDB storages) still cover other machines'
    workers, which this cannot check. Mirrors optuna.storages.fail_stale_trials.
    """
    n_failed = 0
    retry_stale = None
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(tags.WORKER_ATTR)
        if not worker or worker_alive(worker):
            continue
        try:
            # FrozenTrial._trial_id: the storage key, as Optuna's own fail_stale_trials uses it
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        log.warning("trial %d: its worker %s is gone; marked FAIL and retried", trial.number, worker)
        failed = storage.get_trial(trial._trial_id)
        on_dead(study, failed)
        if retry_stale is None:
            with optuna_experimental():
                retry_stale = RetryHeartbeatStaleTrialCallback(max_retry=HEARTBEAT_RETRIES)
        retry_stale(study, failed)
        n_failed += 1
    return n_failed


def make_sampler(name: str, seed: int | None, *, constant_liar: bool = True) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # multivariate + group: conditional parameters are modelled jointly, not one by one.
        # constant_liar: a trial still running counts as a poor result, so workers sharing the study
        # do not sample next to each other's running configurations (Optuna's remedy; said explicitly,
        # not left to a default that changed between Optuna versions).
        with optuna_experimental():
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, n_startup_trials=5, constant_liar=constant_liar
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES handles the numeric parameters; categorical ones fall back to random sampling.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "qmc":
        with optuna_experimental():
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise ConfigError(f"sampler {name!r} is not one of: {', '.join(SAMPLERS)}")


def first_cut_step(warmup_epochs: float, base: int = 1) -> int:
    """The first step a pruner may judge a trial at: never inside its learning-rate warm-up.

    A trial reports the score after epoch e as step e - 1 + ``base`` (pruning.step_base: 1 in the
    studies cnnexp creates, 0 in older ones). The earliest judged epoch is the one in which the warm-up
    ends (its score is taken after the warm-up): epoch 1 for the default half-epoch warm-up, where the
    rung ranks configurations as well as epoch 2 does at half the cost (docs/performance.md, section 5).
    Optuna's successive halving needs a step >= 1, so an older study's first cut is never before epoch 2.
    """
    return max(1, math.ceil(warmup_epochs) - 1 + base)


def make_pruner(name: str, max_epochs: int, warmup_epochs: float = 0.0, base: int = 1) -> optuna.pruners.BasePruner:
    """A pruner by name; ``warmup_epochs`` (the trials' warm-up, schedules.warmup_epochs) sets its first cut,
    ``base`` is the study's step numbering (pruning.step_base)."""
    first = first_cut_step(warmup_epochs, base)
    if name == "median":
        # Compare from the first step after the warm-up on, once three trials have reported.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=first)
    if name == "hyperband":
        # max_resource: the last epoch's step in cnnexp's numbering (and what older studies were created with).
        return optuna.pruners.HyperbandPruner(
            min_resource=first, max_resource=max_epochs, reduction_factor=REDUCTION_FACTOR
        )
    if name == "sha":
        # Successive halving, one bracket: rungs at steps first, 3 x first, 9 x first ...; a trial goes on
        # only if it is in the best third of the trials that reached its rung.
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=REDUCTION_FACTOR)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"pruner {name!r} is not one of: {', '.join(PRUNERS)}")


def rung_epochs(name: str, max_epochs: int, warmup_epochs: float = 0.0, base: int = 1) -> list[int]:
    """The epochs (1-based) after which :func:`make_pruner`'s pruner may stop a trial of ``max_epochs``
    (Hyperband: those of its most aggressive bracket). Never the last: tune() does not judge a trial
    that has trained all its epochs."""
    step = first_cut_step(warmup_epochs, base)
    if name == "none":
        return []
    if name == "median":
        return list(range(step + 1 - base, max_epochs))
    epochs = []
    while step + 1 - base < max_epochs:  # step s is judged after epoch s + 1 - base
        epochs.append(step + 1 - base)
        step *= REDUCTION_FACTOR
    return epochs


def create_or_load(
    name: str,
    storage: optuna.storages.BaseStorage,
    direction: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists; True when this process created it.

    Creation is atomic in every Optuna storage, so when several workers start together exactly one
    of them is the creator (and opens the MLflow parent run); the others load the study.
    """
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, direction=direction, sampler=sampler, pruner=pruner
        )
        retry(lambda: study.set_user_attr(tags.REPORT_STEP_ATTR, "epochs"))  # pruning.step_base: trials' steps
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        if study.direction.name.lower() != direction:
            raise ConfigError(
                f"study {name!r} exists with direction {study.direction.name.lower()}, "
                f"but this search space's objective wants {direction}"
            ) from None
        return study, False
