"""How the promotion gate decides: challenger and champion compared image by image on one test set.

Both models classify the very same test images, so their scores share most of the test set's
sampling noise; comparing the two numbers alone (the old "strictly better" rule) cannot tell a
real gain from the 0.1-0.5 point two seeds of one config differ by. A paired comparison can:

- ``test_accuracy``: the exact McNemar test. Only the discordant images (one model right, the
  other wrong) say which model is better; if both were equally good, each would be a fair coin,
  so the challenger's wins are Binomial(discordant, 1/2) (``scipy.stats.binomtest``). Exact, so it
  holds for the handful of discordant images of a small test set, where the chi-square form does
  not. Two-sided, so that it agrees with the interval reported beside it: the Clopper-Pearson
  interval of the challenger's share of the discordant images, scaled to an accuracy difference
  (exact given the discordant count), excludes 0 exactly when p < alpha.
- ``test_macro_f1`` and ``test_loss`` are not sums of per-image right/wrong: a paired bootstrap
  over images (the same resampled images for both models; fixed seed, so a decision can be
  re-derived), with its percentile interval and two-sided bootstrap p-value.

The challenger is better when it is ahead, significant at ``alpha`` AND ahead by at least
``min_margin`` (metric units): the test guards against noise, the margin against gains too small
to matter, which a large test set makes significant. Both must hold; each alone is too weak.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from scipy.stats import binomtest

from cnnexp.analysis.evaluate import Evaluation, cross_entropy
from cnnexp.analysis.figures import error_gallery
from cnnexp.analysis.files import save_figure
from cnnexp.errors import PromotionError
from cnnexp.serving.pyfunc import encode_image
from cnnexp.serving.requests import IMAGE_COLUMN

# Metric -> True when higher is better. A tie keeps the champion: change needs evidence.
METRICS = {"test_accuracy": True, "test_macro_f1": True, "test_loss": False}
RESAMPLES = 2000
REGRESSIONS_CSV, REGRESSIONS_PNG, PER_CLASS_CSV = "regressions.csv", "regressions.png", "per_class_change.csv"
GALLERY_MAX = 32  # images in the PNG; the CSV lists every regression


@dataclass
class Evidence:
    metric: str
    method: str
    challenger: float
    champion: float
    difference: float  # challenger - champion in the metric's units (for test_loss, negative is better)
    ci_low: float
    ci_high: float
    confidence: float  # of the interval: 1 - alpha
    p_value: float
    n_images: int
    challenger_accuracy: float
    champion_accuracy: float
    only_challenger_right: int  # images the challenger gets right and the champion wrong
    only_champion_right: int
    alpha: float
    min_margin: float
    better: bool
    verdict: str  # better | not better | not better beyond noise (...) | significant but ... margin
    facts: str  # the numbers above in one sentence


@dataclass(frozen=True)
class Gate:
    """The promotion rule. ``force`` makes any candidate champion, with the reason it would not have been."""

    metric: str = "test_accuracy"
    alpha: float = 0.05
    min_margin: float = 0.0
    max_latency_ms: float | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise PromotionError(f"metric {self.metric!r} is not one of: {', '.join(METRICS)}")
        if not 0 < self.alpha < 1:
            raise PromotionError(f"alpha {self.alpha:g} must be between 0 and 1 (exclusive), e.g. 0.05")
        if not self.min_margin >= 0:
            raise PromotionError(f"min_margin {self.min_margin:g} must be 0 or more, in the metric's units")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            raise PromotionError(f"max_latency_ms {self.max_latency_ms:g} must be positive (or none: no limit)")

    def judge(self, evidence: Evidence | None, latency_ms: float, champion: str | None) -> tuple[str, str]:
        """Outcome (first | promoted | refused | forced) and its reason; ``evidence`` None: nothing comparable."""
        why_not = None
        if self.max_latency_ms is not None and latency_ms > self.max_latency_ms:
            why_not = f"single-image predict takes {latency_ms:.3g} ms, above the {self.max_latency_ms:g} ms limit"
        elif champion is None:
            return "first", "first model of this name: becomes champion"
        elif evidence is None:
            why_not = f"champion v{champion} used another test set"
        elif evidence.better:
            return "promoted", f"won on {self.metric} against champion v{champion}: {evidence.facts}"
        else:
            why_not = f"against champion v{champion}, {evidence.verdict}: {evidence.facts}"
        if self.force:
            return "forced", f"forced (--force) although {why_not}"
        return "refused", f"refused: {why_not}"


def _mcnemar(only_challenger: int, only_champion: int, n: int, confidence: float) -> tuple[float, float, float]:
    """Two-sided exact p-value and the matching interval of the accuracy difference."""
    discordant = only_challenger + only_champion
    if discordant == 0:
        return 1.0, 0.0, 0.0  # identical on every image: no evidence either way
    test = binomtest(only_challenger, discordant, 0.5)
    share = test.proportion_ci(confidence_level=confidence, method="exact")
    # difference = (wins - losses) / n = discordant / n * (2 * share - 1)
    scale = discordant / n
    return float(test.pvalue), scale * (2 * share.low - 1), scale * (2 * share.high - 1)


def _macro_f1(y: np.ndarray, pred: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Macro-F1 of each resample (rows of idx), as sklearn's f1_score(average='macro', zero_division=0)."""
    rows = np.arange(len(idx))[:, None] * k
    y_s, p_s = y[idx], pred[idx]
    hits = np.bincount((rows + y_s).ravel(), weights=(y_s == p_s).ravel(), minlength=len(idx) * k)
    true = np.bincount((rows + y_s).ravel(), minlength=len(idx) * k)
    said = np.bincount((rows + p_s).ravel(), minlength=len(idx) * k)
    denominator = (true + said).reshape(-1, k)
    f1 = np.divide(2 * hits.reshape(-1, k), denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    return f1.mean(axis=1)


def _statistic(metric: str, ev: Evaluation, k: int):
    """The metric of one model on resampled image indices (rows of idx)."""
    if metric == "test_macro_f1":
        return lambda idx: _macro_f1(ev.y_true, ev.y_pred, idx, k)
    per_image = (
        (ev.y_pred == ev.y_true).astype(float)
        if metric == "test_accuracy"
        else cross_entropy(ev.probabilities, ev.y_true)
    )
    return lambda idx: per_image[idx].mean(axis=1)


def _bootstrap(metric: str, mine: Evaluation, theirs: Evaluation, confidence: float, seed: int = 0):
    """Two-sided p-value and percentile interval of the paired difference (challenger - champion)."""
    n, k = len(mine.y_true), mine.probabilities.shape[1]
    rng = np.random.default_rng(seed)
    stat_mine, stat_theirs = _statistic(metric, mine, k), _statistic(metric, theirs, k)
    diffs = []
    for start in range(0, RESAMPLES, 250):  # bounded memory: 250 x n indices at a time
        idx = rng.integers(0, n, size=(min(250, RESAMPLES - start), n))
        diffs.append(stat_mine(idx) - stat_theirs(idx))
    d = np.concatenate(diffs)
    tail = min((d <= 0).sum(), (d >= 0).sum())
    p = min(1.0, 2 * (tail + 1) / (len(d) + 1))
    low, high = np.quantile(d, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(p), float(low), float(high)


def compare(gate: Gate, mine: Evaluation, theirs: Evaluation) -> Evidence:
    """The paired evidence that the challenger (``mine``) beats the champion (``theirs``) on the gate's metric."""
    metric, alpha, min_margin = gate.metric, gate.alpha, gate.min_margin
    if not np.array_equal(mine.y_true, theirs.y_true):
        raise PromotionError("challenger and champion were evaluated on different test images")
    right_mine, right_theirs = mine.y_pred == mine.y_true, theirs.y_pred == theirs.y_true
    only_mine, only_theirs = int((right_mine & ~right_theirs).sum()), int((~right_mine & right_theirs).sum())
    n, confidence = len(mine.y_true), 1 - alpha
    if metric == "test_accuracy":
        method = "exact McNemar"
        p, low, high = _mcnemar(only_mine, only_theirs, n, confidence)
    else:
        method = f"paired bootstrap ({RESAMPLES} resamples)"
        p, low, high = _bootstrap(metric, mine, theirs, confidence)
    a, b = mine.metrics[metric], theirs.metrics[metric]
    difference = a - b
    gain = difference if METRICS[metric] else -difference
    facts = (
        f"{metric} {a:.4f} vs {b:.4f}, difference {difference:+.4f} ({confidence:.0%} CI {low:+.4f} to {high:+.4f}), "
        f"{method} p={p:.3g}; {only_mine} test images only the challenger gets right, {only_theirs} only the champion"
    )
    better = gain > 0 and p < alpha and gain >= min_margin
    if better:
        verdict = "better"
    elif gain <= 0:
        verdict = "not better"
    elif p >= alpha:
        verdict = f"not better beyond noise (p={p:.3g} is not below alpha {alpha:g})"
    else:
        verdict = f"significant but not better by the minimum margin {min_margin:g}"
    return Evidence(
        metric, method, a, b, difference, low, high, confidence, p, n,
        float(right_mine.mean()), float(right_theirs.mean()), only_mine, only_theirs,
        alpha, min_margin, better, verdict, facts,
    )  # fmt: skip


def regressions(mine: Evaluation, theirs: Evaluation, class_names: tuple[str, ...]) -> pd.DataFrame:
    """The test images the champion gets right and the challenger wrong, most confident mistakes first."""
    lost = np.flatnonzero((theirs.y_pred == theirs.y_true) & (mine.y_pred != mine.y_true))
    names = np.asarray(class_names, dtype=object)
    frame = pd.DataFrame(
        {
            "index": lost,
            "true": names[mine.y_true[lost]],
            "predicted": names[mine.y_pred[lost]],  # the challenger's answer (the gallery's title)
            "confidence": mine.probabilities[lost, mine.y_pred[lost]],
            "champion_confidence": theirs.probabilities[lost, theirs.y_true[lost]],
        }
    )
    return frame.sort_values("confidence", ascending=False, kind="stable").reset_index(drop=True)


def per_class_change(mine: Evaluation, theirs: Evaluation) -> pd.DataFrame:
    """Recall and F1 per class, champion against challenger, and the change."""
    a, b = mine.per_class.set_index("class"), theirs.per_class.set_index("class")
    out = pd.DataFrame({"support": a["support"]})
    for col in ("recall", "f1"):
        out[f"champion_{col}"], out[f"challenger_{col}"] = b[col], a[col]
        out[f"{col}_change"] = a[col] - b[col]
    return out.reset_index()


def write_regression_report(
    mine: Evaluation, theirs: Evaluation, images: np.ndarray, class_names: tuple[str, ...], out_dir: Path
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    lost = regressions(mine, theirs, class_names)
    lost.to_csv(out_dir / REGRESSIONS_CSV, index=False)
    per_class_change(mine, theirs).to_csv(out_dir / PER_CLASS_CSV, index=False)
    title = f"{len(lost)} test images the champion gets right and the challenger wrong: true -> challenger (conf.)"
    save_figure(error_gallery(images, lost.head(GALLERY_MAX), title=title), out_dir / REGRESSIONS_PNG)
    return [out_dir / name for name in (REGRESSIONS_CSV, PER_CLASS_CSV, REGRESSIONS_PNG)]


def log_regression_report(mine: Evaluation, theirs: Evaluation, images: np.ndarray, class_names) -> None:
    """Log the regression files under ``regressions/`` in the active MLflow run."""
    with tempfile.TemporaryDirectory() as tmp:
        write_regression_report(mine, theirs, images, class_names, Path(tmp))
        mlflow.log_artifacts(tmp, "regressions")


def predict_latency_ms(pyfunc, image: np.ndarray, calls: int = 5) -> float:
    """Median wall time of the loaded pyfunc classifying one PNG-encoded image, after one warm-up call."""
    frame = pd.DataFrame({IMAGE_COLUMN: [encode_image(image)]})
    pyfunc.predict(frame)  # the first call builds the predict graph
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        pyfunc.predict(frame)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000
