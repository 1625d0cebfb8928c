"""The registered champion served by the real `mlflow models serve`, predicted by `mlflow models predict`,
and packaged by `mlflow models generate-dockerfile`."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image
from servers import server_env

from cnnexp.models.cnn import build_model
from cnnexp.serving import pyfunc as image_model


def _png(image: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _digit(champion_store, i: int) -> np.ndarray:
    return champion_store["x_test"][i][..., 0]  # 8x8 uint8


def _invoke(url: str, payload) -> requests.Response:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return requests.post(url + "/invocations", data=data, headers={"Content-Type": "application/json"}, timeout=60)


def _assert_same_as_in_process(served: list[dict], champion_pyfunc, frame: pd.DataFrame) -> None:
    """The server's answer is the in-process pyfunc's on the same rows: class, label, probabilities."""
    local = champion_pyfunc.predict(frame)
    assert [p["class_index"] for p in served] == local["class_index"].tolist()
    assert [p["label"] for p in served] == local["label"].tolist()
    for p, probs in zip(served, local["probabilities"], strict=True):
        assert p["probabilities"] == pytest.approx(list(probs), abs=1e-6)


def test_png_files_of_several_sizes_and_colour_modes(scoring_server, champion_store, champion_pyfunc):
    digit = Image.fromarray(_digit(champion_store, 0))
    variants = [
        digit,  # 8x8 grayscale, the model's own size
        digit.resize((64, 64)).convert("RGB"),
        digit.resize((30, 17)).convert("RGBA"),
        digit.resize((100, 100)).convert("P"),
    ]
    rows = [[_png(v)] for v in variants] + [[_png(digit.resize((40, 40)).convert("RGB"), "JPEG")]]
    resp = _invoke(scoring_server, {"dataframe_split": {"columns": ["image"], "data": rows}})
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    assert len(predictions) == 5
    for p in predictions:
        assert p["label"] == str(p["class_index"]) and len(p["probabilities"]) == 10
        assert sum(p["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    # The 8x8 file classifies exactly as the Keras model did in training; every file as in-process.
    assert predictions[0]["class_index"] == champion_store["expected"][0]
    _assert_same_as_in_process(predictions, champion_pyfunc, pd.DataFrame(rows, columns=["image"]))


def test_pixel_arrays_and_mixed_rows(scoring_server, champion_store, champion_pyfunc):
    digits = [_digit(champion_store, i) for i in range(4)]
    records = [
        {"pixels": digits[0].tolist()},  # 8x8 grayscale
        {"pixels": digits[1][..., None].tolist()},  # 8x8x1
        {"pixels": np.repeat(digits[2][..., None], 3, axis=2).tolist()},  # 8x8 RGB
        {"image": _png(Image.fromarray(digits[3]))},
    ]
    resp = _invoke(scoring_server, {"dataframe_records": records})
    assert resp.status_code == 200, resp.text
    got = [p["class_index"] for p in resp.json()["predictions"]]
    assert got[:2] == list(champion_store["expected"][:2]) and got[3] == champion_store["expected"][3]
    _assert_same_as_in_process(resp.json()["predictions"], champion_pyfunc, pd.DataFrame.from_records(records))
    # A larger RGBA array of the same digit is resized like an image file and still classified.
    big = np.asarray(Image.fromarray(digits[0]).resize((24, 24)).convert("RGBA")).tolist()
    resp = _invoke(scoring_server, {"dataframe_split": {"columns": ["pixels"], "data": [[big]]}})
    assert resp.status_code == 200 and len(resp.json()["predictions"]) == 1
    _assert_same_as_in_process(resp.json()["predictions"], champion_pyfunc, pd.DataFrame({"pixels": [big]}))


BAD_REQUESTS = {
    "not an image": ({"dataframe_split": {"columns": ["image"], "data": [["aGVsbG8gd29ybGQ="]]}}, "not a PNG or JPEG"),
    "not base64": ({"dataframe_split": {"columns": ["image"], "data": [["%%%"]]}}, "not valid base64"),
    "truncated png": ("TRUNCATED", "not a readable PNG or JPEG"),
    "empty request": ({"dataframe_split": {"columns": ["image"], "data": []}}, "holds no rows"),
    "1-d array": ({"dataframe_records": [{"pixels": [1, 2, 3]}]}, "has shape (3,)"),
    "5 channels": ({"dataframe_records": [{"pixels": [[[1, 2, 3, 4, 5]]]}]}, "has shape (1, 1, 5)"),
    "ragged array": ({"dataframe_records": [{"pixels": [[1, 2], [3]]}]}, "ragged"),
    "out of range": ({"dataframe_records": [{"pixels": [[0, 256]]}]}, "from 0 to 255"),
    "text pixels": ({"dataframe_records": [{"pixels": [["a", "b"]]}]}, "only numbers"),
    "number as image": ({"dataframe_records": [{"image": 5}]}, "must be base64 text"),
    "text as pixels": ({"dataframe_records": [{"pixels": "abc"}]}, "only numbers"),
    "no known column": ({"dataframe_records": [{"picture": "x"}]}, "request has neither"),
    "both in a row": ({"dataframe_records": [{"image": "eA==", "pixels": [[1]]}]}, "row 0: fill exactly one"),
    "second row bad": ({"dataframe_records": [{"pixels": [[1]]}, {"pixels": [1]}]}, "row 1:"),
    "not json": ("{not json", "valid JSON"),
    "no rows key": ({"rows": []}, "dataframe_split"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_a_4xx_with_a_message(scoring_server, champion_store, case):
    payload, message = BAD_REQUESTS[case]
    if payload == "TRUNCATED":
        raw = base64.b64decode(_png(Image.fromarray(_digit(champion_store, 0)).resize((64, 64))))
        payload = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(raw[:60]).decode()]]}}
    resp = _invoke(scoring_server, payload)
    assert 400 <= resp.status_code < 500, resp.text
    body = resp.json()
    assert message in body["message"]
    assert "stack_trace" not in body and "Traceback" not in body["message"]


def test_server_alive_after_bad_requests(scoring_server, champion_store):
    for payload, _ in BAD_REQUESTS.values():
        if payload != "TRUNCATED":
            _invoke(scoring_server, payload)
    wrong_type = requests.post(scoring_server + "/invocations", data="x", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    assert requests.get(scoring_server + "/ping", timeout=10).status_code == 200
    resp = _invoke(scoring_server, {"dataframe_records": [{"pixels": _digit(champion_store, 0).tolist()}]})
    assert resp.status_code == 200 and resp.json()["predictions"][0]["class_index"] == champion_store["expected"][0]


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_mlflow_models_predict_on_a_file(champion_store, champion_pyfunc, tmp_path):
    image = tmp_path / "digit.png"
    Image.fromarray(_digit(champion_store, 1)).resize((32, 32)).save(image)
    request = tmp_path / "request.json"
    encoded = base64.b64encode(image.read_bytes()).decode()
    request.write_text(json.dumps({"dataframe_split": {"columns": ["image"], "data": [[encoded]]}}))
    out = tmp_path / "out.json"
    cmd = [
        sys.executable, "-m", "mlflow", "models", "predict", "-m", champion_store["model_uri"],
        "-i", str(request), "-t", "json", "-o", str(out), "--env-manager", "local",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=server_env(champion_store["uri"]), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = pd.DataFrame(json.loads(out.read_text())["predictions"])
    assert list(predictions.columns) == ["label", "class_index", "probabilities"]
    assert len(predictions) == 1
    _assert_same_as_in_process(predictions.to_dict("records"), champion_pyfunc, pd.DataFrame({"image": [encoded]}))


def test_generate_dockerfile_for_the_champion(champion_store, tmp_path):
    out = tmp_path / "docker"
    cmd = [
        sys.executable, "-m", "mlflow", "models", "generate-dockerfile",
        "-m", champion_store["model_uri"], "-d", str(out), "--env-manager", "local",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=server_env(champion_store["uri"]), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dockerfile = (out / "Dockerfile").read_text()
    assert "FROM " in dockerfile and "ENTRYPOINT" in dockerfile
    # The model itself is copied into the build context, with its signature.
    mlmodels = list(out.rglob("MLmodel"))
    assert mlmodels and "signature" in mlmodels[0].read_text()
    # Every requirement is installable from a package index: cnnexp's own code travels with the model.
    requirements = (mlmodels[0].parent / "requirements.txt").read_text().split()
    names = {r.split("==")[0] for r in requirements}
    assert {"mlflow", "tensorflow", "keras", "pillow"} <= names and "cnnexp" not in names
    assert (mlmodels[0].parent / "code" / "cnnexp" / "serving" / "requests.py").is_file()


def test_in_process_predict_runs_the_compiled_graph_in_chunks(tiny_config, monkeypatch):
    """predict_on_batch, not model.predict (a tf.data pipeline per call: ~100 ms a request), in bounded
    chunks, with the same probabilities."""
    model = build_model(tiny_config.model, (8, 8, 1), 10)
    pixels = np.random.default_rng(0).uniform(0, 255, (7, 8, 8, 1)).astype(np.float32)
    expected = model.predict(pixels, verbose=0)

    class Spy:  # no `predict` attribute: using it would fail
        sizes: list[int] = []

        def predict_on_batch(self, x):
            self.sizes.append(len(x))
            return model.predict_on_batch(x)

    classifier = image_model.ImageClassifier()
    classifier.model, classifier.class_names, classifier.input_shape = Spy(), [str(i) for i in range(10)], (8, 8, 1)
    monkeypatch.setattr(image_model, "PREDICT_CHUNK", 3)
    out = classifier.predict_pixels(pixels)
    assert classifier.model.sizes == [3, 3, 1]
    assert np.allclose(np.stack(out["probabilities"]), expected, atol=1e-5)
    assert out["class_index"].tolist() == expected.argmax(axis=1).tolist()
