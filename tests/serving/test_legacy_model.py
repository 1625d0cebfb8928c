"""Models logged by cnnexp 0.1.0 (before the package layout changed) still load and serve.

The fixture is a tiny digits model logged by that release: its models-from-code entry imports
``cnnexp.image_model``, and its code/ folder holds the old package.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from servers import free_port, running, server_env

from cnnexp.serving.pyfunc import encode_image

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def legacy_model(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    with tarfile.open(FIXTURES / "digits_model_0.1.0.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    expected = np.load(FIXTURES / "digits_model_0.1.0_expected.npz")
    return tmp_path / "model", expected["x"], expected["probs"]


def test_loads_in_a_process_that_imported_the_new_cnnexp(legacy_model):
    path, x, probs = legacy_model
    assert "cnnexp.serving.pyfunc" in sys.modules  # the new layout is what `cnnexp` resolves to here
    model = mlflow.pyfunc.load_model(str(path))
    out = model.predict(pd.DataFrame({"image": [encode_image(img) for img in x]}))
    np.testing.assert_allclose(np.stack(out["probabilities"].to_list()), probs, rtol=1e-5, atol=1e-6)
    assert out["class_index"].tolist() == probs.argmax(axis=1).tolist()


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_mlflow_models_serve_predicts_with_it(legacy_model, tmp_path):
    path, x, probs = legacy_model
    port = free_port()
    cmd = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", str(path),
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    env = server_env(f"sqlite:///{tmp_path / 'mlflow.db'}")
    url = f"http://127.0.0.1:{port}"
    with running(cmd, env=env, cwd=tmp_path, ready_url=url + "/ping", log=tmp_path / "serve.log"):
        payload = {"dataframe_split": {"columns": ["image"], "data": [[encode_image(img)] for img in x]}}
        response = requests.post(url + "/invocations", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    np.testing.assert_allclose([r["probabilities"] for r in rows], probs, rtol=1e-5, atol=1e-6)
