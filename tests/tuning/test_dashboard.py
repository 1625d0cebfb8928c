"""`cnnexp dashboard` for real: optuna-dashboard served on a study's storage, its API read over HTTP."""

from __future__ import annotations

import sys

import mlflow
import pytest
import requests
from servers import free_port, running, server_env
from studies import tiny_study

from cnnexp.cli import main


def _api(url: str, path: str) -> dict:
    resp = requests.get(url + path, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_dashboard_lists_the_study_and_its_trials(tracking, tmp_path, kind):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'study.log'}"
    study, parent_id = tiny_study(storage, f"dash-{kind}")
    # SQLite: found through the parent run's recorded storage; journal: given explicitly, as a user may
    how = ["--study", study.study_name] if kind == "sqlite" else ["--storage", storage, "--study", study.study_name]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "cnnexp", "dashboard", *how, "--port", str(port)]
    log = tmp_path / "dashboard.log"
    with running(cmd, env=server_env(tracking), cwd=tmp_path, ready_url=url + "/api/studies", log=log):
        (summary,) = _api(url, "/api/studies")["study_summaries"]
        assert summary["study_name"] == study.study_name
        detail = _api(url, f"/api/studies/{summary['study_id']}")
        assert [t["number"] for t in detail["trials"]] == [0, 1, 2]
        assert {t["state"] for t in detail["trials"]} == {"Complete"}
        values = [t["values"][0] for t in detail["trials"]]
        assert values == pytest.approx([t.value for t in study.trials])
        assert requests.get(url + "/dashboard", timeout=30).status_code == 200  # the page itself
    assert f"open {url}/dashboard/studies/{summary['study_id']}" in log.read_text()
    assert mlflow.get_run(parent_id).data.tags["cnnexp.storage"] == storage


def test_dashboard_refuses_what_it_cannot_open(tracking, tmp_path, capsys):
    assert main(["dashboard", "--study", "nope"]) == 1
    assert "no parent run of study 'nope'" in capsys.readouterr().err
    assert main(["dashboard", "--storage", f"sqlite:///{tmp_path / 'missing.db'}"]) == 2
    assert "missing.db does not exist" in capsys.readouterr().err and not (tmp_path / "missing.db").exists()
    tiny_study(f"journal:{tmp_path / 'j.log'}", "real", n_trials=1)
    assert main(["dashboard", "--storage", f"journal:{tmp_path / 'j.log'}", "--study", "other"]) == 2
    assert "holds no study 'other' (studies: real)" in capsys.readouterr().err
    assert main(["dashboard"]) == 2
    assert "give --study NAME" in capsys.readouterr().err
