import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from cnnexp.cli import main
from cnnexp.config import TrainConfig
from cnnexp.tracking import tags

ROOT = Path(__file__).resolve().parents[1]


def _tiny_yaml(path: Path, overrides: dict) -> Path:
    doc: dict = {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(doc))
    return path


def test_train_command(tracking, tiny_overrides, tmp_path, capsys):
    config = _tiny_yaml(tmp_path / "tiny.yaml", tiny_overrides)
    code = main(["train", "--config", str(config), "--epochs", "1", "--set", "model.dropout=0.1", "--seed", "7"])
    out = capsys.readouterr().out
    assert code == 0
    run = mlflow.search_runs(experiment_names=["tests"], output_format="list")[0]
    assert run.info.run_id in out and "test_accuracy" in out
    assert run.data.params["train.epochs"] == "1" and run.data.params["model.dropout"] == "0.1"
    assert run.data.tags[tags.SEED] == "7"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--learning-rate", "-1"], "train.learning_rate=-1.0 must be positive"),
        (["--dataset", "imagenet"], "data.dataset='imagenet' is unknown"),
        (["--set", "model.nope=1"], "unknown key 'model.nope'"),
        (["--set", "model.blocks"], "expected KEY=VALUE"),
        (["--val-fraction", "0.6", "--test-fraction", "0.5"], "must be below 1"),
    ],
)
def test_bad_values_fail_fast(tracking, argv, message, capsys):
    assert main(["train", *argv]) == 2
    assert message in capsys.readouterr().err
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_module_entry_point_help():
    out = subprocess.run(
        [sys.executable, "-m", "cnnexp", "train", "--help"], capture_output=True, text=True, check=True
    )
    assert "--learning-rate" in out.stdout and "--set KEY=VALUE" in out.stdout


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_mlflow_run_main_entry_point(tracking, tmp_path, tiny_overrides):
    """`mlflow run . --env-manager local`: the config file wins wherever -P is not given, with per-epoch metrics."""
    overrides = {k: v for k, v in tiny_overrides.items() if k != "experiment_name"}
    assert overrides["train.epochs"] != TrainConfig.epochs  # the file must beat the package default
    config = _tiny_yaml(tmp_path / "tiny.yaml", overrides)
    # The entry point runs `python` from PATH, as in a user's activated environment.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PATH": path}
    cmd = [
        sys.executable, "-m", "mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "proj",
        "-P", "dataset=digits", "-P", "batch_size=32", "-P", f"config={config}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=["proj"], output_format="list")
    assert len(runs) == 1  # autolog and our metrics land in the run `mlflow run` created
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
    # epochs from the file, batch_size from -P; `mlflow run`'s and autolog's params say the same.
    assert run.data.params["train.epochs"] == run.data.params["epochs"] == str(overrides["train.epochs"])
    assert run.data.params["train.batch_size"] == run.data.params["batch_size"] == "32"
    assert 0 <= run.data.metrics["test_accuracy"] <= 1
    # autolog shares the run with `mlflow run`'s own params: its per-epoch metrics must be there
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss")
    assert len(history) == overrides["train.epochs"]


def test_unknown_option_shows_the_subcommands_usage(capsys):
    """`mlflow run -P foo=bar` appends `--foo bar` to `cnnexp train`: its usage must answer, not the top level's."""
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--dataset", "digits", "--foo", "bar"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: cnnexp train") and "cnnexp train: error: unrecognized arguments: --foo bar" in err


