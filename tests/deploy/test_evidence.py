"""The promotion gate's statistics on synthetic predictions: exact McNemar, its interval, the bootstrap, the rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from cnnexp.analysis.evaluate import Evaluation, cross_entropy
from cnnexp.deploy.evidence import (
    PER_CLASS_CSV,
    REGRESSIONS_CSV,
    REGRESSIONS_PNG,
    Gate,
    _macro_f1,
    compare,
    write_regression_report,
)
from cnnexp.errors import PromotionError

K = 4


def _evaluation(y: np.ndarray, pred: np.ndarray, confidence: float = 0.9) -> Evaluation:
    """An Evaluation of a model that puts ``confidence`` on ``pred`` and spreads the rest."""
    probs = np.full((len(y), K), (1 - confidence) / (K - 1))
    probs[np.arange(len(y)), pred] = confidence
    per_class = pd.DataFrame(
        {
            "class": [f"c{k}" for k in range(K)],
            "precision": 0.0,
            "recall": [float((pred[y == k] == k).mean()) for k in range(K)],
            "f1": f1_score(y, pred, labels=range(K), average=None, zero_division=0),
            "support": [int((y == k).sum()) for k in range(K)],
        }
    )
    metrics = {
        "test_accuracy": float((pred == y).mean()),
        "test_macro_f1": float(f1_score(y, pred, labels=range(K), average="macro", zero_division=0)),
        "test_loss": float(cross_entropy(probs, y).mean()),
    }
    return Evaluation(probs, y, pred, metrics, per_class, np.zeros((K, K), int))


def _pair(n: int, both_right: int, only_new: int, only_old: int, seed: int = 0) -> tuple[Evaluation, Evaluation]:
    """Challenger and champion on n images with the given agreement counts (the rest both wrong)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    wrong = (y + 1) % K
    new, old = wrong.copy(), wrong.copy()
    new[: both_right + only_new], old[:both_right] = y[: both_right + only_new], y[:both_right]
    old[both_right + only_new : both_right + only_new + only_old] = y[
        both_right + only_new : both_right + only_new + only_old
    ]
    return _evaluation(y, new), _evaluation(y, old)


def test_mcnemar_is_exact_and_its_interval_agrees():
    mine, theirs = _pair(1000, 900, 30, 12)
    ev = compare(Gate(), mine, theirs)
    assert (ev.only_challenger_right, ev.only_champion_right, ev.n_images) == (30, 12, 1000)
    assert ev.p_value == pytest.approx(binomtest(30, 42, 0.5).pvalue) and ev.p_value < 0.05
    assert ev.difference == pytest.approx(0.018) and ev.ci_low < ev.difference < ev.ci_high
    assert ev.ci_low > 0 and ev.better and ev.method == "exact McNemar"
    assert ev.challenger_accuracy == pytest.approx(0.93) and ev.champion_accuracy == pytest.approx(0.912)
    # The same counts at a stricter alpha: not significant, and the wider interval then includes 0.
    strict = compare(Gate(alpha=0.005), mine, theirs)
    assert not strict.better and strict.ci_low < 0 < strict.ci_high and "beyond noise" in strict.verdict


@pytest.mark.parametrize("only_new, only_old", [(3, 1), (0, 0), (10, 14)])
def test_noise_or_worse_is_not_better(only_new, only_old):
    ev = compare(Gate(), *_pair(360, 300, only_new, only_old))
    assert not ev.better
    assert ev.p_value == (
        1.0 if only_new + only_old == 0 else pytest.approx(binomtest(only_new, only_new + only_old).pvalue)
    )
    assert ev.verdict.startswith("not better") and f"{only_new} test images only the challenger" in ev.facts


