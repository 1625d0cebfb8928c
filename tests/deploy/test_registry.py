"""Promotion: first -> champion, better on evidence -> moves, worse or noise -> refused, --force, idempotent,
studies, races, the latency gate, the record of each decision, rollback of a failed promotion, and `cnnexp app`
following the champion alias."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import requests
import uvicorn
from servers import free_port

from cnnexp.cli import main
from cnnexp.config import build_config
from cnnexp.deploy import evidence, registry
from cnnexp.deploy.candidates import held_out_set
from cnnexp.deploy.registry import CHALLENGER, CHAMPION, PROMOTIONS_EXPERIMENT, promote
from cnnexp.deploy.webapp import create_app
from cnnexp.errors import PromotionError
from cnnexp.serving.pyfunc import encode_image
from cnnexp.serving.requests import IMAGE_COLUMN
from cnnexp.tracking import tags
from cnnexp.training.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, str]:
    """Three digits runs of clearly different quality on the same test set, one that differs from "strong" only
    by training noise (batch size 48, not 64), plus one on another test set."""
    from conftest import TINY, tracking_store

    root = tmp_path_factory.mktemp("registry")
    with tracking_store(root) as uri:
        variants = {
            "weak": {"data.train_subset": 60, "train.epochs": 1},
            "mid": {"data.train_subset": 400, "train.epochs": 2},
            "strong": {"train.epochs": 4},
            "strong_noise": {"train.epochs": 4, "train.batch_size": 48},
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
    ev = better.evidence
    assert (
        ev.challenger
        == better.challenger_scores["test_accuracy"]
        > ev.champion
        == better.champion_scores["test_accuracy"]
    )
    assert ev.p_value < 0.05 and ev.ci_low > 0 and ev.only_challenger_right > ev.only_champion_right
    assert _alias_run(client, name, CHAMPION) == runs["strong"]
    got = client.get_model_version(name, better.version).tags
    assert got[tags.WON_ON] == "test_accuracy" and got[tags.COMPARED_WITH] == f"v{first.version}"
    assert float(got[tags.P_VALUE]) == pytest.approx(ev.p_value, rel=1e-5)
    assert int(got[tags.ONLY_CHALLENGER_RIGHT]) == ev.only_challenger_right
    assert float(got[tags.champion_metric_tag("test_accuracy")]) == pytest.approx(ev.champion, abs=1e-6)

    # The decision, both scores and the evidence are logged as a run that ended FINISHED.
    last = client.get_run(better.promotion_run)
    assert last.info.status == "FINISHED" and last.data.tags[tags.DECISION] == "promoted"
    assert last.data.metrics["champion_test_accuracy"] == pytest.approx(better.champion_scores["test_accuracy"])
    assert last.data.metrics["p_value"] == pytest.approx(ev.p_value)
    assert last.data.params["gate.alpha"] == "0.05" and last.data.params["gate.max_latency_ms"] == "none"


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
    assert "not better" in champion.tags[tags.DECISION_REASON] and tags.WON_ON not in champion.tags


def _registry_state(client, name) -> tuple:
    versions = client.search_model_versions(f"name = '{name}'")
    listed = sorted((v.version, v.run_id, v.status, sorted(v.tags.items()), v.description) for v in versions)
    return listed, client.get_registered_model(name).aliases


def test_other_test_set_refused_unless_forced(store, runs):
    name = "apples"
    promote(name, run_id=runs["mid"])
    promote(name, run_id=runs["weak"])  # refused: a challenger alias to keep
    before = _registry_state(store, name)
    with pytest.raises(PromotionError, match="another test set"):
        promote(name, run_id=runs["other_test_set"])
    # Refused before registering: no new version, the challenger alias untouched.
    assert _registry_state(store, name) == before
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
    # mid is no better than weak beyond noise; strong beats both, whichever order the two ran in.
    assert champion.status == "READY" and champion.run_id == runs["strong"]
    assert champion.tags[tags.DECISION] == "promoted"
    assert len(client.search_model_versions(f"name = '{name}'")) == 3


@pytest.mark.slow  # a second Python with TensorFlow under `mlflow run` (about a minute on 2 busy cores)
def test_mlflow_run_promote_entry_point(store, runs, tmp_path):
    """`mlflow run . -e promote`: the decision is logged in cnnexp-promotions, as by `cnnexp promote`;
    the run `mlflow run` created points at it."""
    root = Path(__file__).resolve().parents[2]
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
    assert run.data.params["gate.alpha"] == "0.05"


def test_noise_is_not_promoted_and_the_record_says_why(store, runs):
    """Same data, model and epochs, another batch size: a difference the size of seed noise stays with the champion."""
    client, name = store, "noise"
    champion = promote(name, run_id=runs["strong"])
    noisy = promote(name, run_id=runs["strong_noise"])
    ev = noisy.evidence
    assert noisy.outcome == "refused" and _alias_run(client, name, CHAMPION) == runs["strong"]
    assert ev.method == "exact McNemar" and ev.p_value >= 0.05 and ev.ci_low < 0 < ev.ci_high
    assert ev.only_challenger_right + ev.only_champion_right > 0  # they do disagree, on a few images
    assert "beyond noise" in noisy.reason or "not better:" in noisy.reason
    got = client.get_model_version(name, noisy.version).tags
    assert got[tags.DECISION] == "refused" and got[tags.DECISION_REASON] == noisy.reason
    assert got[tags.COMPARED_WITH] == f"v{champion.version}" and got[tags.EVIDENCE_METHOD] == "exact McNemar"
    assert int(got[tags.ONLY_CHAMPION_RIGHT]) == ev.only_champion_right
    low, high = (float(x) for x in got[tags.DIFFERENCE_CI].strip("[]").split(","))
    assert low == pytest.approx(ev.ci_low, abs=1e-6) and high == pytest.approx(ev.ci_high, abs=1e-6)
    assert float(got[tags.DIFFERENCE]) == pytest.approx(ev.challenger - ev.champion, abs=1e-6)

    # The promotion run: the evidence in promotion.json, and the regression report.
    record = mlflow.artifacts.load_dict(f"runs:/{noisy.promotion_run}/promotion.json")
    assert record["outcome"] == "refused" and record["evidence"]["p_value"] == pytest.approx(ev.p_value)
    assert record["evidence"]["champion_accuracy"] == pytest.approx(ev.champion_accuracy)
    logged = {a.path for a in client.list_artifacts(noisy.promotion_run, "regressions")}
    assert logged == {
        f"regressions/{f}" for f in (evidence.REGRESSIONS_CSV, evidence.REGRESSIONS_PNG, evidence.PER_CLASS_CSV)
    }
    folder = Path(mlflow.artifacts.download_artifacts(run_id=noisy.promotion_run, artifact_path="regressions"))
    lost = pd.read_csv(folder / evidence.REGRESSIONS_CSV)
    assert len(lost) == ev.only_champion_right and (lost["true"].astype(str) != lost["predicted"].astype(str)).all()
    per_class = pd.read_csv(folder / evidence.PER_CLASS_CSV)
    assert len(per_class) == 10 and per_class["support"].sum() == ev.n_images
    assert (folder / evidence.REGRESSIONS_PNG).stat().st_size > 1000


def test_min_margin_and_alpha_from_the_command_line(store, runs, capsys):
    client, name = store, "margin"
    promote(name, run_id=runs["mid"])
    # strong is far better than mid (p < 1e-20), but not by 90 points.
    assert main(["promote", "--run", runs["strong"], "--model-name", name, "--min-margin", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "REFUSED" in out and "minimum margin 0.9" in out and _alias_run(client, name, CHAMPION) == runs["mid"]
    assert main(["promote", "--run", runs["strong"], "--model-name", name, "--alpha", "0.01"]) == 0
    assert "PROMOTED" in capsys.readouterr().out and _alias_run(client, name, CHAMPION) == runs["strong"]
    assert main(["promote", "--run", runs["weak"], "--model-name", name, "--alpha", "2"]) == 1
    assert "alpha 2 must be between 0 and 1" in capsys.readouterr().err


def test_latency_gate_refuses_a_slow_challenger(store, runs, monkeypatch, capsys):
    client, name = store, "latency"
    promote(name, run_id=runs["mid"])
    assert main(["promote", "--run", runs["strong"], "--model-name", name, "--max-latency-ms", "0.0001"]) == 0
    assert "REFUSED" in capsys.readouterr().out and _alias_run(client, name, CHAMPION) == runs["mid"]
    refused = client.get_model_version_by_alias(name, CHALLENGER)
    assert (
        "above the 0.0001 ms limit" in refused.tags[tags.DECISION_REASON] and float(refused.tags[tags.LATENCY_MS]) > 0
    )
    # Within the budget (the timing replaced: tests never depend on this machine's speed), it wins on evidence.
    monkeypatch.setattr(registry, "predict_latency_ms", lambda pyfunc, image: 3.0)
    decision = promote(name, run_id=runs["strong"], max_latency_ms=5.0)
    assert decision.outcome == "promoted" and decision.latency_ms == 3.0


def test_failed_promotion_rolls_back(store, runs, monkeypatch):
    """A promotion failing after registering (here: scoring breaks) leaves versions and aliases as it found them."""
    client, name = store, "rollback"
    promote(name, run_id=runs["mid"])
    promote(name, run_id=runs["weak"])  # refused: weak's version is challenger
    before = _registry_state(client, name)

    def broken(*args, **kwargs):
        raise PromotionError("scoring broke")

    monkeypatch.setattr(registry, "_score", broken)
    with pytest.raises(PromotionError, match="scoring broke"):
        promote(name, run_id=runs["strong"])
    assert _registry_state(client, name) == before
    with pytest.raises(PromotionError, match="scoring broke"):
        promote("rollback-new", run_id=runs["strong"])  # the registered model it created goes too
    assert client.search_registered_models("name = 'rollback-new'") == []
    failed = mlflow.search_runs(
        experiment_names=["cnnexp-promotions"], filter_string="attributes.run_name LIKE 'promote-rollback%'"
    )
    failed = failed[failed["status"] == "FAILED"]
    assert len(failed) == 2 and (failed["tags.cnnexp.failure_reason"] == "PromotionError: scoring broke").all()


def test_reused_version_loses_stale_decision_tags(store, runs):
    client, name = store, "stale"
    first = promote(name, run_id=runs["mid"])
    assert client.get_model_version(name, first.version).tags[tags.WON_ON] == "test_accuracy"
    promote(name, run_id=runs["strong"])
    forced = promote(name, run_id=runs["mid"], force=True)  # mid's version reused, now forced over strong
    assert forced.version == first.version and forced.outcome == "forced"
    got = client.get_model_version(name, first.version).tags
    assert got[tags.DECISION] == "forced" and got[tags.FORCED] == "true" and tags.WON_ON not in got
    assert got[tags.COMPARED_WITH] == f"v{int(first.version) + 1}" and tags.P_VALUE in got
    assert {k for k in got if tags.is_decision_tag(k)} == {
        tags.DECISION, tags.DECISION_REASON, tags.COMPARED_METRIC, tags.COMPARED_WITH, tags.FORCED,
        tags.EVIDENCE_METHOD, tags.DIFFERENCE, tags.DIFFERENCE_CI, tags.P_VALUE, tags.ALPHA, tags.MIN_MARGIN,
        tags.ONLY_CHALLENGER_RIGHT, tags.ONLY_CHAMPION_RIGHT, tags.LATENCY_MS,
        *(tags.champion_metric_tag(m) for m in registry.METRICS),
    }  # fmt: skip


def test_app_follows_the_champion_alias(store, runs, capsys):
    """`cnnexp app --follow-alias`: once promotion moves the alias, /health and the answers are the new version's."""
    name = "followed"
    v1 = promote(name, run_id=runs["mid"]).version
    images = [encode_image(x) for x in held_out_set(store.get_run(runs["mid"])).x[:20]]
    frame = pd.DataFrame({IMAGE_COLUMN: images})
    with _app(create_app(f"models:/{name}@champion", follow_interval=0.05)) as url:
        assert requests.get(url + "/health", timeout=10).json()["version"] == str(v1)
        v2 = promote(name, run_id=runs["strong"]).version
        _wait(lambda: requests.get(url + "/health", timeout=10).json()["version"] == str(v2))
        got = [requests.post(url + "/api/predict", data=base64.b64decode(b), timeout=30).json() for b in images]
    want = {v: mlflow.pyfunc.load_model(f"models:/{name}/{v}").predict(frame)["class_index"].tolist() for v in (v1, v2)}
    assert want[v1] != want[v2]  # the two versions answer differently: the answers tell which one serves
    assert [g["class_index"] for g in got] == want[v2]
    assert main(["app", "--model", f"runs:/{runs['mid']}/model", "--follow-alias"]) == 1
    assert "models:/NAME@ALIAS" in capsys.readouterr().err


@contextmanager
def _app(app) -> Iterator[str]:
    """The app served by uvicorn in this process (its lifespan runs, as under `cnnexp app`)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: server.started)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _wait(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


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
    assert capsys.readouterr().err.strip().splitlines()[-1] == "cnnexp: terminated (SIGTERM)"
    (run,) = mlflow.search_runs(
        experiment_names=[PROMOTIONS_EXPERIMENT],
        filter_string="attributes.run_name = 'promote-term'",
        output_format="list",
    )
    assert run.info.status == "KILLED" and run.data.tags[tags.FAILURE_REASON] == "interrupted (SIGTERM)"
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI put the previous handler back
