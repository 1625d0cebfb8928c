"""Every name cnnexp writes into MLflow and Optuna and later reads back, defined once.

Writers and readers import these constants: a tag renamed here is renamed everywhere, and a
reader cannot look for a key that no writer sets.
"""

from __future__ import annotations

PREFIX = "cnnexp."

# ---------------------------------------------------------------- MLflow run tags
FAILURE_REASON = "cnnexp.failure_reason"  # why a run ended FAILED or KILLED
ROLE = "cnnexp.role"  # study | trial | best | launcher | reproduction
KIND = "cnnexp.kind"  # exploration runs
DATASET = "cnnexp.dataset"
SEED = "cnnexp.seed"
SPLIT_HASH = "cnnexp.split_hash"  # identifies the exact train/val/test split
DATA_HASH = "cnnexp.data_hash"  # sha256 of every pixel and label
GIT_COMMIT = "cnnexp.git_commit"
VERSION = "cnnexp.version"
REPRODUCED_FROM = "cnnexp.reproduced_from"

# Studies: the parent run, its trials and the retrained best.
STUDY = "cnnexp.study"
STORAGE = "cnnexp.storage"  # the Optuna storage URL (password hidden)
DIRECTION = "cnnexp.direction"  # maximize | minimize, as the study was created
SAMPLER = "cnnexp.sampler"
SPACE_CHANGED = "cnnexp.space_changed"  # the study was resumed with an edited (compatible) space
SPACE_DIGEST = "cnnexp.space_digest"  # parent: the current space; trial and retrain runs: the one they used
STUDY_RUN_ID = "cnnexp.study_run_id"  # on a `mlflow run` launcher: the study's parent run
PROMOTION_RUN_ID = "cnnexp.promotion_run_id"  # on a `mlflow run -e promote` launcher: the promotion run
TRIAL_NUMBER = "cnnexp.trial_number"
TRIAL_STATE = "cnnexp.trial_state"
TRIAL_VALUE = "cnnexp.trial_value"
BEST_TRIAL = "cnnexp.best_trial"
BEST_RUN_ID = "cnnexp.best_run_id"
BEST_PARAM_PREFIX = "best."
# A pruned trial's run: the epoch it was stopped after, the score the pruner judged, the bar it missed.
PRUNED_AT = "cnnexp.pruned_at"
PRUNED_SCORE = "cnnexp.pruned_score"
PRUNED_THRESHOLD = "cnnexp.pruned_threshold"  # absent when the pruner has no threshold to show
PRUNED_RULE = "cnnexp.pruned_rule"
# A study planned to a deadline (cnnexp tune --time-budget-minutes), on its parent run.
TIME_BUDGET = "cnnexp.time_budget_minutes"
PLAN_TRIALS = "cnnexp.plan_trials"  # configurations planned, the timed first one included
PLAN_RUNGS = "cnnexp.plan_rungs"  # epochs after which the pruner may stop a trial
PLAN_RETRAIN_MINUTES = "cnnexp.plan_retrain_minutes"
DEADLINE_MET = "cnnexp.deadline_met"  # true | false, when the study has ended
STUDY_MINUTES = (
    "cnnexp.study_minutes"  # the whole study, setup to retrained model  # parent-run tags best.<dotted key> = value
)

# Roles
ROLE_STUDY, ROLE_TRIAL, ROLE_BEST = "study", "trial", "best"
ROLE_LAUNCHER, ROLE_REPRODUCTION = "launcher", "reproduction"

# MLflow's own experiment tag: which UI an experiment opens on. Without it MLflow 3's UI opens a
# new experiment on its GenAI pages ("Traces"); cnnexp's runs are model training.
EXPERIMENT_KIND = "mlflow.experimentKind"
KIND_MODEL_DEVELOPMENT = "custom_model_development"

# ---------------------------------------------------------------- registered model version tags
SOURCE_RUN = "cnnexp.source_run"
TEST_HASH = "cnnexp.test_hash"
DECISION = "cnnexp.decision"
DECISION_REASON = "cnnexp.decision_reason"
COMPARED_METRIC = "cnnexp.compared_metric"
COMPARED_WITH = "cnnexp.compared_with"
WON_ON = "cnnexp.won_on"
FORCED = "cnnexp.forced"
# The paired evidence of the decision (deploy/evidence.py), against the champion of that time.
EVIDENCE_METHOD = "cnnexp.evidence_method"  # exact McNemar | paired bootstrap
DIFFERENCE = "cnnexp.difference"  # this version minus the champion, on the compared metric
DIFFERENCE_CI = "cnnexp.difference_ci"  # "[low, high]" at confidence 1 - alpha
P_VALUE = "cnnexp.p_value"
ALPHA = "cnnexp.alpha"
MIN_MARGIN = "cnnexp.min_margin"
ONLY_CHALLENGER_RIGHT = "cnnexp.only_challenger_right"  # test images this version gets right, the champion wrong
ONLY_CHAMPION_RIGHT = "cnnexp.only_champion_right"
LATENCY_MS = "cnnexp.latency_ms"  # median single-image predict time, measured at promotion
CHAMPION_METRIC_PREFIX = "cnnexp.champion_"  # the champion's test metrics, e.g. cnnexp.champion_test_accuracy

# Tags that describe one decision: a version promoted again loses those its new decision does not set.
DECISION_TAGS = frozenset(
    {
        DECISION,
        DECISION_REASON,
        COMPARED_METRIC,
        COMPARED_WITH,
        WON_ON,
        FORCED,
        EVIDENCE_METHOD,
        DIFFERENCE,
        DIFFERENCE_CI,
        P_VALUE,
        ALPHA,
        MIN_MARGIN,
        ONLY_CHALLENGER_RIGHT,
        ONLY_CHAMPION_RIGHT,
        LATENCY_MS,
    }
)


def metric_tag(name: str) -> str:
    """A test metric recorded on a model version, e.g. ``cnnexp.test_accuracy``."""
    return PREFIX + name


def champion_metric_tag(name: str) -> str:
    """The compared champion's test metric recorded on a version, e.g. ``cnnexp.champion_test_accuracy``."""
    return CHAMPION_METRIC_PREFIX + name


def is_decision_tag(key: str) -> bool:
    return key in DECISION_TAGS or key.startswith(CHAMPION_METRIC_PREFIX)


# ---------------------------------------------------------------- Optuna study and trial attributes
PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study: the parent MLflow run
SPACE_DIGEST_ATTR = "space_digest"  # study: the space file it was started with; trial: the one it used
BEST_RUN_ATTR = "best_run_id"  # study: the run that retrained the best trial
BEST_RUN_TRIAL_ATTR = "best_run_trial"  # study: which trial that run retrained
TRIAL_RUN_ATTR = "mlflow_run_id"  # trial: its MLflow run
WORKER_ATTR = "cnnexp.worker"  # trial: host:pid:start-time of the process running it
FAIL_REASON_ATTR = "cnnexp.fail_reason"  # trial: the exception that failed it (Optuna 5 records none)
REPORT_STEP_ATTR = "cnnexp.report_step"  # study: "epochs" = a trial reports epoch e (1-based) as step e
WORKER_STATE_PREFIX = "cnnexp.worker."  # study: cnnexp.worker.<host:pid:start> = active | left | dead
WORKER_ACTIVE, WORKER_LEFT, WORKER_DEAD = "active", "left", "dead"
