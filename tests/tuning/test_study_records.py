"""What a study records when a user edits, interrupts, mistypes or runs it in parallel (issue 19).

Trials train through a stand-in for :func:`cnnexp.training.train.train` that opens the same nested,
tracked MLflow run and returns a value computed from the sampled config, without Keras: these tests
are about the study's record (Optuna, MLflow, the report), and stay fast. test_tune.py trains for real.
"""

import math
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from conftest import tracking_store
from optuna.trial import TrialState
from test_tune import TINY_SPACE, artifact, study_runs, write_space

from cnnexp.cli import main
from cnnexp.errors import ConfigError
from cnnexp.tracking import tags
from cnnexp.tracking.runs import ends_with_status, tracked_run
from cnnexp.training.train import TrainResult
from cnnexp.tuning import storage as storages
from cnnexp.tuning.space_file import load_space
from cnnexp.tuning.tune import TuneOptions, tune


@pytest.fixture(scope="module")
def store_template(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its schema built once: migrating a fresh one takes ~10 s per test."""
    root = tmp_path_factory.mktemp("store_template")
    with tracking_store(root):
        mlflow.MlflowClient().search_experiments()
    return root / "mlflow.db"


@pytest.fixture
def tracking(tmp_path, store_template):
    """As conftest's fixture (a fresh store, cwd tmp_path), from the ready-made schema."""
    shutil.copy(store_template, tmp_path / "mlflow.db")
    with tracking_store(tmp_path) as uri:
        yield uri


def _value(cfg) -> float:
    # best near lr=3e-3, a little better with 8 filters: deterministic, and the params matter
    return 1.0 - abs(math.log10(cfg.train.learning_rate) + 2.5) / 3 - (0.0 if cfg.model.filters == 8 else 0.05)


@pytest.fixture
def fake_train(monkeypatch):
    """Training replaced by a tracked run of the config; ``on_trial[n] = fn`` runs fn(cfg) inside trial n's run."""

    class Fake:
        on_trial: dict = {}
        calls: list = []

        def __call__(self, cfg, *, parent_run_id=None, **kw):
            run_tags = kw.get("tags") or {}
            with tracked_run(cfg.run_name, parent_run_id=parent_run_id, tags=run_tags) as run:
                mlflow.log_params(cfg.flat())
                number = int(run_tags.get(tags.TRIAL_NUMBER, -1))
                if number in self.on_trial:
                    self.on_trial[number](cfg)
                acc = _value(cfg)
                metrics = {"best_val_accuracy": acc, "best_val_loss": 1.0 - acc}
                mlflow.log_metrics(metrics)
            self.calls.append(cfg)
            return TrainResult(run.info.run_id, None, {}, None, metrics)

    fake = Fake()
    fake.on_trial, fake.calls = {}, []
    monkeypatch.setattr("cnnexp.tuning.tune.train", fake)
    return fake


def _opts(space: Path, name: str, tmp_path: Path, n: int, **kw) -> TuneOptions:
    kw.setdefault("retrain_best", False)
    return TuneOptions(str(space), name, n_trials=n, storage=f"sqlite:///{tmp_path / 'o.db'}", seed=0, **kw)


def _edited(tmp_path: Path, name: str, **param_changes) -> Path:
    params = yaml.safe_load(yaml.safe_dump(TINY_SPACE["params"], sort_keys=False))
    params.update(param_changes)
    return write_space(tmp_path, name, params=params)


def _statuses(study_name: str) -> list[str]:
    return [r.info.status for runs in study_runs(study_name).values() for r in runs]


# ------------------------------------------------------------------ 1. resuming with an edited space


@pytest.mark.parametrize(
    "change, reason",
    [
        (
            {"train.optimizer": {"type": "categorical", "choices": ["adam", "adamw", "sgd"]}},
            "choices were ['adam', 'sgd'], now ['adam', 'adamw', 'sgd']",
        ),
        pytest.param(  # the three differ only in the message: two run in .ci/run's slow step
            {"model.filters": {"type": "int", "low": 4, "high": 8}},
            "sampled it as categorical, this space makes it int",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            {"train.learning_rate": {"type": "float", "low": 3e-3, "high": 1e-2, "log": True}},
            "range [0.002, 0.01] narrowed to [0.003, 0.01]",
            marks=pytest.mark.slow,
        ),
    ],
    ids=["choices", "type", "narrowed"],
)
def test_resume_refuses_an_incompatible_space_before_any_trial(tracking, tmp_path, fake_train, capsys, change, reason):
    tune(_opts(write_space(tmp_path), "edit", tmp_path, 2))
    parent = study_runs("edit")["study"][0]
    key = next(iter(change))
    edited = _edited(tmp_path, "edited", **change)
    argv = ["tune", "--space", str(edited), "--study-name", "edit", "--storage", f"sqlite:///{tmp_path / 'o.db'}"]
    assert main([*argv, "--n-trials", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"cnnexp: configuration error: {edited}: params.{key}: study 'edit' cannot resume")
    assert reason in err
    # nothing ran, nothing changed: two trials, two runs, the parent as it was
    assert len(optuna.load_study(study_name="edit", storage=f"sqlite:///{tmp_path / 'o.db'}").trials) == 2
    runs = study_runs("edit")
    assert len(runs["trial"]) == 2
    assert mlflow.MlflowClient().get_run(parent.info.run_id).info.status == "FINISHED"


def test_compatible_edits_resume_and_each_trial_records_its_space(tracking, tmp_path, fake_train):
    first = write_space(tmp_path)
    tune(_opts(first, "grow", tmp_path, 2))
    # widened learning-rate range, an added parameter, a longer retrain
    params = yaml.safe_load(yaml.safe_dump(TINY_SPACE["params"], sort_keys=False))
    params["train.learning_rate"]["high"] = 2e-2
    params["model.dropout"] = {"type": "float", "low": 0.0, "high": 0.3}
    second = write_space(tmp_path, "second", params=params, retrain={"epochs": 3})
    result = tune(_opts(second, "grow", tmp_path, 1, retrain_best=True))
    assert [t.state for t in result.study.trials] == [TrialState.COMPLETE] * 3
    d1, d2 = load_space(first).digest, load_space(second).digest
    assert [t.user_attrs[tags.SPACE_DIGEST_ATTR] for t in result.study.trials] == [d1, d1, d2]

    runs = study_runs("grow")
    trial_digests = {int(r.data.tags[tags.TRIAL_NUMBER]): r.data.tags[tags.SPACE_DIGEST] for r in runs["trial"]}
    assert trial_digests == {0: d1, 1: d1, 2: d2}
    parent = mlflow.MlflowClient().get_run(result.parent_run_id)
    assert parent.data.tags[tags.SPACE_CHANGED] == "true" and parent.data.tags[tags.SPACE_DIGEST] == d2
    assert parent.data.params["space.digest"] == d1  # the params describe the space the study was created with
    spaces = {a.path for a in mlflow.MlflowClient().list_artifacts(result.parent_run_id, "spaces")}
    assert spaces == {f"spaces/{d1}.yaml", f"spaces/{d2}.yaml"}
    assert Path(artifact(result.parent_run_id, f"spaces/{d1}.yaml")).read_text() == first.read_text()
    assert Path(artifact(result.parent_run_id, "search_space.yaml")).read_text() == second.read_text()
    # the retrain used the current space, and says so
    (best,) = runs["best"]
    assert best.data.tags[tags.SPACE_DIGEST] == d2 and best.data.params["train.epochs"] == "3"
    assert Path(artifact(best.info.run_id, "search_space.yaml")).read_text() == second.read_text()


# ------------------------------------------------------------------ 3. failures outside fit


def test_a_trial_failing_outside_fit_keeps_its_reason(tracking, tmp_path, fake_train, monkeypatch, capsys):
    def broken(cfg, **kw):
        raise RuntimeError("disk full while loading the data")

    monkeypatch.setattr("cnnexp.tuning.tune.train", broken)
    result = tune(_opts(write_space(tmp_path), "broken", tmp_path, 1))
    (trial,) = result.study.trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[tags.FAIL_REASON_ATTR] == "RuntimeError: disk full while loading the data"
    (run,) = study_runs("broken")["trial"]  # made for it by the study: train never opened one
    assert run.info.status == "FAILED" and run.data.tags[tags.TRIAL_STATE] == "FAIL"
    assert run.data.tags[tags.FAILURE_REASON] == "RuntimeError: disk full while loading the data"
    assert "trial 0 FAIL value=-" in capsys.readouterr().out.split("| RuntimeError: disk full")[0]


# ------------------------------------------------------------------ 4. Ctrl-C


def _ctrl_c(cfg) -> None:
    os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C in the terminal sends, inside the trial's run
    time.sleep(5)  # interrupted here


def test_ctrl_c_marks_the_trial_refreshes_the_report_and_a_resume_completes_the_record(tracking, tmp_path, fake_train):
    fake_train.on_trial[1] = _ctrl_c
    space = write_space(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        tune(_opts(space, "int", tmp_path, 3))
    study = optuna.load_study(study_name="int", storage=f"sqlite:///{tmp_path / 'o.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    runs = study_runs("int")
    trial_runs = {int(r.data.tags[tags.TRIAL_NUMBER]): r for r in runs["trial"]}
    assert trial_runs[1].info.status == "KILLED" and trial_runs[1].data.tags[tags.TRIAL_STATE] == "FAIL"
    assert runs["study"][0].info.status == "KILLED"
    parent_id = runs["study"][0].info.run_id
    assert pd.read_csv(artifact(parent_id, "trials.csv"))["number"].tolist() == [0, 1]  # refreshed on interrupt

    # A record cut short (a second Ctrl-C during it, in the issue) is completed by the next start.
    mlflow.MlflowClient().delete_tag(trial_runs[1].info.run_id, tags.TRIAL_STATE)
    fake_train.on_trial.clear()
    tune(_opts(space, "int", tmp_path, 0))
    assert mlflow.MlflowClient().get_run(trial_runs[1].info.run_id).data.tags[tags.TRIAL_STATE] == "FAIL"
    assert "RUNNING" not in _statuses("int")


def test_a_second_ctrl_c_inside_the_runs_end_still_ends_it(tracking):
    client = mlflow.MlflowClient()
    run_id = client.create_run(client.create_experiment("e")).info.run_id

    def end(status: str) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, a few ms after the first
        time.sleep(0.2)  # it would land here, before the status is written
        client.set_terminated(run_id, status)

    with pytest.raises(KeyboardInterrupt):
        with ends_with_status(run_id, end):
            raise KeyboardInterrupt  # the first
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and "interrupted" in run.data.tags[tags.FAILURE_REASON]


# ------------------------------------------------------------------ 5. parallel workers


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_the_parent_stays_running_while_another_worker_works(tracking, tmp_path, fake_train):
    space = write_space(tmp_path)
    tune(_opts(space, "par", tmp_path, 1))
    study = optuna.load_study(study_name="par", storage=f"sqlite:///{tmp_path / 'o.db'}")
    other = subprocess.Popen(["sleep", "60"])  # stands for a second worker on this machine
    try:
        worker = f"{socket.gethostname()}:{other.pid}:{storages._start_time(other.pid)}"
        study.set_user_attr(tags.WORKER_STATE_PREFIX + worker, tags.WORKER_ACTIVE)
        result = tune(_opts(space, "par", tmp_path, 1))
        assert mlflow.MlflowClient().get_run(result.parent_run_id).info.status == "RUNNING"  # the other still works
    finally:
        other.kill()
        other.wait()
    # That worker died without leaving: the next worker to start cleans its entry, and ends the parent.
    result = tune(_opts(space, "par", tmp_path, 0))
    assert mlflow.MlflowClient().get_run(result.parent_run_id).info.status == "FINISHED"
    assert result.study.user_attrs[tags.WORKER_STATE_PREFIX + worker] == tags.WORKER_DEAD


# ------------------------------------------------------------------ 6. and 7. names and storages


def test_n_trials_0_with_an_unknown_study_creates_nothing(tracking, tmp_path, fake_train, capsys):
    space = str(write_space(tmp_path))
    for storage in ("sqlite:///missing.db", "journal:./missing.log"):
        assert main(["tune", "--space", space, "--study-name", "typo", "--n-trials", "0", "--storage", storage]) == 2
        assert "no study named 'typo' in" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "missing.log").exists()
    # a storage holding another study: the mistyped one is not added to it
    tune(_opts(Path(space), "real", tmp_path, 1))
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    assert main(["tune", "--space", space, "--study-name", "reel", "--n-trials", "0", "--storage", storage]) == 2
    assert optuna.get_all_study_names(storage) == ["real"]
    assert set(study_runs("reel")) == set()


@pytest.mark.parametrize(
    "url, reason",
    [
        (
            "sqlite:////nonexistent/dir/x.db",
            "'sqlite:////nonexistent/dir/x.db': folder /nonexistent/dir does not exist",
        ),
        ("journal:/nonexistent/dir/x.log", "'journal:/nonexistent/dir/x.log': folder /nonexistent/dir does not exist"),
        ("foo://bar", "'foo://bar' cannot be opened (Can't load plugin: sqlalchemy.dialects:foo)"),
    ],
)
def test_bad_storage_urls_are_one_line_errors(tracking, tmp_path, capsys, url, reason):
    space = str(write_space(tmp_path))
    assert main(["tune", "--space", space, "--study-name", "s", "--n-trials", "1", "--storage", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"cnnexp: configuration error: storage {reason}")
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_a_study_name_with_a_quote_is_refused(tracking, tmp_path, capsys):
    space = str(write_space(tmp_path))
    assert main(["tune", "--space", space, "--study-name", "bob's", "--n-trials", "1"]) == 2
    assert 'study name "bob\'s": must be non-empty, without quotes' in capsys.readouterr().err
    assert not (tmp_path / "optuna.db").exists()
    with pytest.raises(ConfigError, match="without quotes"):
        from cnnexp.reports.study import find_runs

        find_runs("bob's")


def test_fixed_experiment_name_is_honoured(tracking, tmp_path, fake_train):
    space = write_space(tmp_path, fixed={**TINY_SPACE["fixed"], "experiment_name": "from-space"})
    result = tune(_opts(space, "exp", tmp_path, 1))
    experiment = mlflow.get_experiment_by_name("from-space")
    assert experiment is not None
    runs = study_runs("exp")
    assert {r.info.experiment_id for rs in runs.values() for r in rs} == {experiment.experiment_id}
    assert result.best is not None


# ------------------------------------------------------------------ 8. and 9. the study report only reads


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.suffix in (".db", ".log")}


def test_report_never_writes_a_storage_and_checks_it_is_the_recorded_study(tracking, tmp_path, fake_train):
    space = write_space(tmp_path)
    tune(TuneOptions(str(space), "ro", n_trials=5, seed=0, retrain_best=False))  # default relative sqlite:///optuna.db
    parent = study_runs("ro")["study"][0]
    assert parent.data.tags[tags.STORAGE] == f"sqlite:///{tmp_path / 'optuna.db'}"  # recorded absolute
    # moved away, reported from another folder: nothing is created, here or there
    shutil.move(tmp_path / "optuna.db", tmp_path / "moved.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = _files(tmp_path)
    os.chdir(elsewhere)
    assert main(["report", "--study", "ro", "--out", str(tmp_path / "r1"), "--no-log"]) == 0
    assert _files(tmp_path) == before
    assert (
        "rebuilt from `trials.csv` and `distributions.json` (storage unreachable"
        in (tmp_path / "r1" / "report.md").read_text()
    )
    # another study of the same name at the recorded path is not taken for this one
    other = optuna.create_study(study_name="ro", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    other.set_user_attr(tags.PARENT_RUN_ATTR, "someone-else")
    stat = (tmp_path / "optuna.db").stat()
    assert main(["report", "--study", "ro", "--out", str(tmp_path / "r2"), "--no-log"]) == 0
    text = (tmp_path / "r2" / "report.md").read_text()
    assert "holds another study of that name (parent run someone-else)" in text
    after = (tmp_path / "optuna.db").stat()
    assert (after.st_size, after.st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)  # not written
    # and its own storage, put back, is loaded (read-only)
    shutil.move(tmp_path / "moved.db", tmp_path / "optuna.db")
    assert main(["report", "--study", "ro", "--out", str(tmp_path / "r3"), "--no-log"]) == 0
    assert "loaded from its Optuna storage" in (tmp_path / "r3" / "report.md").read_text()


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_a_minimised_study_rebuilt_from_its_record_names_the_lowest_loss_best(tracking, tmp_path, fake_train):
    space = write_space(tmp_path, objective="val_loss")
    result = tune(_opts(space, "loss", tmp_path, 4))
    assert result.study.direction == optuna.study.StudyDirection.MINIMIZE
    lowest = min(result.study.trials, key=lambda t: t.value)
    parent = mlflow.MlflowClient().get_run(result.parent_run_id)
    assert parent.data.tags[tags.DIRECTION] == "minimize"
    (tmp_path / "o.db").unlink()
    out = tmp_path / "report"
    assert main(["report", "--study", "loss", "--out", str(out), "--no-log"]) == 0
    text = (out / "report.md").read_text()
    assert "storage unreachable; direction minimize" in text
    first_row = [c.strip() for c in text.split("## Best trials")[1].split("\n|")[3].split("|")]
    assert first_row[0] == str(lowest.number) and float(first_row[1]) == pytest.approx(lowest.value, abs=1e-4)
    assert not (tmp_path / "o.db").exists()
