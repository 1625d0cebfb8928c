"""Promotion: first -> champion, better -> moves, worse -> refused, --force, idempotent, studies, races."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import mlflow
import pytest

from cnnexp.cli import main
from cnnexp.config import build_config
from cnnexp.deploy.registry import CHALLENGER, CHAMPION, PROMOTIONS_EXPERIMENT, promote
from cnnexp.errors import PromotionError
from cnnexp.tracking import tags
from cnnexp.training.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    """Three digits runs of clearly different quality on the same test set, plus one on another test set."""
    from conftest import TINY, tracking_store

    root = tmp_path_factory.mktemp("registry")
    with tracking_store(root) as uri:
        variants = {
            "weak": {"data.train_subset": 60, "train.epochs": 1},
            "mid": {"data.train_subset": 400, "train.epochs": 2},
            "strong": {"train.epochs": 4},
            "other_test_set": {"train.epochs": 1, "train.seed": 7},  # seed 7 carves another test set
        }
        ids = {k: train(build_config(overrides={**TINY, **v})).run_id for k, v in variants.items()}
    ids["uri"] = uri
    return ids


@pytest.fixture
def store(runs, tmp_path):
    from conftest import tracking_store

    with tracking_store(tmp_path, runs["uri"]):
        yield mlflow.MlflowClient()


def _alias_run(client, name, alias):
    return client.get_model_version_by_alias(name, alias).run_id


def test_first_better_worse(store, runs, capsys):
    client, name = store, "seq"
    first = promote(name, run_id=runs["mid"])
    assert first.outcome == "first" and _alias_run(client, name, CHAMPION) == runs["mid"]
    got = client.get_model_version(name, first.version).tags
    assert got[tags.SOURCE_RUN] == runs["mid"] and got[tags.DATASET] == "digits"
    assert got[tags.SPLIT_HASH] == client.get_run(runs["mid"]).data.tags[tags.SPLIT_HASH]
    assert float(got["cnnexp.test_accuracy"]) == pytest.approx(first.challenger_scores["test_accuracy"], abs=1e-6)
    assert got[tags.WON_ON] == "test_accuracy"

    # A worse model is registered and aliased challenger, but the champion stays.
    assert main(["promote", "--run", runs["weak"], "--model-name", name]) == 0
    out = capsys.readouterr().out
    assert "REFUSED" in out and "challenger" in out and "champion" in out  # both scores printed
    assert _alias_run(client, name, CHAMPION) == runs["mid"]
    assert _alias_run(client, name, CHALLENGER) == runs["weak"]
    weak_version = client.get_model_version_by_alias(name, CHALLENGER)
    assert weak_version.tags[tags.DECISION] == "refused" and tags.WON_ON not in weak_version.tags
    assert "refused" in weak_version.description and runs["weak"] in weak_version.description

    better = promote(name, run_id=runs["strong"])
    assert better.outcome == "promoted" and better.champion_version == first.version
    assert better.challenger_scores["test_accuracy"] > better.champion_scores["test_accuracy"]
    assert _alias_run(client, name, CHAMPION) == runs["strong"]
    assert client.get_model_version(name, better.version).tags[tags.WON_ON] == "test_accuracy"

    # The decision and both scores are logged as a run that ended FINISHED.
    logged = mlflow.search_runs(experiment_names=["cnnexp-promotions"], output_format="list")
    last = max(logged, key=lambda r: r.info.start_time)
    assert last.info.status == "FINISHED" and last.data.tags[tags.DECISION] == "promoted"
    assert last.data.metrics["champion_test_accuracy"] == pytest.approx(better.champion_scores["test_accuracy"])


def test_idempotent(store, runs):
    client, name = store, "idem"
    promote(name, run_id=runs["mid"])
    n_runs = len(mlflow.search_runs(experiment_names=["cnnexp-promotions"], output_format="list"))
    again = promote(name, run_id=runs["mid"])
    assert again.outcome == "unchanged"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert len(mlflow.search_runs(experiment_names=["cnnexp-promotions"], output_format="list")) == n_runs
    # A refused run promoted twice reuses its version instead of registering a duplicate.
    assert promote(name, run_id=runs["weak"]).outcome == "refused"
    assert promote(name, run_id=runs["weak"]).outcome == "refused"
    assert len(client.search_model_versions(f"name = '{name}'")) == 2
    assert _alias_run(client, name, CHAMPION) == runs["mid"]


def test_force_moves_champion_with_reason(store, runs):
    client, name = store, "forced"
    promote(name, run_id=runs["strong"])
    assert main(["promote", "--run", runs["weak"], "--model-name", name, "--force"]) == 0
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert champion.run_id == runs["weak"]
    assert champion.tags[tags.FORCED] == "true" and champion.tags[tags.DECISION] == "forced"
    assert "not better" in champion.tags[tags.DECISION_REASON]


def test_other_test_set_refused_unless_forced(store, runs):
    name = "apples"
    promote(name, run_id=runs["mid"])
    with pytest.raises(PromotionError, match="another test set"):
        promote(name, run_id=runs["other_test_set"])
    assert _alias_run(store, name, CHAMPION) == runs["mid"]
    assert promote(name, run_id=runs["other_test_set"], force=True).outcome == "forced"
    assert _alias_run(store, name, CHAMPION) == runs["other_test_set"]


def test_study_resolves_to_its_retrained_best_run(store, runs, capsys):
    store.set_tag(runs["mid"], tags.STUDY, "s1")  # a trial: same study, not the best
    store.set_tag(runs["strong"], tags.STUDY, "s1")
    store.set_tag(runs["strong"], tags.ROLE, "best")
    decision = promote("by-study", study="s1")
    assert decision.run_id == runs["strong"] and decision.outcome == "first"
    assert main(["promote", "--study", "nope", "--model-name", "by-study"]) == 1
    assert "no run tagged cnnexp.study='nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--run", "0" * 32], "not found in the tracking store"),
        ([], "exactly one of a run id or a study"),
        (["--run", "x", "--study", "y"], "exactly one of a run id or a study"),
        (["--run", "x", "--metric", "speed"], "metric 'speed' is not one of"),
    ],
)
def test_bad_promotions_fail_clearly(store, argv, message, capsys):
    assert main(["promote", "--model-name", "bad", *argv]) == 1
    assert message in capsys.readouterr().err
    assert store.search_model_versions("name = 'bad'") == []


def test_racing_promotions_leave_champion_on_one_valid_version(store, runs):
    client, name = store, "race"
    promote(name, run_id=runs["weak"])
    errors: list[BaseException] = []

    def go(run_id: str) -> None:
        try:
            promote(name, run_id=run_id)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(runs[k],)) for k in ("mid", "strong")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert champion.status == "READY" and champion.run_id in (runs["mid"], runs["strong"])
    assert champion.tags[tags.DECISION] == "promoted"
    assert len(client.search_model_versions(f"name = '{name}'")) == 3


@pytest.mark.slow  # a second Python with TensorFlow under `mlflow run` (about a minute on 2 busy cores)
def test_mlflow_run_promote_entry_point(store, runs, tmp_path):
    """`mlflow run . -e promote`: the decision is logged in cnnexp-promotions, as by `cnnexp promote`;
    the run `mlflow run` created points at it."""
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")}
    env.update({"MLFLOW_TRACKING_URI": runs["uri"], "PATH": path})
    cmd = [
        sys.executable, "-m", "mlflow", "run", str(root), "-e", "promote", "--env-manager", "local",
        "--experiment-name", "mlproject-promotions", "-P", "model_name=mlp", "-P", f"run_id={runs['mid']}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mlp version 1" in proc.stdout and "FIRST" in proc.stdout
    (launcher,) = mlflow.search_runs(experiment_names=["mlproject-promotions"], output_format="list")
    assert launcher.info.status == "FINISHED" and launcher.data.tags["mlflow.project.entryPoint"] == "promote"
    run = mlflow.get_run(launcher.data.tags[tags.PROMOTION_RUN_ID])
    assert run.info.experiment_id == mlflow.get_experiment_by_name(PROMOTIONS_EXPERIMENT).experiment_id
    assert launcher.data.tags[tags.ROLE] == tags.ROLE_LAUNCHER and tags.DECISION not in launcher.data.tags
    assert run.info.status == "FINISHED" and run.data.tags[tags.DECISION] == "first"
    assert run.data.params["source_run"] == runs["mid"]
    assert store.get_model_version_by_alias("mlp", CHAMPION).run_id == runs["mid"]


def test_sigterm_during_promotion_ends_its_run_killed(store, runs, monkeypatch, capsys):
    """SIGTERM while scoring (as `kill` or a scheduler sends it): the promotion run ends KILLED, exit 143."""
    import signal

    from cnnexp.deploy import registry

    real_score = registry._score

    def terminated_while_scoring(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the CLI: raises at the next Python instruction
        return real_score(*args, **kwargs)

    monkeypatch.setattr(registry, "_score", terminated_while_scoring)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["promote", "--run", runs["mid"], "--model-name", "term"]) == 143
    assert capsys.readouterr().err.strip().endswith("\ncnnexp: terminated (SIGTERM)")
    (run,) = mlflow.search_runs(
        experiment_names=[PROMOTIONS_EXPERIMENT],
        filter_string="attributes.run_name = 'promote-term'",
        output_format="list",
    )
    assert run.info.status == "KILLED" and run.data.tags[tags.FAILURE_REASON] == "interrupted (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI put the previous handler back
