"""``cnnexp tune --time-budget-minutes M``: time a first trial of the package defaults, plan the rest,
record plan and outcome.

The arithmetic is in :mod:`cnnexp.tuning.plan`; this module runs it against the clock and records it
on the study's parent run: ``cnnexp.plan_*`` tags and ``plan.json`` (the plan, then its outcome).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
import time
from collections.abc import Callable

import mlflow
import optuna
from optuna.trial import TrialState

from cnnexp.errors import ConfigError
from cnnexp.tracking import tags
from cnnexp.tracking.runs import retry_locked
from cnnexp.tuning import plan as plans
from cnnexp.tuning import pruning
from cnnexp.tuning import storage as storages
from cnnexp.tuning.space import SearchSpace

PLAN_ARTIFACT = "plan.json"


class Planner:
    """One deadline study: ``started`` is the study's time.monotonic() start, the deadline's zero."""

    def __init__(self, opts, space: SearchSpace, parent_id: str, started: float, created: bool) -> None:
        self.opts, self.space, self.parent_id, self.started = opts, space, parent_id, started
        self.created = created  # this process created the study: its first trial is the package defaults
        self.plan: plans.Plan | None = None
        self.trials_end_s = 0.0
        self.n_before = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def run_trials(self, study: optuna.Study, run: Callable) -> None:
        """``run(study, space, opts, parent_id, expected=None)`` runs trials (tune's own loop): once timed,
        then until the trials' planned time is up (``expected``: the trials the plan counts on)."""
        opts, space = self.opts, self.space
        self.n_before = len(study.get_trials(deepcopy=False))
        if self.created:
            self._enqueue_defaults(study)
        first_start = time.monotonic()
        run(study, space, dataclasses.replace(opts, n_trials=1, timeout=None), self.parent_id)
        first_s = time.monotonic() - first_start
        pruner = opts.pruner if isinstance(opts.pruner, str) else type(opts.pruner).__name__
        known = pruner in storages.PRUNERS  # a pruner object (tests, library users): no rungs to name
        warmup, base = space.trial_warmup_epochs(), pruning.step_base(study)
        rungs = storages.rung_epochs(pruner, space.trial_epochs, warmup, base) if known else []
        epoch_s, first_epochs = _epoch_pace(study.get_trials(deepcopy=False)[self.n_before :])
        cap = space.retrain_time_budget_minutes
        self.plan = plans.plan_study(
            opts.time_budget_minutes * 60,
            self.elapsed(),
            first_s,
            space.trial_epochs,
            pruner,
            rungs,
            retrain_cap_s=None if cap is None else cap * 60,
            max_trials=opts.n_trials,
            epoch_s=epoch_s,
            first_epochs=first_epochs,
        )
        print(plans.describe(self.plan), flush=True)
        self._record({"plan": self.plan.to_dict()})
        run_tags = {
            tags.TIME_BUDGET: f"{opts.time_budget_minutes:g}",
            tags.PLAN_TRIALS: str(self.plan.n_trials + 1),
            tags.PLAN_RUNGS: ",".join(map(str, rungs)),
            tags.PLAN_RETRAIN_MINUTES: f"{self.plan.retrain_s / 60:.2f}",
        }
        self._tag(run_tags)
        if self.plan.n_trials:
            timeout = max(1.0, self.plan.elapsed_s + self.plan.trials_s - self.elapsed())
            # The time decides, not the count: one timed trial predicts the others poorly (a first trial
            # of a big model made a 60-minute study stop its trials at 14 of their planned 32.5 minutes), so the
            # count is the plan's estimate. A user's --n-trials still caps it.
            left = plans.NO_CAP if opts.n_trials >= plans.NO_CAP else opts.n_trials - 1
            trials_opts = dataclasses.replace(opts, n_trials=left, timeout=timeout)
            run(study, space, trials_opts, self.parent_id, expected=self.plan.n_trials)
        self.trials_end_s = self.elapsed()

    def _enqueue_defaults(self, study: optuna.Study) -> None:
        """A new study times the package defaults, not a random draw: the plan is made from that model's
        pace, and the study holds the untuned configuration (docs/performance.md, section 5)."""
        try:
            defaults, outside = self.space.default_params()
        except ConfigError as e:
            print(
                f"timing a first trial drawn by the sampler: the package defaults do not fit this space ({e})",
                flush=True,
            )
            return
        study.enqueue_trial(defaults, skip_if_exists=True)
        drawn = f" ({', '.join(outside)}: default outside the space, drawn by the sampler)" if outside else ""
        print(f"timing the first trial on the package defaults{drawn}", flush=True)

    def retrain_space(self) -> SearchSpace:
        """The space with the retrain's time budget set to what is left of the deadline now."""
        minutes = round(plans.retrain_seconds(self.plan, self.elapsed()) / 60, 2)
        return dataclasses.replace(self.space, retrain_time_budget_minutes=minutes)

    def finish(self, study: optuna.Study) -> dict:
        mine = study.get_trials(deepcopy=False)[self.n_before :]
        states = {
            s.name: sum(t.state == s for t in mine) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        }
        result = plans.outcome(self.plan, self.elapsed(), self.trials_end_s, len(mine), states)
        print(plans.describe_outcome(result), flush=True)
        self._record({"plan": self.plan.to_dict(), "outcome": result})
        self._tag(
            {
                tags.DEADLINE_MET: str(result["within_budget"]).lower(),
                tags.STUDY_MINUTES: f"{result['total_s'] / 60:.2f}",
            }
        )
        return result

    def _record(self, payload: dict) -> None:
        client = mlflow.MlflowClient()
        retry_locked(lambda: client.log_text(self.parent_id, json.dumps(payload, indent=2), PLAN_ARTIFACT))

    def _tag(self, run_tags: dict[str, str]) -> None:
        client = mlflow.MlflowClient()
        for key, value in run_tags.items():
            retry_locked(lambda k=key, v=value: client.set_tag(self.parent_id, k, v))


def _epoch_pace(trials: list[optuna.trial.FrozenTrial]) -> tuple[float | None, int | None]:
    """Seconds per epoch of this worker's timed trial, and the epochs it ran, from its run's per-epoch
    validation loss: the median gap between them leaves out the first epoch's tracing. (None, None) if
    the trial has no run or logged fewer than two epochs. Other workers' trials are not this one's clock."""
    me = storages.worker_id()
    mine = [t for t in trials if t.user_attrs.get(tags.WORKER_ATTR) == me and tags.TRIAL_RUN_ATTR in t.user_attrs]
    if not mine:
        return None, None
    try:
        history = mlflow.MlflowClient().get_metric_history(mine[0].user_attrs[tags.TRIAL_RUN_ATTR], "val_loss")
    except mlflow.exceptions.MlflowException:
        return None, None
    stamps = sorted(m.timestamp for m in history)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return (statistics.median(gaps) / 1000, len(stamps)) if gaps else (None, None)
