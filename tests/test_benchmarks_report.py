"""The documents' tables are drawn from the committed JSON in benchmarks/results/ (issue 17)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def test_committed_tables_match_their_json():
    assert report.main(["--check"]) == 0


def test_the_command_line_check_passes_on_the_committed_docs():
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.report", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "59 tables match" in proc.stdout and "5 tables match" in proc.stdout


def test_a_hand_edited_figure_fails_the_check_and_is_redrawn(tmp_path, capsys):
    original = (ROOT / "docs" / "performance.md").read_text()
    assert original.count("| 0.9206 | **0.9226** |") == 1  # the flip-TTA probe, inside a marked table
    edited = original.replace("| 0.9206 | **0.9226** |", "| 0.9206 | **0.9262** |")
    doc = tmp_path / "performance.md"
    doc.write_text(edited)

    assert report.main(["--check", str(doc)]) == 1
    out = capsys.readouterr().out
    assert "-| bf16, batch 256, peak lr 4e-3 | 17 | 242,602 | 0.9206 | **0.9262** |" in out
    assert "+| bf16, batch 256, peak lr 4e-3 | 17 | 242,602 | 0.9206 | **0.9226** |" in out
    assert doc.read_text() == edited  # --check changes nothing

    assert report.main([str(doc)]) == 0  # without --check: redrawn from the JSON
    assert doc.read_text() == original


def test_a_derived_figure_is_computed_not_copied(tmp_path):
    # The 3-seed mean is the report's arithmetic: editing it alone is caught too.
    original = (ROOT / "docs" / "performance.md").read_text()
    assert "**0.918 (0.916-0.921)**" in original
    doc = tmp_path / "performance.md"
    doc.write_text(original.replace("**0.918 (0.916-0.921)**", "**0.920 (0.916-0.921)**"))
    assert report.main(["--check", str(doc)]) == 1


@pytest.mark.parametrize(
    "marker, message",
    [
        ("<!-- table: nonsense (benchmarks/results/compute-xeon-amx.json) -->\n<!-- /table -->", "unknown table"),
        ("<!-- table: serving (benchmarks/results/missing.json) -->\n<!-- /table -->", "does not exist"),
        ("<!-- table: serving (benchmarks/results/serving-xeon-amx.json) -->\n| x |\n", "no '<!-- /table -->'"),
    ],
    ids=["unknown-table", "missing-json", "unclosed"],
)
def test_bad_markers_are_refused_by_name(tmp_path, marker, message):
    doc = tmp_path / "doc.md"
    doc.write_text(f"# doc\n\n{marker}\n")
    with pytest.raises(SystemExit, match=message):
        report.main(["--check", str(doc)])


def test_every_committed_result_is_quoted_and_says_where_it_comes_from():
    docs = "".join(p.read_text() for p in report.DOCS)
    files = sorted(RESULTS.glob("*.json"))
    assert files
    for path in files:
        assert f"benchmarks/results/{path.name}" in docs, f"{path.name} is quoted by no table"
        data = json.loads(path.read_text())
        machine = data["machine"]
        assert machine["cpu"] and isinstance(machine["cpu_flags"], list) and machine["commit"], path.name
        # A file a benchmark wrote carries its commit; one transcribed or quoted says where from instead.
        provenance = data.get("provenance", "")
        assert len(machine["commit"]) == 40 or "transcribed" in provenance or "quoted in issue 17" in provenance
