"""A study on a real PostgreSQL server (a throwaway cluster on a loopback port), as for several machines."""

import optuna
import pytest
from optuna.trial import TrialState
from test_tune import study_runs, write_space

from cnnexp.tracking import tags
from cnnexp.tuning.tune import TuneOptions, tune


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_study_on_postgres_resumes_under_one_parent(tracking, tmp_path, postgres_url):
    space = write_space(tmp_path)
    first = tune(TuneOptions(str(space), "pg", n_trials=1, storage=postgres_url, seed=1, retrain_best=False))
    second = tune(TuneOptions(str(space), "pg", n_trials=1, storage=postgres_url, seed=1, retrain_best=False))
    assert first.parent_run_id == second.parent_run_id

    study = optuna.load_study(study_name="pg", storage=postgres_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    runs = study_runs("pg")
    (parent,) = runs["study"]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs["trial"]} == {parent.info.run_id}
    assert len(runs["trial"]) == 2
    storage_tag = parent.data.tags[tags.STORAGE]
    assert "s3cret" not in storage_tag and storage_tag.startswith("postgresql+psycopg://postgres:***@127.0.0.1:")
