"""An Optuna study of tracked trainings: one trial = one :func:`cnnexp.training.train.train` run, nested.

The objective only turns a trial into a config (via the search space) and trains it with a
pruning callback; the validation metric is the value, never the test set. After the trials, the
best COMPLETE trial's config is retrained on the full training data and evaluated once on the
test set; that run's model is the study's result.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import keras
import mlflow
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import KerasPruningCallback

from cnnexp.errors import ConfigError
from cnnexp.tracking import tags
from cnnexp.tracking.runs import (
    MAX_REASON,
    interrupts_deferred,
    leave_launcher_run,
    marked_running,
    point_launcher,
    retry_locked,
)
from cnnexp.training.train import TrainResult, train
from cnnexp.tuning import parent_run, pruning
from cnnexp.tuning import storage as storages
from cnnexp.tuning.artifacts import log_report
from cnnexp.tuning.deadline import Planner
from cnnexp.tuning.plan import NO_CAP
from cnnexp.tuning.resume import check_resumable
from cnnexp.tuning.space import SearchSpace, sample
from cnnexp.tuning.space_file import load_space

log = logging.getLogger(__name__)

# The per-epoch metric reported to the pruner and the summary metric train() returns for it.
SUMMARY_METRIC = {"val_accuracy": "best_val_accuracy", "val_loss": "best_val_loss"}
# Both on one scale: best_val_loss is the plain cross-entropy, whose per-epoch metric is val_crossentropy
# (val_loss itself includes label smoothing).
EPOCH_METRIC = {"val_accuracy": "val_accuracy", "val_loss": "val_crossentropy"}


@dataclass
class TuneOptions:
    space: str
    study_name: str
    n_trials: int
    timeout: float | None = None
    storage: str = storages.DEFAULT_STORAGE
    sampler: str = "tpe"
    pruner: str | optuna.pruners.BasePruner = "median"  # a pruner object: tests and library users
    seed: int | None = None
    retrain_best: bool = True
    experiment_name: str | None = None  # a new study's experiment; default: the space's fixed one, else cnnexp
    heartbeat_interval: int = storages.HEARTBEAT_INTERVAL
    # Plan the study to end within this many minutes (tuning/plan.py); n_trials (below NO_CAP) then caps it.
    time_budget_minutes: float | None = None


@dataclass
class TuneResult:
    study: optuna.Study
    parent_run_id: str
    best: FrozenTrial | None
    retrained: TrainResult | None


class _PruneBetweenEpochs(KerasPruningCallback):
    """Optuna's Keras pruning callback, but it stops fit() cleanly instead of raising through it.

    Raising inside fit() would end the trial's run as a failure; stopping lets the run finish with
    its partial history logged, and the objective then reports the trial as pruned.
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        super().__init__(trial, monitor)
        self.pruned: optuna.TrialPruned | None = None
        self.base = pruning.step_base(trial.study)  # Keras counts epochs from 0; the study may not

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 >= self.params.get("epochs", math.inf):
            # The last epoch: its score is the trial's result. Judging it could only throw a finished trial
            # away (its step is a rung: 9 = 1 x 3 x 3), so it is reported and never judged.
            score = (logs or {}).get(self._monitor)
            if score is not None:
                self._trial.report(float(score), step=epoch + self.base)
            return
        try:
            super().on_epoch_end(epoch + self.base, logs)
        except optuna.TrialPruned as e:
            self.pruned = e
            self.model.stop_training = True
            pruning.tag_active_run(self._trial, epoch + self.base)  # inside train()'s run: the trial's run


