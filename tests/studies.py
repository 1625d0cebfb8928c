"""A tiny real study without training: Optuna trials of a quick objective, recorded by cnnexp's own code.

The parent run comes from ensure_parent_run and the child runs from mark_trial (which creates a run
for a trial that has none), as in a study whose trials ran elsewhere: parent + children in seconds.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna

from cnnexp.tuning.parent_run import ensure_parent_run, log_best, mark_trial
from cnnexp.tuning.space_file import load_space
from cnnexp.tuning.storage import display_url, make_storage

ROOT = Path(__file__).resolve().parents[1]


def tiny_study(storage_url: str, name: str, experiment: str = "tests", n_trials: int = 3) -> tuple[optuna.Study, str]:
    """The study and its parent run id, in the current tracking store."""
    storage = make_storage(storage_url)
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", sampler=sampler)
    space = load_space(ROOT / "search_spaces" / "digits.yaml")
    parent_id = ensure_parent_run(study, True, storage, space, display_url(storage_url), experiment)
    study.optimize(lambda t: 1 - t.suggest_float("train.learning_rate", 1e-4, 1e-2, log=True), n_trials=n_trials)
    client = mlflow.MlflowClient()
    for trial in study.trials:
        client.set_terminated(mark_trial(name, parent_id, trial), "FINISHED")  # as train() ends a trial's run
    log_best(parent_id, study)
    client.set_terminated(parent_id, "FINISHED")
    return study, parent_id
