"""Every notebook executes top to bottom on small settings (CNNEXP_NOTEBOOK_SMALL=1), so none rots."""

import socket
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _run(nb: nbformat.NotebookNode, tmp_path: Path) -> nbformat.NotebookNode:
    # The kernel inherits this process's environment: the test's own tracking store, small settings.
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def _execute(name: str, tmp_path: Path, monkeypatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("CNNEXP_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("CNNEXP_REPO", str(ROOT))
    return _run(nbformat.read(ROOT / "notebooks" / name, as_version=4), tmp_path)


def test_a_broken_import_fails_the_notebook_run(tmp_path):
    # Nothing here skips on an import error: a notebook importing what the package lacks fails its test.
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("from cnnexp.tuning import no_such_module")])
    with pytest.raises(CellExecutionError, match="ImportError"):
        _run(nb, tmp_path)


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            out.append(o.get("text", "") + str(data.get("text/markdown", data.get("text/plain", ""))))
    return "\n".join(out)


def test_notebooks_are_committed_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "01_exploration.ipynb",
        "02_training_evaluation.ipynb",
        "03_tuning.ipynb",
        "04_serving.ipynb",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        assert "parameters" in code[0].metadata.get("tags", []), path.name


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_exploration_notebook(tracking, tmp_path, monkeypatch):
    nb = _execute("01_exploration.ipynb", tmp_path, monkeypatch)
    assert "logged to MLflow run" in _text(nb)
    assert (tmp_path / "exploration" / "mean_images.png").is_file()
    images = sum(
        o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
        for c in nb.cells
        for o in c.get("outputs", [])
    )
    assert images == 4


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_training_evaluation_notebook(tracking, tmp_path, monkeypatch):
    nb = _execute("02_training_evaluation.ipynb", tmp_path, monkeypatch)
    text = _text(nb)
    assert "test_accuracy" in text and "Weakest classes" in text
    reports = list((tmp_path / "reports").glob("*/report.md"))
    assert len(reports) == 1


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_tuning_notebook(tracking, tmp_path, monkeypatch):
    _execute("03_tuning.ipynb", tmp_path, monkeypatch)
    assert (tmp_path / "reports" / "notebook-digits" / "report.md").is_file()


@pytest.mark.slow  # the suite's 15 minutes; .ci/run runs it
def test_serving_notebook(tracking, tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CNNEXP_NOTEBOOK_PORT", str(port))
    nb = _execute("04_serving.ipynb", tmp_path, monkeypatch)
    assert _text(nb).count("predicted") == 4
