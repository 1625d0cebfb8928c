"""`cnnexp app` for real: its JSON endpoint over HTTP and its page in headless Chromium."""

from __future__ import annotations

import base64
import io
import os

import mlflow
import pandas as pd
import pytest
import requests
from conftest import APP_LIMIT_MB as LIMIT_MB
from PIL import Image


def _png_bytes(champion_store, i: int = 0, size=(40, 40), mode="RGB", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(champion_store["x_test"][i][..., 0]).resize(size).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


def test_json_endpoint_classifies_an_upload(app_url, champion_store, champion_pyfunc):
    resp = requests.post(app_url + "/api/predict", data=_png_bytes(champion_store, size=(8, 8), mode="L"), timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["class_index"] == champion_store["expected"][0] and body["label"] == str(body["class_index"])
    probs = [c["probability"] for c in body["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and body["top"][0]["label"] == body["label"]
    # A 40x40 RGB JPEG: the class the in-process pyfunc gives the same file.
    data = _png_bytes(champion_store, 1, fmt="JPEG")
    jpeg = requests.post(app_url + "/api/predict", data=data, timeout=60)
    local = champion_pyfunc.predict(pd.DataFrame({"image": [base64.b64encode(data).decode("ascii")]}))
    assert jpeg.status_code == 200 and jpeg.json()["class_index"] == local["class_index"][0]
    assert jpeg.json()["top"][0]["probability"] == pytest.approx(max(local["probabilities"][0]), abs=1e-4)


def _chunks(data: bytes, size: int = 4096):
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize(
    "case, status, message",
    [
        ("text file", 400, "this file is not a PNG or JPEG image"),
        ("empty", 400, "empty upload"),
        ("truncated png", 400, "not a readable PNG or JPEG image"),
        ("too large", 413, "upload limit"),
        ("too large, chunked", 413, "upload limit"),
        ("multipart form", 415, "--data-binary"),
    ],
)
def test_json_endpoint_errors(app_url, champion_store, case, status, message):
    big = os.urandom(int(LIMIT_MB * 1024 * 1024) + 10)
    kwargs = {
        "text file": {"data": b"hello, not an image"},
        "empty": {"data": b""},
        "truncated png": {"data": _png_bytes(champion_store, size=(64, 64))[:80]},
        "too large": {"data": big},
        "too large, chunked": {"data": _chunks(big)},  # no Content-Length: checked while streaming
        "multipart form": {"files": {"file": ("x.png", _png_bytes(champion_store))}},
    }[case]
    resp = requests.post(app_url + "/api/predict", timeout=60, **kwargs)
    assert resp.status_code == status, resp.text
    assert message in resp.json()["error"] and "Traceback" not in resp.text
    assert requests.get(app_url + "/health", timeout=10).json()["status"] == "ok"


def _upload(driver, url: str, path) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    driver.find_element(By.ID, "file").send_keys(str(path))


def _visible_text(driver, element_id: str, timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    element = WebDriverWait(driver, timeout).until(ec.visibility_of_element_located((By.ID, element_id)))
    return element.text


def test_page_shows_top_classes_for_an_uploaded_image(app_url, browser, champion_store, tmp_path):
    from selenium.webdriver.common.by import By

    image = tmp_path / "digit.png"
    image.write_bytes(_png_bytes(champion_store, size=(8, 8), mode="L"))
    _upload(browser, app_url, image)
    _visible_text(browser, "result")
    assert browser.find_element(By.ID, "prediction").text == str(champion_store["expected"][0])
    rows = browser.find_elements(By.CSS_SELECTOR, "#top li.class")
    assert len(rows) == 5
    first_label = rows[0].find_element(By.CLASS_NAME, "label").text
    percents = [float(r.find_element(By.CLASS_NAME, "probability").text.rstrip("%")) for r in rows]
    assert first_label == str(champion_store["expected"][0])
    assert percents == sorted(percents, reverse=True) and 0 < percents[0] <= 100
    assert not browser.find_element(By.ID, "error").is_displayed()
    # the bars line up: one column, one width, whatever the label's or the percentage's length
    meters = [r.find_element(By.TAG_NAME, "meter") for r in rows]
    assert len({m.location["x"] for m in meters}) == 1 and len({m.size["width"] for m in meters}) == 1
    assert len({r.find_element(By.CLASS_NAME, "probability").location["x"] for r in rows}) == 1
    # and the page says what it serves
    served = browser.find_element(By.ID, "model").text
    accuracy = _served_accuracy(champion_store)
    assert served == f"Model digits-test version {champion_store['version']} @champion · test accuracy {accuracy}"


def _served_accuracy(champion_store) -> str:
    """The champion's test accuracy as promotion recorded it on the version, as the page shows it."""
    import mlflow

    client = mlflow.MlflowClient(champion_store["uri"])
    value = float(client.get_model_version("digits-test", champion_store["version"]).tags["cnnexp.test_accuracy"])
    return f"{100 * value:.1f}%"


def test_model_endpoint_says_what_is_served(app_url, champion_store):
    info = requests.get(app_url + "/api/model", timeout=30).json()
    assert info["uri"] == champion_store["model_uri"] and info["name"] == "digits-test"
    assert info["alias"] == "champion" and info["version"] == str(champion_store["version"])
    assert f"{100 * info['test_accuracy']:.1f}%" == _served_accuracy(champion_store)


def test_page_shows_a_clear_error_for_a_bad_file(app_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "notes.png"
    bad.write_text("these are my notes, not a picture")
    _upload(browser, app_url, bad)
    message = _visible_text(browser, "error")
    assert message.startswith("notes.png:") and "not a PNG or JPEG image" in message
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_app_refuses_a_model_it_cannot_load(tracking, capsys):
    from cnnexp.cli import main

    assert main(["app", "--model", "models:/no-such-model@champion"]) == 1
    err = capsys.readouterr().err
    assert "cannot load model 'models:/no-such-model@champion'" in err and "Traceback" not in err


def test_describe_model_by_version_by_run_and_unknown(champion_store):
    from conftest import tracking_store

    from cnnexp.deploy.model_info import describe_model

    run_id, version = champion_store["run_id"], str(champion_store["version"])
    with tracking_store(champion_store["root"], champion_store["uri"]):
        by_version = describe_model(f"models:/digits-test/{version}")
        by_run = describe_model(f"runs:/{run_id}/model")
        unknown = describe_model("models:/no-such-model@champion")
        trained = mlflow.get_run(run_id).data.metrics["test_accuracy"]
    assert (by_version["name"], by_version["version"], by_version["alias"]) == ("digits-test", version, None)
    assert f"{100 * by_version['test_accuracy']:.1f}%" == _served_accuracy(champion_store)
    assert by_run["name"] == f"run {run_id}" and by_run["test_accuracy"] == trained  # the run's own measurement
    assert unknown == {"uri": "models:/no-such-model@champion", "name": None, "version": None, "alias": None,
                       "test_accuracy": None}  # fmt: skip


def test_a_sideways_16_bit_png_classifies_as_its_upright_8_bit_self(app_url, champion_store):
    """Over HTTP: EXIF orientation 6 and a 16-bit range change the file, not what the model sees."""
    import numpy as np

    digit = champion_store["x_test"][3][..., 0]
    upright = io.BytesIO()
    Image.fromarray(digit).save(upright, format="PNG")
    sideways = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left; viewers turn it right again
    Image.fromarray(np.rot90(digit).astype(np.uint16) * 257).save(sideways, format="PNG", exif=exif)
    answers = [
        requests.post(app_url + "/api/predict", data=f.getvalue(), timeout=60).json() for f in (upright, sideways)
    ]
    assert answers[0]["class_index"] == champion_store["expected"][3]
    assert answers[1] == answers[0]
