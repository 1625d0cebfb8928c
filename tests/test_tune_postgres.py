"""A study on a real PostgreSQL server (a throwaway cluster on a loopback port), as for several machines."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile

import optuna
import pytest
from optuna.trial import TrialState
from test_tune import study_runs, write_space

from cnnexp.tune import TuneOptions, tune


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert bins, "PostgreSQL server binaries missing: apt-get install postgresql"
    bindir = os.path.dirname(bins[-1])
    # PostgreSQL refuses to run as root; the cluster belongs to the postgres user in a dir it can reach.
    root = tempfile.mkdtemp(prefix="cnnexp-pg-", dir="/tmp")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    data, port = os.path.join(root, "data"), _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    pg(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    pg(f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", os.path.join(root, "log"), "-w", "start")
    try:
        # trust auth accepts any password: the URL carries one so the test can check it is never logged
        yield f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{port}/postgres"
    finally:
        pg(f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


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
    storage_tag = parent.data.tags["cnnexp.storage"]
    assert "s3cret" not in storage_tag and storage_tag.startswith("postgresql+psycopg://postgres:***@127.0.0.1:")
