"""Studies end to end on digits with tiny models: nesting, resume, pruning, failures, heartbeats."""

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState, create_trial

from cnnexp.cli import main
from cnnexp.errors import ConfigError
from cnnexp.tracking import tags
from cnnexp.tuning.parent_run import best_trial
from cnnexp.tuning.tune import TuneOptions, tune

ROOT = Path(__file__).resolve().parents[2]

TINY_SPACE = {
    "dataset": "digits",
    "trials": {"epochs": 2, "train_subset": 600},
    "retrain": {"epochs": 2},
    "fixed": {"model.convs_per_block": 1, "model.head_units": 32, "train.batch_size": 64},
    "params": {
        "train.learning_rate": {"type": "float", "low": 2e-3, "high": 1e-2, "log": True},
        "train.optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "train.momentum": {"type": "float", "low": 0.8, "high": 0.9, "when": {"train.optimizer": "sgd"}},
        "model.filters": {"type": "categorical", "choices": [4, 8]},
    },
}


def write_space(tmp_path: Path, name: str = "tiny", **changes) -> Path:
    doc = yaml.safe_load(yaml.safe_dump(TINY_SPACE, sort_keys=False))
    doc.update(changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def study_runs(study_name: str) -> dict[str, list]:
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.`cnnexp.study` = '{study_name}'", output_format="list"
    )
    out: dict[str, list] = {}
    for run in runs:
        out.setdefault(run.data.tags[tags.ROLE], []).append(run)
    return out


def artifact(run_id: str, path: str) -> str:
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)