def tune(opts: TuneOptions) -> TuneResult:
    """Run (or join, or resume) the study: every step below leaves a record that the next one trusts."""
    started = time.monotonic()  # a deadline study's clock
    space = _checked_space(opts)  # a bad space or option fails here, before any study or run exists
    launcher_run_id = leave_launcher_run()  # trials get runs of their own; the launcher points at the study
    study, storage, created = _open_study(opts, space)
    parent_id = _open_parent_run(study, created, storage, space, opts, launcher_run_id)
    last_out = parent_run.join_workers(study)  # before the sweep: a dead worker's entry is cleaned now
    stale = storages.fail_dead_local_trials(study, storage, parent_run.retry_hook("worker {worker} died (killed?)"))
    if not created and stale + parent_run.mark_unmarked(study, parent_id):
        log_report(parent_id, study)  # the last worker was cut short: its record is brought up to date
    print(
        f"study {opts.study_name!r} on {storages.display_url(storages.absolute_url(opts.storage))}: "
        f"{'created' if created else 'resumed'}, parent run {parent_id}; "
        + (
            "trials until the deadline"
            if opts.time_budget_minutes and opts.n_trials >= NO_CAP
            else f"{opts.n_trials} trial(s) to run"
        ),
        flush=True,
    )
    planner = Planner(opts, space, parent_id, started, created) if opts.time_budget_minutes and opts.n_trials else None
    # The parent ends when its last worker leaves: other workers may still run trials under it.
    with marked_running(parent_id, last_out):
        if planner:
            planner.run_trials(study, _run_trials)
        else:
            _run_trials(study, space, opts, parent_id)
        best = parent_run.log_best(parent_id, study)
        log_report(parent_id, study)
        retrain_space = planner.retrain_space() if planner else space
        retrained = _retrain_if_needed(retrain_space, study, best, parent_id, opts.retrain_best)
        if planner:
            planner.finish(study)
    return TuneResult(study, parent_id, best, retrained)


def _checked_space(opts: TuneOptions) -> SearchSpace:
    space = load_space(opts.space)
    if opts.n_trials < 0:
        raise ConfigError(f"n_trials={opts.n_trials} must be >= 0")
    if opts.timeout is not None and opts.timeout <= 0:
        raise ConfigError(f"timeout={opts.timeout:g} must be a positive number of seconds (or not given)")
    if opts.time_budget_minutes is not None and opts.time_budget_minutes <= 0:
        raise ConfigError(f"time_budget_minutes={opts.time_budget_minutes} must be a positive number of minutes")
    parent_run.check_study_name(opts.study_name)
    return space


def _refuse_missing_study(opts: TuneOptions, storage: optuna.storages.BaseStorage | None) -> None:
    """n_trials=0 reports on and retrains a study: a mistyped name must not create an empty one."""
    if storage is None:
        path = storages.local_file(opts.storage)
        missing = path is not None and not path.is_file()
    else:
        missing = opts.study_name not in optuna.get_all_study_names(storage)
    if missing:
        raise ConfigError(
            f"no study named {opts.study_name!r} in {storages.display_url(storages.absolute_url(opts.storage))}: "
            "n_trials=0 only reports on and retrains an existing study"
        )


def _open_study(opts: TuneOptions, space: SearchSpace) -> tuple[optuna.Study, optuna.storages.BaseStorage, bool]:
    """The Optuna side: storage (with the stale-trial hook), sampler and pruner; created or joined."""
    hook = parent_run.retry_hook("worker stopped sending heartbeats (killed?)")
    if opts.n_trials == 0:
        _refuse_missing_study(opts, None)  # before a SQLite file is created by opening it
    storage = storages.make_storage(opts.storage, heartbeat_interval=opts.heartbeat_interval, on_stale_trial=hook)
    if opts.n_trials == 0:
        _refuse_missing_study(opts, storage)
    pruner = opts.pruner
    if isinstance(pruner, str):
        pruner = storages.make_pruner(pruner, space.trial_epochs, space.trial_warmup_epochs())
    sampler = storages.make_sampler(opts.sampler, opts.seed)
    study, created = storages.create_or_load(opts.study_name, storage, space.direction, sampler, pruner)
    if isinstance(opts.pruner, str) and pruning.step_base(study) == 0:  # an earlier release's study: its steps
        study.pruner = storages.make_pruner(opts.pruner, space.trial_epochs, space.trial_warmup_epochs(), base=0)
    if not created:  # an edited space must not fail every new trial: refuse it now, naming the parameter
        check_resumable(space, study.get_trials(deepcopy=False), opts.study_name)
    if not created and opts.seed is not None:
        # Joining or resuming workers must not replay the first worker's draws.
        n_before = len(study.get_trials(deepcopy=False))
        seed = int(np.random.SeedSequence([opts.seed, n_before, os.getpid()]).generate_state(1)[0])
        study.sampler = storages.make_sampler(opts.sampler, seed)
    return study, storage, created