def _console_env(tracking: str, **extra: str) -> dict[str, str]:
    """A user's shell: none of the quieting conftest does for the test process itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP_", "MLFLOW_", "CNNEXP_"))}
    return {**env, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": tracking, **extra}


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_train_console_is_quiet(tracking, tiny_overrides, tmp_path):
    """`cnnexp train` as a user runs it: Keras' epoch lines and our summary, none of TF's or MLflow's chatter."""
    config = _tiny_yaml(tmp_path / "tiny.yaml", {**tiny_overrides, "train.epochs": 2})
    env = _console_env(tracking, MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="0.5")
    cmd = [sys.executable, "-m", "cnnexp", "train", "--config", str(config)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    lines = out.splitlines()
    assert not [line for line in lines if line.startswith(("I0000", "E0000", "W0000"))], out
    assert "UserWarning" not in out and "Downloading artifacts" not in out and "absl" not in out, out
    assert len([line for line in lines if re.match(r"\d+/\d+ - .*val_loss", line)]) == 2  # one per epoch
    (run,) = mlflow.search_runs(experiment_names=["tests"], output_format="list")
    assert f"run {run.info.run_id} finished" in out and "test_accuracy" in out
    assert f"mlflow ui --backend-store-uri {tracking}" in out and f"runs:/{run.info.run_id}/model" in out
    # what the console no longer shows still lands in the run
    assert len(run.inputs.dataset_inputs) == 3 and "system/cpu_utilization_percentage" in run.data.metrics
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss")) == 2


def test_verbose_keeps_every_log(monkeypatch, request):
    """Quiet by default (user settings win); -v or CNNEXP_VERBOSE=1 leaves TensorFlow and MLflow as they are."""
    from cnnexp.cli import console

    quiet_vars = ("TF_CPP_MIN_LOG_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_LOGGING_LEVEL")
    for name in (*quiet_vars, console.VERBOSE_ENV):
        monkeypatch.delenv(name, raising=False)
    mlflow_log = logging.getLogger("mlflow")
    request.addfinalizer(lambda level=mlflow_log.level: mlflow_log.setLevel(level))
    mlflow_log.setLevel(logging.INFO)

    assert console.verbose_requested(True) and not console.verbose_requested(False)
    console.configure(verbose=True)
    assert not any(name in os.environ for name in quiet_vars) and mlflow_log.level == logging.INFO
    monkeypatch.setenv(console.VERBOSE_ENV, "1")
    assert console.verbose_requested(False)

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # the user's own choice
    console.configure(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1" and os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
    assert mlflow_log.level == logging.WARNING


APP = ["app", "--model", "models:/m@champion"]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([*APP, "--port", "99999"], "argument --port: '99999' is not allowed: must be at least 1 and at most 65535"),
        ([*APP, "--port", "http"], "argument --port: 'http' is not a whole number"),
        ([*APP, "--max-upload-mb", "0"], "argument --max-upload-mb: '0' is not allowed: must be above 0"),
        (["runs", "--limit", "0"], "argument --limit: '0' is not allowed: must be at least 1"),
    ],
)
def test_bad_option_values_are_refused_when_parsed(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: cnnexp {argv[0]}") and message in err and "Traceback" not in err


def _cnnexp(args: list[str], tracking: str, cwd: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    # Unbuffered (-u): a test can read the epoch lines while the run goes on.
    return subprocess.Popen([sys.executable, "-u", "-m", "cnnexp", *args], cwd=cwd, env=env, text=True, **popen)


TINY_FLAGS = ["--dataset", "digits", "--set", "model.filters=8", "--set", "model.head_units=32"]
TINY_FLAGS += ["--set", "train.precision=float32", "--experiment-name", "tests"]


@pytest.mark.slow  # a second Python with TensorFlow; in-process, TrainingDiverged is a CnnexpError like any other
def test_a_diverged_run_is_one_line_and_failed(tracking, tmp_path):
    args = ["train", *TINY_FLAGS, "--learning-rate", "1e4", "--optimizer", "sgd", "--lr-schedule", "none"]
    proc = _cnnexp(args, tracking, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err + out
    last = err.strip().splitlines()[-1]
    assert last.startswith("cnnexp: training diverged: loss became nan at epoch 1; lower train.learning_rate")
    (run,) = mlflow.search_runs(experiment_names=["tests"], output_format="list")
    assert run.info.status == "FAILED" and "TrainingDiverged" in run.data.tags[tags.FAILURE_REASON]


def test_sigterm_ends_a_training_run_killed(tracking, tmp_path):
    """`kill`, `timeout`, container platforms and job schedulers send SIGTERM: handled like Ctrl-C."""
    # More epochs than it can finish in any test run: it is always mid-training when terminated.
    args = ["train", *TINY_FLAGS, "--epochs", "100000", "--patience", "0", "--lr-schedule", "none"]
    proc = _cnnexp(args, tracking, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    seen = []
    for line in proc.stdout:  # until it is training: its third epoch has begun
        seen.append(line)
        if line.startswith("Epoch 3/"):
            break
    assert proc.poll() is None, "".join(seen)[-3000:]
    proc.terminate()  # SIGTERM
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143 and out.strip().endswith("cnnexp: terminated (SIGTERM)"), out[-3000:]
    (run,) = mlflow.search_runs(experiment_names=["tests"], output_format="list")
    assert run.info.status == "KILLED" and run.data.tags[tags.FAILURE_REASON] == "interrupted (SIGTERM)"
