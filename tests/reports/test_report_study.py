"""`cnnexp report --study` on a real (small, model-free) Optuna study recorded the way tuning records it.

The study's parent MLflow run is tagged cnnexp.study=<name>, cnnexp.role=study, cnnexp.storage=<url>
and holds trials.csv (Optuna's trials_dataframe()); the retrained best run is tagged role=best.
"""

import math
import re

import mlflow
import optuna
import pytest

from cnnexp.cli import main
from cnnexp.tracking import tags


def _objective(trial: optuna.Trial) -> float:
    # The learning rate matters most, the optimizer a little, noise not at all: importances must say so.
    lr = trial.suggest_float("train.learning_rate", 1e-4, 1e-1, log=True)
    opt = trial.suggest_categorical("train.optimizer", ["adam", "sgd"])
    trial.suggest_int("model.noise", 0, 9)
    if opt == "sgd" and lr < 3e-4:
        raise optuna.TrialPruned()
    return 1.0 - abs(math.log10(lr) + 2.0) / 3 - (0.02 if opt == "sgd" else 0.0)


def _record_study(tmp_path, name: str, storage: str | None = None) -> optuna.Study:
    storage = storage or f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study.optimize(_objective, n_trials=20)
    mlflow.set_experiment("tuning")
    run_tags = {tags.STUDY: name, tags.ROLE: "study", tags.STORAGE: storage}
    with mlflow.start_run(run_name=f"study-{name}", tags=run_tags):
        mlflow.log_text(study.trials_dataframe().to_csv(index=False), "trials.csv")
    with mlflow.start_run(run_name=f"best-{name}", tags={tags.STUDY: name, tags.ROLE: "best"}):
        mlflow.log_metrics({"test_accuracy": 0.9123, "best_val_accuracy": 0.9200})
    return study


def _study_run(name):
    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`cnnexp.study` = '{name}' and tags.`cnnexp.role` = 'study'",
        output_format="list",
    )[0]


def test_study_report(tracking, tmp_path, capsys):
    study = _record_study(tmp_path, "lr-search")
    out = tmp_path / "study-report"
    assert main(["report", "--study", "lr-search", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "loaded from its Optuna storage" in text and "direction maximize" in text
    # best trials table: first row is Optuna's own best trial
    best_trials = text.split("## Best trials")[1]
    first_row = [c.strip() for c in best_trials.split("\n|")[3].split("|")]
    assert first_row[0] == str(study.best_trial.number) and float(first_row[1]) == pytest.approx(study.best_value, 1e-4)
    # importances: learning rate first, as Optuna's own evaluator ranks it
    importances = optuna.importance.get_param_importances(study)
    assert list(importances)[0] == "train.learning_rate"
    assert re.search(r"\| train\.learning_rate\s+\|\s+[\d.]+ \|", text.split("## Parameter importances")[1])
    assert "`train.learning_rate` explains" in text
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    assert "20 trials: " in text and (f"{pruned} pruned" in text if pruned else True)
    assert "test_accuracy 0.9123" in text  # the retrained best run
    for png in ("optimization_history.png", "param_importances.png"):
        assert (out / "figures" / png).stat().st_size > 5000
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2
    files = [f.path for f in mlflow.MlflowClient().list_artifacts(_study_run("lr-search").info.run_id, "report")]
    assert "report/report.md" in files and "report/report.html" in files
    assert "report.md" in capsys.readouterr().out


def test_study_report_without_storage_rebuilds_from_trials_csv(tracking, tmp_path):
    study = _record_study(tmp_path, "moved", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    # The storage moved away (another machine): the report falls back to trials.csv.
    (tmp_path / "optuna.db").rename(tmp_path / "elsewhere.db")
    (tmp_path / "gone").mkdir()
    client = mlflow.MlflowClient()
    client.set_tag(_study_run("moved").info.run_id, tags.STORAGE, f"sqlite:///{tmp_path / 'gone' / 'x' / 'o.db'}")
    out = tmp_path / "r"
    assert main(["report", "--study", "moved", "--out", str(out), "--no-log"]) == 0
    text = (out / "report.md").read_text()
    assert "rebuilt from `trials.csv` (storage unreachable; direction maximize)" in text
    first_row = text.split("## Best trials")[1].split("\n\n")[1].splitlines()[2]
    cells = [c.strip() for c in first_row.strip("|").split("|")]
    assert cells[0] == str(study.best_trial.number) and float(cells[1]) == pytest.approx(study.best_value, abs=1e-3)
    assert "`train.learning_rate` explains" in text


def test_a_study_rebuilt_from_its_record_has_the_same_importances(tracking, tmp_path):
    from cnnexp.reports.study import importances, load_study, load_trials, study_from_trials
    from cnnexp.tuning.artifacts import log_report

    _record_study(tmp_path, "same")
    run = _study_run("same")
    log_report(run.info.run_id, optuna.load_study(study_name="same", storage=f"sqlite:///{tmp_path / 'optuna.db'}"))
    trials = load_trials(run.info.run_id)
    loaded, note = load_study("same", run, trials)
    assert note.startswith("loaded from its Optuna storage")
    before = importances(loaded)
    assert len(before) == 3

    (tmp_path / "optuna.db").unlink()  # storage unreachable: rebuilt with the recorded distributions
    rebuilt, note = load_study("same", run, trials)
    assert note.startswith("rebuilt from `trials.csv` and `distributions.json`")
    lr = rebuilt.best_trial.distributions["train.learning_rate"]
    assert lr.log and (lr.low, lr.high) == (1e-4, 1e-1)  # the log scale and bounds, not the observed values
    after = importances(rebuilt)
    assert list(after) == list(before) and list(after.values()) == pytest.approx(list(before.values()))
    # what the rebuild gave before distributions were recorded: another study, other importances
    assert list(importances(study_from_trials(trials, "same", "maximize")).values()) != pytest.approx(
        list(before.values())
    )