def _open_parent_run(
    study: optuna.Study,
    created: bool,
    storage: optuna.storages.BaseStorage,
    space: SearchSpace,
    opts: TuneOptions,
    launcher_run_id: str | None,
) -> str:
    """The MLflow side: the study's parent run, found or created; trials go to its experiment."""
    # Absolute: a report run from another folder must find this storage, not one of its own.
    url = storages.display_url(storages.absolute_url(opts.storage))
    experiment = opts.experiment_name or space.fixed.get("experiment_name") or "cnnexp"
    parent_id = parent_run.ensure_parent_run(study, created, storage, space, url, experiment)
    parent_run.record_space(study, space, parent_id)
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(parent_id).info.experiment_id
    retry_locked(lambda: mlflow.set_experiment(experiment_id=experiment_id))
    retry_locked(lambda: client.set_tag(parent_id, tags.SAMPLER, opts.sampler))
    point_launcher(launcher_run_id, {tags.STUDY: opts.study_name, tags.STUDY_RUN_ID: parent_id})
    return parent_id


def _run_trials(
    study: optuna.Study, space: SearchSpace, opts: TuneOptions, parent_id: str, expected: int | None = None
) -> None:
    """``expected``: a deadline plan's estimate of the trials, shown in the progress lines instead of the cap."""
    if not opts.n_trials:
        return
    try:
        study.optimize(
            _objective(space, opts.study_name, parent_id),
            n_trials=opts.n_trials,
            timeout=opts.timeout,
            catch=(Exception,),  # a failing trial is recorded FAIL and the study goes on
            callbacks=[_Progress(parent_id, str(opts.n_trials) if expected is None else f"~{expected}")],
        )
    except KeyboardInterrupt:
        # Optuna failed the interrupted trial without calling back: record it, and the report, before
        # leaving; a second Ctrl-C waits for that (the next worker would otherwise find it stale).
        with interrupts_deferred():
            parent_run.mark_unmarked(study, parent_id)
            log_report(parent_id, study)
        raise


def _retrain_if_needed(
    space: SearchSpace, study: optuna.Study, best: FrozenTrial | None, parent_id: str, wanted: bool
) -> TrainResult | None:
    if best is None:
        print("no trial completed: nothing to retrain", flush=True)
        return None
    if not wanted:
        return None
    if parent_run.already_retrained(study, best):
        run_id = study.user_attrs[tags.BEST_RUN_ATTR]
        print(f"trial {best.number} is still the best and was retrained in run {run_id}", flush=True)
        return None
    return retrain_best(space, study, best, parent_id)