def test_study_nests_trials_retrains_best_and_resumes(tracking, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")  # sampled within a trial's seconds
    space = write_space(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    argv = ["tune", "--space", str(space), "--study-name", "nest", "--storage", storage, "--seed", "3"]
    assert main([*argv, "--n-trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "[1/2] trial 0 COMPLETE value=" in out and "[2/2] trial 1 COMPLETE" in out and "best=" in out

    study = optuna.load_study(study_name="nest", storage=storage)
    runs = study_runs("nest")
    (parent,) = runs["study"]
    parent_id = parent.info.run_id
    assert study.user_attrs["mlflow_parent_run_id"] == parent_id
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[tags.STORAGE] == storage
    experiment = mlflow.get_experiment(parent.info.experiment_id)
    assert experiment.tags[tags.EXPERIMENT_KIND] == tags.KIND_MODEL_DEVELOPMENT  # the UI opens on the runs

    trials = {int(r.data.tags[tags.TRIAL_NUMBER]): r for r in runs["trial"]}
    assert sorted(trials) == [0, 1]
    client = mlflow.MlflowClient()
    for t in study.trials:
        run = trials[t.number]
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.info.status == "FINISHED" and run.data.tags[tags.TRIAL_STATE] == "COMPLETE"
        assert run.data.params["train.learning_rate"] == str(t.params["train.learning_rate"])
        assert run.data.params["train.epochs"] == "2" and run.data.params["data.train_subset"] == "600"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [0, 1]
        assert t.value == pytest.approx(run.data.metrics["best_val_accuracy"])
        assert not any(name.startswith("test_") for name in run.data.metrics)  # the objective never sees test
        contexts = {d.tags[0].value: d.dataset.name for d in run.inputs.dataset_inputs}
        assert contexts == {"training": "digits-training", "validation": "digits-validation"}  # and no test set
        assert "system/cpu_utilization_percentage" in run.data.metrics

    # the parent's report: best value and params, trials table, Optuna's plots
    best = max(study.trials, key=lambda t: t.value)
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert parent.data.tags[tags.BEST_TRIAL] == str(best.number)
    table = pd.read_csv(artifact(parent_id, "trials.csv"))
    assert table["number"].tolist() == [0, 1] and set(table["state"]) == {"COMPLETE"}
    assert "params_train.learning_rate" in table.columns
    plots = {a.path for a in client.list_artifacts(parent_id, "plots")}
    for name in ("optimization_history", "param_importances", "parallel_coordinate", "slice"):
        assert f"plots/{name}.png" in plots
    assert open(artifact(parent_id, "plots/slice.png"), "rb").read(4) == b"\x89PNG"

    # the retrained best: nested, full training data, tested once, with its model
    (retrained,) = runs["best"]
    assert retrained.data.tags["mlflow.parentRunId"] == parent_id and retrained.info.status == "FINISHED"
    assert retrained.data.params["data.train_subset"] == "None"
    assert retrained.data.params["split.train_size"] == "1257"
    assert retrained.data.params["train.learning_rate"] == str(best.params["train.learning_rate"])
    assert 0 <= retrained.data.metrics["test_accuracy"] <= 1
    model = mlflow.models.get_model_info(f"runs:/{retrained.info.run_id}/model")
    assert model.signature is not None and model.run_id == retrained.info.run_id
    assert parent.data.tags[tags.BEST_RUN_ID] == retrained.info.run_id

    # resume: the same name adds trials to the same study and the same parent run
    assert main([*argv, "--n-trials", "1", "--no-retrain-best"]) == 0
    assert "resumed" in capsys.readouterr().out
    study = optuna.load_study(study_name="nest", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2]
    runs = study_runs("nest")
    assert [r.info.run_id for r in runs["study"]] == [parent_id]
    assert len(runs["best"]) == 1
    assert sorted(int(r.data.tags[tags.TRIAL_NUMBER]) for r in runs["trial"]) == [0, 1, 2]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs["trial"]} == {parent_id}
    assert len(pd.read_csv(artifact(parent_id, "trials.csv"))) == 3


class PruneTrialOne(optuna.pruners.BasePruner):
    """Deterministic: trial 1 is pruned at its first report, every other trial runs to the end."""

    def prune(self, study, trial) -> bool:
        return trial.number == 1


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_pruned_trial_marked_in_optuna_and_mlflow(tracking, tmp_path):
    space = write_space(tmp_path)
    opts = TuneOptions(str(space), "prune", n_trials=2, storage=f"sqlite:///{tmp_path / 'o.db'}", seed=0)
    opts.pruner, opts.retrain_best = PruneTrialOne(), False
    result = tune(opts)
    states = [t.state for t in result.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED]
    assert result.best.number == 0

    trials = {int(r.data.tags[tags.TRIAL_NUMBER]): r for r in study_runs("prune")["trial"]}
    assert trials[1].data.tags[tags.TRIAL_STATE] == "PRUNED"
    assert trials[1].info.status == "FINISHED"  # stopped on purpose, not a failure
    history = mlflow.MlflowClient().get_metric_history(trials[1].info.run_id, "val_accuracy")
    assert [m.step for m in history] == [0]  # stopped after the epoch it was pruned at
    assert trials[0].data.tags[tags.TRIAL_STATE] == "COMPLETE"


def test_a_pruned_trials_run_says_at_which_rung_with_what_score_against_what_threshold(tracking, tmp_path, monkeypatch):
    monkeypatch.setattr("cnnexp.tuning.tune.log_report", lambda parent_id, study: [])  # plots: tested above
    # Random sampler, seed 10: trial 0 trains at 1e-2, trial 1 at 1e-7 (learns nothing in 3 epochs), so
    # successive halving stops trial 1 at its first rung (epoch 1), below trial 0's value there.
    params = {"train.learning_rate": {"type": "categorical", "choices": [1e-2, 1e-7]}}
    # Pooling before BN validates at chance for the first epochs of so short a run (tests/conftest.py).
    fixed = {
        **TINY_SPACE["fixed"],
        "train.lr_schedule": "wsd",
        "train.warmup_epochs": 0.5,
        "model.block_order": "conv_bn_pool",
        # The earlier default had dropout; without it, trial 0 also validates at chance for 3 epochs here.
        "model.dropout": 0.1,
        "model.head_dropout": 0.3,
    }
    space = write_space(tmp_path, trials={"epochs": 3, "train_subset": 600}, fixed=fixed, params=params)
    opts = TuneOptions(str(space), "why", 2, storage=f"sqlite:///{tmp_path / 'o.db'}", sampler="random", seed=10)
    opts.pruner, opts.retrain_best = "sha", False
    study = tune(opts).study
    good, bad = study.trials
    assert (good.params["train.learning_rate"], bad.params["train.learning_rate"]) == (1e-2, 1e-7)
    assert (good.state, bad.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    runs = {int(r.data.tags[tags.TRIAL_NUMBER]): r for r in study_runs("why")["trial"]}
    pruned = runs[1].data.tags
    assert pruned[tags.PRUNED_AT] == "1"  # the first rung: step 1 = epoch 1, after the 0.5-epoch warm-up
    assert float(pruned[tags.PRUNED_SCORE]) == pytest.approx(bad.intermediate_values[1], abs=1e-5)
    assert float(pruned[tags.PRUNED_THRESHOLD]) == pytest.approx(good.intermediate_values[1], abs=1e-5)
    assert "rung 0: not among the best 1 of 2 trials" in pruned[tags.PRUNED_RULE]
    assert tags.PRUNED_AT not in runs[0].data.tags

    from cnnexp.reports.study import pruned_section

    text = "\n".join(pruned_section(study_runs("why")["study"][0]))
    threshold = f"{float(pruned[tags.PRUNED_THRESHOLD]):.4f}"  # the report's table rounds to 4 decimals
    assert "## Pruned trials" in text and threshold in text and "rung 0: not among the best 1" in text


def test_a_median_prune_is_explained_by_the_median_of_the_complete_trials():
    from cnnexp.tuning.pruning import explain

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(1, 0))
    for curve in ([0.5, 0.7], [0.6, 0.9], [0.4, 0.8]):
        study.add_trial(create_trial(value=curve[-1], intermediate_values=dict(enumerate(curve))))
    trial = study.ask()
    trial.report(0.3, 0)
    trial.report(0.65, 1)
    assert trial.should_prune()
    why = explain(study, study._storage.get_trial(trial._trial_id), 1)
    assert why[tags.PRUNED_AT] == "2" and why[tags.PRUNED_SCORE] == "0.65"
    assert why[tags.PRUNED_THRESHOLD] == "0.8" and "50th percentile of 3 complete trials" in why[tags.PRUNED_RULE]


@pytest.mark.slow  # a deadline study lasts its deadline: one minute, the least that fits its fixed costs here
def test_a_deadline_study_plans_itself_prints_and_logs_the_plan_and_ends_in_time(tracking, tmp_path, capsys):
    budget_min = 1
    space = write_space(tmp_path, retrain={"epochs": 50})  # more epochs than fit: the deadline must stop it
    argv = ["tune", "--space", str(space), "--study-name", "dl", "--storage", f"sqlite:///{tmp_path / 'o.db'}"]
    argv += ["--seed", "0", "--pruner", "sha", "--time-budget-minutes", str(budget_min)]
    start = time.monotonic()
    assert main(argv) == 0
    wall = time.monotonic() - start
    out = capsys.readouterr().out
    assert "plan for a 1-minute study" in out and "more configuration(s)" in out and "deadline study:" in out
    assert out.index("plan for a") < out.index("retraining trial")  # the plan comes before the study goes on

    study = optuna.load_study(study_name="dl", storage=f"sqlite:///{tmp_path / 'o.db'}")
    longest = max(t.duration.total_seconds() for t in study.trials)
    assert wall <= budget_min * 60 + longest  # the contract: the deadline, plus at most the trial running at it
    (parent,) = study_runs("dl")["study"]
    plan = json.loads(open(artifact(parent.info.run_id, "plan.json")).read())
    print(out[out.index("plan for a") :])
    # 2-epoch trials, warm-up 0.4 epochs: the one cut is after epoch 1 (never after the last, a finished trial).
    assert plan["plan"]["budget_s"] == 60 and plan["plan"]["pruner"] == "sha" and plan["plan"]["rungs"] == [1]
    # The first trial's 2 epochs, 1 gap between their metrics: an epoch's pace, and the rest is its fixed cost.
    assert 0 < plan["plan"]["epoch_s"] and 0 < plan["plan"]["fixed_trial_s"] < plan["plan"]["first_trial_s"]
    assert plan["outcome"]["trials_run"] == len(study.trials)
    # The trials phase lasts its planned time (the count is an estimate), then the retrain takes the rest.
    ran_out = plan["outcome"]["trials_phase_s"] >= plan["outcome"]["planned_trials_phase_s"] - 1
    assert ran_out or plan["plan"]["n_trials"] == 0  # (no time for a second trial: none is started)
    assert parent.data.tags[tags.TIME_BUDGET] == "1"
    assert parent.data.tags[tags.PLAN_TRIALS] == str(plan["plan"]["n_trials"] + 1)
    assert parent.data.tags[tags.DEADLINE_MET] == str(plan["outcome"]["within_budget"]).lower()
    (best,) = study_runs("dl")["best"]
    assert float(best.data.params["train.time_budget_minutes"]) <= budget_min  # the retrain got what was left

    # benchmarks/deadline_tune.py reads a finished study back from its MLflow store and Optuna storage.
    from benchmarks.deadline_tune import collect

    got = collect(tmp_path, "dl")
    assert (
        got["plan"] == plan["plan"] and got["outcome"] == plan["outcome"] and got["retrain"]["run"] == best.info.run_id
    )
    assert [t["number"] for t in got["trials"]] == [t.number for t in study.trials] and got["command_wall_s"] is None


def test_best_trial_ignores_pruned_partial_values():
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(state=TrialState.PRUNED, value=0.99, intermediate_values={0: 0.99}))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5))
    study.add_trial(create_trial(state=TrialState.FAIL))
    assert best_trial(study).number == 1


