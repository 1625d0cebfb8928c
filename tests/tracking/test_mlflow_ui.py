"""The MLflow UI for real (`mlflow server` + headless Chromium): a cnnexp link opens on the runs table."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from servers import tracking_server
from studies import tiny_study

from cnnexp.tracking import tags
from cnnexp.tracking.ui import ui_page

# CNNEXP_UPDATE_FIGURES=1 refreshes the docs' screenshot from this test.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "figures" / "mlflow-ui-runs.png"
# The assistant panel MLflow opens on a first visit would cover half the screenshot.
NO_ASSISTANT = {"mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true", "mlflow.assistant.panelOpen_v1": "false"}


def _links(driver, text: str) -> list:
    return driver.find_elements(By.LINK_TEXT, text)


@pytest.mark.slow  # 2+ minutes on the shared 2-core machine: the UI's first page load is most of it
def test_ui_opens_a_study_on_its_runs(tracking, tmp_path, browser):
    study, parent_id = tiny_study(f"sqlite:///{tmp_path / 'optuna.db'}", "ui-study")
    experiment_id = mlflow.get_run(parent_id).info.experiment_id
    assert mlflow.get_experiment(experiment_id).tags[tags.EXPERIMENT_KIND] == tags.KIND_MODEL_DEVELOPMENT
    with tracking_server(tracking, tmp_path) as url:
        browser.set_window_size(1200, 560)
        browser.get(url + "/")
        for key, value in NO_ASSISTANT.items():
            browser.execute_script("window.localStorage.setItem(arguments[0], arguments[1])", key, value)
        browser.get(f"{url}/{ui_page(experiment_id)}")  # the link cnnexp prints
        wait = WebDriverWait(browser, 180)
        (parent,) = wait.until(lambda d: _links(d, study.study_name))
        # Child runs are folded under their parent: unfold them.
        row = parent.find_element(By.XPATH, "./ancestor::div[@role='row']")
        row.find_element(By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']").click()
        children = [f"{study.study_name}-trial-{t.number}" for t in study.trials]
        wait.until(lambda d: all(_links(d, name) for name in children))
        page = browser.find_element(By.TAG_NAME, "body").text
        assert "Run Name" in page and f"{len(children) + 1} matching runs" in page
        assert "No data available" not in page and "/overview" not in browser.current_url  # not the GenAI pages
        browser.save_screenshot(str(tmp_path / "ui.png"))
    if os.environ.get("CNNEXP_UPDATE_FIGURES") == "1":
        _save_small(tmp_path / "ui.png", SCREENSHOT)


def _save_small(src: Path, dst: Path) -> None:
    """The docs' copy: a palette PNG, a few tens of kB."""
    from PIL import Image

    Image.open(src).convert("RGB").quantize(64).save(dst, optimize=True)