def _objective(space: SearchSpace, study_name: str, parent_id: str):
    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()  # no graph or layer-name build-up across trials
        trial.set_user_attr(tags.WORKER_ATTR, storages.worker_id())
        trial.set_user_attr(tags.SPACE_DIGEST_ATTR, space.digest)
        try:
            sampled = sample(trial, space)
            cfg = space.config(sampled, extra={"run_name": f"{study_name}-trial-{trial.number}"})
            pruning = _PruneBetweenEpochs(trial, EPOCH_METRIC[space.objective])
            result = train(
                cfg,
                parent_run_id=parent_id,
                extra_callbacks=[pruning],
                evaluate_test=False,
                log_model=False,
                tags=parent_run.trial_tags(study_name, trial.number, space.digest),
            )
        except Exception as e:
            # Optuna 5 keeps no failure reason: the trial's run and the progress line read this one.
            trial.set_user_attr(tags.FAIL_REASON_ATTR, f"{type(e).__name__}: {e}"[:MAX_REASON])
            raise
        trial.set_user_attr(tags.TRIAL_RUN_ATTR, result.run_id)
        if pruning.pruned is not None:
            raise pruning.pruned
        return result.metrics[SUMMARY_METRIC[space.objective]]

    return objective


class _Progress:
    """After each trial: mark its MLflow run with the state, update the parent's best, print a line."""

    def __init__(self, parent_id: str, of: str) -> None:
        self.parent_id = parent_id
        self.of = of  # "[3/of]": the trials to run, or "~N" a deadline plan expects
        self.done = 0
        self.started = time.monotonic()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.done += 1
        try:
            parent_run.mark_trial(study.study_name, self.parent_id, trial)
            best = parent_run.log_best(self.parent_id, study)
        except Exception as e:  # noqa: BLE001 - a tracking hiccup must not stop the study
            log.warning("could not update MLflow for trial %d: %s", trial.number, e)
            best = parent_run.best_trial(study)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        best_text = "none yet" if best is None else f"{best.value:.4f} (trial {best.number})"
        reason = trial.user_attrs.get(tags.FAIL_REASON_ATTR, "").splitlines()[:1]
        print(
            f"[{self.done}/{self.of}] trial {trial.number} {trial.state.name} value={value} "
            f"best={best_text} | study: {states.count(TrialState.COMPLETE)} complete, "
            f"{states.count(TrialState.PRUNED)} pruned, {states.count(TrialState.FAIL)} failed | "
            f"{time.monotonic() - self.started:.0f}s" + (f" | {reason[0]}" if reason else ""),
            flush=True,
        )


def retrain_best(space: SearchSpace, study: optuna.Study, best: FrozenTrial, parent_id: str) -> TrainResult:
    """Train the best trial's config on the full training data; test once; log the model."""
    keras.backend.clear_session()
    cfg = space.config(best.params, retrain=True, extra={"run_name": f"{study.study_name}-best"})
    minutes = cfg.train.time_budget_minutes
    if cfg.train.epochs is None:
        limit = f"as many epochs as fit in {minutes:g} minutes"
    else:
        limit = f"{cfg.train.epochs} epochs" + (f" or {minutes:g} minutes" if minutes else "")
    print(f"retraining trial {best.number}'s config on the full training data ({limit})", flush=True)
    run_tags = {tags.STUDY: study.study_name, tags.ROLE: tags.ROLE_BEST, tags.BEST_TRIAL: str(best.number)}
    run_tags[tags.SPACE_DIGEST] = space.digest  # its epochs and budget are this space's (params: train.epochs)
    result = train(cfg, parent_run_id=parent_id, tags=run_tags)
    client = mlflow.MlflowClient()
    retry_locked(lambda: client.log_text(result.run_id, space.text, "search_space.yaml"))
    retry_locked(lambda: client.set_tag(parent_id, tags.BEST_RUN_ID, result.run_id))
    for name in ("test_accuracy", "test_macro_f1", "test_loss"):
        if name in result.metrics:
            retry_locked(lambda n=name: client.log_metric(parent_id, f"best_{n}", result.metrics[n]))
    study.set_user_attr(tags.BEST_RUN_ATTR, result.run_id)
    study.set_user_attr(tags.BEST_RUN_TRIAL_ATTR, best.number)
    print(
        f"best model: run {result.run_id} (trial {best.number}), test_accuracy "
        f"{result.metrics.get('test_accuracy', float('nan')):.4f}; model at runs:/{result.run_id}/model",
        flush=True,
    )
    return result