def test_failing_trials_are_recorded_and_the_study_goes_on(tracking, tmp_path, capsys):
    diverging = {
        "train.optimizer": "sgd",
        "train.learning_rate": 1e12,
        "model.batch_norm": False,
        "model.dropout": 0,
        "model.head_dropout": 0,
    }
    params = {"model.filters": {"type": "categorical", "choices": [4, 8]}}
    space = write_space(tmp_path, fixed={**TINY_SPACE["fixed"], **diverging}, params=params)
    result = tune(TuneOptions(str(space), "fail", n_trials=2, storage=f"sqlite:///{tmp_path / 'o.db'}", seed=0))

    assert [t.state for t in result.study.trials] == [TrialState.FAIL, TrialState.FAIL]  # both ran
    assert result.best is None and result.retrained is None
    assert "nothing to retrain" in capsys.readouterr().out
    runs = study_runs("fail")
    assert runs["study"][0].info.status == "FINISHED" and "best" not in runs
    for run in runs["trial"]:
        assert run.info.status == "FAILED"
        assert run.data.tags[tags.TRIAL_STATE] == "FAIL"
        assert "TrainingDiverged: loss became" in run.data.tags[tags.FAILURE_REASON]


def _cnnexp(*args: str, tmp_path: Path, tracking: str) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    return subprocess.Popen(
        [sys.executable, "-m", "cnnexp", "tune", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_two_workers_share_one_journal_study(tracking, tmp_path):
    space = write_space(tmp_path)
    # No pruner: whether the 4th trial meets the median pruner's 3 finished trials depends on the race.
    # 3 trials each: the 6th is TPE's own draw (after 5 start-up trials), made with constant_liar while the
    # other worker's trial is RUNNING; the parallel-aware sampler must still give exactly the requested trials.
    args = ["--space", str(space), "--study-name", "par", "--storage", "journal:./study.log", "--n-trials", "3"]
    args += ["--pruner", "none"]
    # The store's schema is built now: the worker that loses the creation race waits a bounded time for
    # the creator's parent run, and migrating a fresh SQLite schema must not eat into that wait.
    mlflow.MlflowClient().search_experiments()
    workers = [
        _cnnexp(*args, "--seed", "5", "--no-retrain-best", tmp_path=tmp_path, tracking=tracking) for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert sum("created, parent run" in o for o in outputs) == 1  # exactly one worker created the study

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.log")))
    study = optuna.load_study(study_name="par", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4, 5]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    runs = study_runs("par")
    (parent,) = runs["study"]
    assert parent.info.status == "FINISHED"  # ended by the last worker to leave, not left RUNNING
    numbers = sorted(int(r.data.tags[tags.TRIAL_NUMBER]) for r in runs["trial"])
    assert numbers == [0, 1, 2, 3, 4, 5]  # every trial once, none duplicated
    assert {r.data.tags["mlflow.parentRunId"] for r in runs["trial"]} == {parent.info.run_id}
    # the workers sampled different configurations
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 6


def _wait_mid_trial(study_name: str, worker: subprocess.Popen, timeout: float = 300) -> None:
    """Until the worker's first trial has logged an epoch: it is then training, in the middle of a trial."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        runs = study_runs(study_name).get("trial", [])
        if runs and mlflow.MlflowClient().get_metric_history(runs[0].info.run_id, "val_accuracy"):
            return
        time.sleep(0.5)
    raise AssertionError(f"worker never got into a trial:\n{worker.communicate()[0][-3000:]}")


def _assert_no_run_left_running(study_name: str) -> None:
    statuses = {r.info.run_id: r.info.status for runs in study_runs(study_name).values() for r in runs}
    assert "RUNNING" not in statuses.values(), statuses


@pytest.mark.slow  # a real `cnnexp tune` process is started and killed mid-trial: 40-80 s on a busy 2-core machine
def test_a_killed_worker_on_the_default_storage_is_recovered_at_once(tracking, tmp_path):
    """Issue 16's sequence: default SQLite storage and heartbeat settings, `kill -9` while a trial trains,
    the same command again at once: the dead worker's trial is failed and retried, nothing stays RUNNING."""
    space = write_space(tmp_path, trials={"epochs": 200})  # long enough to be killed mid-trial
    args = ["--space", str(space), "--study-name", "k", "--n-trials", "30", "--no-retrain-best"]
    mlflow.MlflowClient().search_experiments()  # the store's schema is built before the worker starts
    worker = _cnnexp(*args, tmp_path=tmp_path, tracking=tracking)  # ./optuna.db: the default storage
    _wait_mid_trial("k", worker)
    os.kill(worker.pid, signal.SIGKILL)
    worker.communicate()
    (killed,) = optuna.load_study(study_name="k", storage="sqlite:///optuna.db").trials
    assert killed.state == TrialState.RUNNING  # what the issue saw

    result = tune(TuneOptions(str(write_space(tmp_path, name="short")), "k", n_trials=1, retrain_best=False))
    assert [t.state for t in result.study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    retries = [t for t in result.study.trials if "failed_trial" in t.system_attrs]
    assert len(retries) == 1 and retries[0].system_attrs["failed_trial"] == killed.number
    assert retries[0].params == killed.params
    runs = study_runs("k")
    killed_run = next(r for r in runs["trial"] if r.data.tags[tags.TRIAL_NUMBER] == str(killed.number))
    assert (
        killed_run.info.status == "FAILED"
        and "died (killed?); the trial is retried" in killed_run.data.tags[tags.FAILURE_REASON]
    )
    assert runs["study"][0].info.status == "FINISHED"  # the killed worker's parent run is ended by the relaunch
    _assert_no_run_left_running("k")


@pytest.mark.slow  # a worker process is started and killed mid-trial: ~1.5 min on a busy 2-core machine
@pytest.mark.parametrize(
    "storage", ["sqlite:///o.db", "postgres", "journal:./study.log"], ids=["sqlite", "postgres", "journal"]
)
def test_killed_worker_trial_is_failed_and_retried(tracking, tmp_path, storage, request):
    if storage == "postgres":
        storage = request.getfixturevalue("postgres_url")
    space = write_space(tmp_path, trials={"epochs": 200})  # long enough to be killed mid-trial
    args = ["--space", str(space), "--study-name", "hb", "--storage", storage, "--n-trials", "1"]
    worker = _cnnexp(*args, "--heartbeat-interval", "1", tmp_path=tmp_path, tracking=tracking)
    _wait_mid_trial("hb", worker)
    os.kill(worker.pid, signal.SIGKILL)
    worker.communicate()
    (orphan,) = optuna.load_study(study_name="hb", storage=_storage(storage)).trials
    assert orphan.state == TrialState.RUNNING  # nobody could tell Optuna: it is stale, not yet failed
    assert study_runs("hb")["trial"][0].info.status == "RUNNING"

    # The next launch on this machine sees the worker's process is gone (every storage; heartbeats are
    # for other machines' workers): it fails the orphaned trial and its run, queues exactly one retry
    # with the same params, and completes the requested number of trials.
    time.sleep(2.5)
    space_short = write_space(tmp_path, name="short")
    opts = TuneOptions(str(space_short), "hb", n_trials=2, storage=storage, retrain_best=False, heartbeat_interval=1)
    result = tune(opts)
    killed, retried, fresh = result.study.trials
    assert killed.state == TrialState.FAIL
    assert [t for t in result.study.trials if "failed_trial" in t.system_attrs] == [retried]  # exactly one retry
    assert retried.state == TrialState.COMPLETE and retried.params == killed.params
    assert retried.system_attrs["failed_trial"] == killed.number
    assert fresh.state == TrialState.COMPLETE
    assert len(result.study.get_trials(states=(TrialState.COMPLETE,))) == 2  # as requested; nothing lost
    runs = {int(r.data.tags[tags.TRIAL_NUMBER]): r for r in study_runs("hb")["trial"]}
    assert sorted(runs) == [0, 1, 2]
    assert runs[0].info.status == "FAILED" and runs[0].data.tags[tags.TRIAL_STATE] == "FAIL"
    assert "died (killed?)" in runs[0].data.tags[tags.FAILURE_REASON]
    assert runs[1].info.status == runs[2].info.status == "FINISHED"
    _assert_no_run_left_running("hb")


@pytest.mark.slow  # a worker process is started and interrupted mid-trial
def test_ctrl_c_leaves_the_study_consistent_and_resumable(tracking, tmp_path):
    space = write_space(tmp_path, trials={"epochs": 200})
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    worker = _cnnexp("--space", str(space), "--study-name", "int", "--storage", storage, "--n-trials", "2",
                     tmp_path=tmp_path, tracking=tracking)  # fmt: skip
    _wait_mid_trial("int", worker)
    os.kill(worker.pid, signal.SIGINT)  # what Ctrl-C in the worker's terminal sends
    out = worker.communicate(timeout=120)[0]
    assert worker.returncode == 130 and "cnnexp: interrupted" in out, out[-3000:]

    (interrupted,) = optuna.load_study(study_name="int", storage=storage).trials
    assert interrupted.state == TrialState.FAIL  # not left RUNNING in Optuna
    runs = study_runs("int")
    assert runs["trial"][0].info.status == "KILLED" and runs["study"][0].info.status == "KILLED"
    _assert_no_run_left_running("int")

    # Relaunching resumes the same study under the same parent and completes the requested trials.
    result = tune(TuneOptions(str(write_space(tmp_path, name="short")), "int", n_trials=2, storage=storage,
                              retrain_best=False))  # fmt: skip
    assert result.parent_run_id == runs["study"][0].info.run_id
    assert [t.state for t in result.study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert mlflow.MlflowClient().get_run(result.parent_run_id).info.status == "FINISHED"
    _assert_no_run_left_running("int")


@pytest.mark.slow  # a worker process is started and terminated mid-trial, as for Ctrl-C above
def test_sigterm_ends_the_study_and_trial_killed(tracking, tmp_path):
    """`kill`, `timeout` and job schedulers send SIGTERM: handled like Ctrl-C, exit 128 + 15."""
    space = write_space(tmp_path, trials={"epochs": 200})
    worker = _cnnexp("--space", str(space), "--study-name", "term", "--storage", f"sqlite:///{tmp_path / 'o.db'}",
                     "--n-trials", "2", tmp_path=tmp_path, tracking=tracking)  # fmt: skip
    _wait_mid_trial("term", worker)
    worker.terminate()  # SIGTERM
    out = worker.communicate(timeout=120)[0]
    assert worker.returncode == 143 and "cnnexp: terminated (SIGTERM)" in out, out[-3000:]
    (trial,) = optuna.load_study(study_name="term", storage=f"sqlite:///{tmp_path / 'o.db'}").trials
    assert trial.state == TrialState.FAIL
    runs = study_runs("term")
    assert runs["trial"][0].info.status == "KILLED" and runs["study"][0].info.status == "KILLED"
    assert runs["trial"][0].data.tags[tags.FAILURE_REASON] == "interrupted (SIGTERM)"
    _assert_no_run_left_running("term")


def test_tune_values_are_refused_in_one_line(tracking, tmp_path, capsys):
    space = str(write_space(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        main(["tune", "--space", space, "--n-trials", "1", "--timeout", "-5"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: cnnexp tune" in err and "argument --timeout: '-5' is not allowed: must be above 0" in err
    with pytest.raises(ConfigError, match="timeout=-5 must be a positive number of seconds"):
        tune(TuneOptions(space, "lib", n_trials=1, timeout=-5))
    assert main(["tune", "--space", space, "--n-trials", "1", "--storage", "foo://bar"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnexp: configuration error: storage 'foo://bar' cannot be opened (Can't load plugin")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_study_plots_log_no_matplotlib_chatter(tracking, caplog):
    """Optuna plots categorical params as strings; matplotlib.category announced each one at INFO (8 lines a study)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from cnnexp.tuning.artifacts import log_report

    caplog.set_level(logging.INFO)  # as the CLI logs
    study = optuna.create_study()
    dists = {"model.filters": CategoricalDistribution([4, 8]), "train.learning_rate": FloatDistribution(1e-3, 1e-2)}
    for i, (filters, rate) in enumerate([(4, 2e-3), (8, 5e-3), (4, 8e-3)]):
        params = {"model.filters": filters, "train.learning_rate": rate}
        study.add_trial(create_trial(params=params, distributions=dists, value=0.1 * i, intermediate_values={0: i}))
    mlflow.set_experiment("plots")
    with mlflow.start_run() as parent:
        logged = log_report(parent.info.run_id, study)
    assert "plots/slice.png" in logged and "plots/parallel_coordinate.png" in logged
    assert [r.getMessage() for r in caplog.records if r.name.startswith("matplotlib")] == []


def _storage(url: str):
    if url.startswith("journal:"):
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url[len("journal:") :]))
    return url


@pytest.mark.slow
def test_mlflow_run_tune_entry_point(tracking, tmp_path):
    space = write_space(tmp_path)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PATH": path}
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "tune", "--env-manager", "local"]
    cmd += ["-P", f"space={space}", "-P", "n_trials=2", "-P", f"storage=sqlite:///{tmp_path / 'o.db'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = study_runs("tiny")  # the study is named after the space file
    assert len(runs["study"]) == 1 and len(runs["trial"]) == 2 and len(runs["best"]) == 1
    assert runs["launcher"][0].data.tags[tags.STUDY_RUN_ID] == runs["study"][0].info.run_id
    assert io.StringIO(proc.stdout).read().count("COMPLETE value=") == 2