def test_margin_and_significance_must_both_hold():
    mine, theirs = _pair(100_000, 90_000, 700, 500)  # +0.2 point, p about 1e-8 on a large test set
    assert compare(Gate(), mine, theirs).better
    small = compare(Gate(min_margin=0.005), mine, theirs)
    assert not small.better and "minimum margin 0.005" in small.verdict and small.p_value < 1e-6
    big_but_noisy = compare(Gate(min_margin=0.01), *_pair(50, 40, 2, 0))  # +4 points on 2 images
    assert not big_but_noisy.better and "beyond noise" in big_but_noisy.verdict


@pytest.mark.parametrize("metric", ["test_macro_f1", "test_loss"])
def test_paired_bootstrap_for_other_metrics(metric):
    clear = compare(Gate(metric=metric), *_pair(1000, 800, 80, 10))
    assert clear.better and clear.p_value < 0.01 and clear.method.startswith("paired bootstrap")
    assert clear.ci_low <= clear.difference <= clear.ci_high
    assert (clear.difference > 0) == (metric == "test_macro_f1")  # a lower loss is the better one
    noise = compare(Gate(metric=metric), *_pair(1000, 800, 11, 10))
    assert not noise.better and noise.p_value > 0.05
    assert compare(Gate(metric=metric), *_pair(1000, 800, 11, 10)) == noise  # seeded: the same decision again


def test_vectorised_macro_f1_matches_sklearn():
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, K, 200), rng.integers(0, K, 200)
    pred[:120] = y[:120]
    idx = rng.integers(0, 200, size=(5, 200))
    idx[0, :] = np.arange(200)
    idx[1, :] = idx[1, 0]  # one image: most classes absent
    want = [f1_score(y[i], pred[i], labels=range(K), average="macro", zero_division=0) for i in idx]
    assert _macro_f1(y, pred, idx, K) == pytest.approx(want)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 0}, "alpha 0 must be between 0 and 1"),
        ({"alpha": 1.5}, "alpha 1.5 must be between 0 and 1"),
        ({"min_margin": -0.1}, "min_margin -0.1 must be 0 or more"),
        ({"max_latency_ms": 0}, "max_latency_ms 0 must be positive"),
        ({"metric": "speed"}, "metric 'speed' is not one of"),
    ],
)
def test_bad_rules_fail_clearly(kwargs, message):
    with pytest.raises(PromotionError, match=message):
        Gate(**kwargs)


def test_judge():
    better = compare(Gate(), *_pair(1000, 900, 30, 5))
    assert Gate().judge(better, 1.0, "3")[0] == "promoted"
    assert Gate().judge(None, 1.0, None) == ("first", "first model of this name: becomes champion")
    outcome, reason = Gate(max_latency_ms=0.5).judge(better, 1.0, "3")
    assert outcome == "refused" and "1 ms, above the 0.5 ms limit" in reason
    assert Gate(max_latency_ms=0.5).judge(None, 1.0, None)[0] == "refused"  # a budget holds for the first, too
    assert Gate(max_latency_ms=0.5, force=True).judge(better, 1.0, "3")[0] == "forced"
    assert Gate(force=True).judge(None, 1.0, "3") == (
        "forced",
        "forced (--force) although champion v3 used another test set",
    )


def test_regression_report_lists_what_the_champion_got_right(tmp_path):
    mine, theirs = _pair(200, 150, 10, 7)
    files = write_regression_report(mine, theirs, np.zeros((200, 8, 8, 1), np.uint8), ("a", "b", "c", "d"), tmp_path)
    assert sorted(p.name for p in files) == sorted([REGRESSIONS_CSV, REGRESSIONS_PNG, PER_CLASS_CSV])
    lost = pd.read_csv(tmp_path / REGRESSIONS_CSV)
    assert list(lost["index"]) == list(range(160, 167))  # exactly the 7 only the champion got right
    assert (lost["true"] != lost["predicted"]).all()
    change = pd.read_csv(tmp_path / PER_CLASS_CSV)
    assert list(change["class"]) == ["c0", "c1", "c2", "c3"]
    assert change["recall_change"].to_numpy() == pytest.approx(
        (change["challenger_recall"] - change["champion_recall"]).to_numpy()
    )
