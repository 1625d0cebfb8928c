"""Why a trial was pruned, in the pruner's own terms: the epoch, the score it judged, the bar it missed.

Optuna only records that a trial was pruned. Right after its pruner said so, :func:`explain`
recomputes the comparison that decided it from the study, by the same rule the pruner applies:

- median: the trial's best value so far against the median of the COMPLETE trials at that step;
- successive halving (and each Hyperband bracket, which is one): the value at the rung against the
  rung's promotion cut, the worst value still in the best 1/reduction-factor of the trials that
  reached that rung (fewer than reduction-factor trials: the best of them).

Any other pruner gets the epoch and score, with no threshold. The result is tags for the trial's run.
"""

from __future__ import annotations

import logging
import math

import mlflow
import optuna
from optuna.pruners._percentile import _get_percentile_intermediate_result_over_trials
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from cnnexp.tracking import tags
from cnnexp.tracking.runs import retry_locked

log = logging.getLogger(__name__)

RUNG_KEY = "completed_rung_{}"  # Optuna's successive halving marks each rung a trial reached so


def step_base(study: optuna.Study) -> int:
    """The step a trial reports its first epoch as: 1 (step = epochs trained, so successive halving's
    first rung can come after epoch 1) in the studies cnnexp creates, which it marks; 0 in a study that
    an earlier release started, recognised by a score at step 0, which keeps Keras's 0-based epoch
    index: mixing the two would compare scores one epoch apart at a rung."""
    if study.user_attrs.get(tags.REPORT_STEP_ATTR) == "epochs":
        return 1
    started_0 = any(0 in t.intermediate_values for t in study.get_trials(deepcopy=False))
    return 0 if started_0 else 1


def tag_active_run(trial: optuna.Trial, step: int) -> None:
    """Tag the active MLflow run (the trial's) with :func:`explain`; a failure here never fails the trial."""
    try:
        study = trial.study
        run_tags = explain(study, study._storage.get_trial(trial._trial_id), step)
        retry_locked(lambda: mlflow.set_tags(run_tags))
    except Exception as e:  # noqa: BLE001 - the explanation is a courtesy; the pruning stands
        log.warning("trial %d: could not record why it was pruned: %s", trial.number, e)


def explain(study: optuna.Study, trial: FrozenTrial, step: int) -> dict[str, str]:
    """Tags for a trial its study's pruner has just stopped at ``step`` (:func:`step_base` numbers epochs)."""
    pruner = study.pruner
    maximize = study.direction == StudyDirection.MAXIMIZE
    score, threshold, rule = trial.intermediate_values[step], None, type(pruner).__name__
    if isinstance(pruner, optuna.pruners.PercentilePruner):  # MedianPruner is its 50th percentile
        values = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
        score = (max if maximize else min)(values) if values else score
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if done:
            threshold = _get_percentile_intermediate_result_over_trials(
                done, study.direction, step, pruner._percentile, pruner._n_min_trials
            )
        rule = f"best value so far vs the {pruner._percentile:g}th percentile of {len(done)} complete trials"
    elif isinstance(pruner, optuna.pruners.HyperbandPruner) and pruner._pruners:
        bracket = pruner._get_bracket_id(study, trial)
        threshold, rule = _rung_cut(pruner._create_bracket_study(study, bracket), pruner._pruners[bracket], trial)
        rule = f"Hyperband bracket {bracket}, {rule}"
    elif isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner):
        threshold, rule = _rung_cut(study, pruner, trial)
    epochs = step + 1 - step_base(study)
    out = {tags.PRUNED_AT: str(epochs), tags.PRUNED_SCORE: f"{score:.6g}", tags.PRUNED_RULE: rule}
    if threshold is not None and not math.isnan(threshold):
        out[tags.PRUNED_THRESHOLD] = f"{threshold:.6g}"
    return out


def _rung_cut(
    study: optuna.Study, pruner: optuna.pruners.SuccessiveHalvingPruner, trial: FrozenTrial
) -> tuple[float | None, str]:
    """The promotion cut of the last rung ``trial`` reached, as SuccessiveHalvingPruner computes it."""
    rung = -1
    while RUNG_KEY.format(rung + 1) in trial.system_attrs:
        rung += 1
    if rung < 0:
        return None, "successive halving"
    key = RUNG_KEY.format(rung)
    competing = [t.system_attrs[key] for t in study.get_trials(deepcopy=False) if key in t.system_attrs]
    factor = pruner._reduction_factor
    keep = max(1, len(competing) // factor)  # Optuna: the best 1/factor, at least the best one
    ranked = sorted(competing, reverse=study.direction == StudyDirection.MAXIMIZE)
    return ranked[keep - 1], f"rung {rung}: not among the best {keep} of {len(competing)} trials there"
