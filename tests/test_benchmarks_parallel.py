"""benchmarks/parallel_workers.py: the near-duplicate measure, and its smoke run (2 spawned workers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import parallel_workers as pw
from cnnexp.tuning.space_file import load_space

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "fashion_mnist.yaml"


def test_near_duplicates_compare_normalised_ranges_and_every_choice():
    space = load_space(SPACE)
    a = {"train.learning_rate": 1e-3, "train.optimizer": "adam", "model.dropout": 0.10}
    close = {"train.learning_rate": 1.05e-3, "train.optimizer": "adam", "model.dropout": 0.11}
    assert pw.unit(space, a)["model.dropout"] == pytest.approx(0.25)  # 0.1 of the range 0-0.4
    assert pw.near_duplicates(pw.unit(space, a), pw.unit(space, close), 0.05)
    far_rate = {**close, "train.learning_rate": 2e-3}  # log scale: 2x is 0.2 of the 3e-4..1e-2 range
    assert not pw.near_duplicates(pw.unit(space, a), pw.unit(space, far_rate), 0.05)
    other_choice = {**close, "train.optimizer": "sgd"}
    assert not pw.near_duplicates(pw.unit(space, a), pw.unit(space, other_choice), 0.05)
    more_params = {**close, "train.momentum": 0.9}  # a conditional parameter active in one only
    assert not pw.near_duplicates(pw.unit(space, a), pw.unit(space, more_params), 0.05)
    assert pw.synthetic_score(space, a) == pw.synthetic_score(space, dict(a))  # deterministic


@pytest.mark.slow  # two spawned workers racing on one journal: failed once in a fresh clone under heavy load
def test_parallel_workers_smoke(tmp_path):
    assert pw.main(["--smoke", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "parallel_workers.json").read_text())
    assert result["settings"]["smoke"] and "commit" in result["machine"]
    for rounds in result["rounds"].values():
        (r,) = rounds
        assert r["trials"] == r["complete"] == 12 == len(r["params"])  # 2 workers x 6: exactly the requested trials
        assert 0 <= r["concurrent_near_duplicate_pairs"] <= r["near_duplicate_pairs"] <= r["pairs"] == 66
    assert [row["sampler"] for row in result["summary"]] == ["TPE, constant_liar=False", "TPE, constant_liar=True"]
