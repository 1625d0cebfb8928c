"""A study planned to a wall-clock deadline: the arithmetic, as pure functions of one timed trial.

``cnnexp tune --time-budget-minutes M`` times its first trial, then :func:`plan_study` splits what
is left of the M minutes into a reserve (the study's report, the retrain's test evaluation and
model logging), the final retrain of the best configuration (a share of the rest, at most the
space's ``retrain.time_budget_minutes``) and the trials: as many configurations as the trial time
buys at the epochs each is expected to train under the pruner (successive halving keeps a third at
each rung), plus the fixed cost every trial pays however early it is stopped (its run, model, tracing:
the first trial's time beyond its epochs). The trials phase then runs until its time is up (Optuna's
timeout; the count is an estimate, capped only by a user's ``--n-trials``), so the study can overrun
only by the trial running at the timeout; the retrain gets the time really left
(:func:`retrain_seconds`), so a late trials phase shortens the retrain, not the deadline.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

RETRAIN_SHARE = 0.45  # of the time after the first trial and the reserve (a 60-minute study: ~25 min)
# Kept back for the study's report and the retrain's test evaluation, figures and model logging: 5% of
# the budget, and at least the first trial's time plus 10 s (those fixed costs are of a trial's order).
RESERVE_FRACTION = 0.05
RESERVE_MIN_S = 10.0
RETRAIN_FLOOR = 0.25  # a late trials phase shrinks the retrain to no less than this share of its plan
MEDIAN_SURVIVAL = 0.5  # median pruner: about half the trials go on past the first cut
NO_CAP = 1_000_000  # "as many trials as the deadline allows"


@dataclass(frozen=True)
class Plan:
    budget_s: float
    elapsed_s: float  # setup and the first trial, when the plan was made
    first_trial_s: float
    trial_epochs: int
    pruner: str
    rungs: list[int] = field(default_factory=list)  # epochs after which the pruner may stop a trial
    epochs_per_trial: float = 0.0  # expected under the pruner
    epoch_s: float = 0.0  # one epoch of a trial, from the first trial's later epochs
    fixed_trial_s: float = 0.0  # what a trial costs beyond its epochs: run, data, model, tracing
    n_trials: int = 0  # configurations after the first one that the trials' time is expected to buy
    trials_s: float = 0.0
    retrain_s: float = 0.0
    reserve_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def expected_epochs(pruner: str, trial_epochs: int, rungs: list[int], factor: int = 3) -> float:
    """Epochs a trial trains on average: successive halving keeps 1/factor of the trials at each rung."""
    if not rungs or pruner == "none":
        return float(trial_epochs)
    if pruner == "median":
        return rungs[0] + MEDIAN_SURVIVAL * (trial_epochs - rungs[0])
    # sha, and Hyperband approximated by its most aggressive bracket (the others train longer)
    bounds = [*rungs, trial_epochs]
    return bounds[0] + sum((bounds[i + 1] - bounds[i]) * factor ** -(i + 1) for i in range(len(rungs)))


def plan_study(
    budget_s: float,
    elapsed_s: float,
    first_trial_s: float,
    trial_epochs: int,
    pruner: str,
    rungs: list[int],
    retrain_cap_s: float | None = None,
    max_trials: int = NO_CAP,
    epoch_s: float | None = None,
    first_epochs: int | None = None,
) -> Plan:
    """How many more configurations, and how long the retrain gets, to end by ``budget_s``.

    ``epoch_s``, one epoch's seconds measured in the first trial (which ran ``first_epochs``, default
    all), splits its time into epochs and a fixed cost; without it every second is counted as epochs (a
    pruned trial then looks cheaper than it is).
    """
    reserve = max(RESERVE_MIN_S + first_trial_s, RESERVE_FRACTION * budget_s)
    left = max(0.0, budget_s - elapsed_s - reserve)
    retrain = RETRAIN_SHARE * left if retrain_cap_s is None else min(RETRAIN_SHARE * left, retrain_cap_s)
    trials_s = left - retrain
    ran = first_epochs or trial_epochs
    epoch_s = min(epoch_s or first_trial_s / ran, first_trial_s / ran)
    fixed = first_trial_s - epoch_s * ran
    per_trial = fixed + expected_epochs(pruner, trial_epochs, rungs) * epoch_s
    n = math.floor(trials_s / per_trial) if per_trial > 0 else 0
    n = max(0, min(n, max_trials - 1))
    return Plan(
        budget_s=budget_s,
        elapsed_s=elapsed_s,
        first_trial_s=first_trial_s,
        trial_epochs=trial_epochs,
        pruner=pruner,
        rungs=list(rungs),
        epochs_per_trial=expected_epochs(pruner, trial_epochs, rungs),
        epoch_s=epoch_s,
        fixed_trial_s=fixed,
        n_trials=n,
        trials_s=trials_s,
        retrain_s=retrain,
        reserve_s=reserve,
    )


def retrain_seconds(plan: Plan, elapsed_s: float) -> float:
    """The retrain's time budget when it starts: what is left before the reserve, never below its floor."""
    return max(plan.budget_s - plan.reserve_s - elapsed_s, RETRAIN_FLOOR * plan.retrain_s, 1.0)


def describe(plan: Plan) -> str:
    """The plan in lines a person reads before the study goes on."""
    rungs = ", ".join(map(str, plan.rungs)) or "none"
    return "\n".join(
        [
            f"plan for a {plan.budget_s / 60:g}-minute study (first trial: {plan.first_trial_s:.0f}s for "
            f"{plan.trial_epochs} epochs; {plan.elapsed_s:.0f}s used so far):",
            f"  trials:  about {plan.n_trials} more configuration(s) in {plan.trials_s / 60:.1f} min; pruner "
            f"{plan.pruner}, may stop a trial after epoch(s) {rungs}; about {plan.epochs_per_trial:.1f} epochs each "
            f"({plan.epoch_s:.1f}s an epoch, {plan.fixed_trial_s:.0f}s a trial besides)",
            f"  retrain: the best configuration on the full training data for up to {plan.retrain_s / 60:.1f} min",
            f"  reserve: {plan.reserve_s:.0f}s for the report, the test evaluation and the model",
        ]
    )


def outcome(plan: Plan, total_s: float, trials_end_s: float, n_run: int, states: dict[str, int]) -> dict:
    """How the study went against its plan (elapsed times in seconds from the study's start)."""
    return {
        "planned_trials": plan.n_trials + 1,
        "trials_run": n_run,
        "states": states,
        "trials_phase_s": trials_end_s,
        "planned_trials_phase_s": plan.elapsed_s + plan.trials_s,
        "retrain_and_report_s": total_s - trials_end_s,
        "total_s": total_s,
        "budget_s": plan.budget_s,
        "within_budget": total_s <= plan.budget_s,
    }


def describe_outcome(result: dict) -> str:
    over = result["total_s"] - result["budget_s"]
    verdict = "within the deadline" if over <= 0 else f"{over:.0f}s over the deadline"
    states = ", ".join(f"{n} {s.lower()}" for s, n in result["states"].items())
    return (
        f"deadline study: {result['total_s'] / 60:.1f} of {result['budget_s'] / 60:g} min, {verdict}; "
        f"{result['trials_run']} trial(s) run ({states}) against {result['planned_trials']} planned, "
        f"trials phase {result['trials_phase_s'] / 60:.1f} min (planned {result['planned_trials_phase_s'] / 60:.1f}), "
        f"retrain and report {result['retrain_and_report_s'] / 60:.1f} min"
    )
