"""How each table of the documents is drawn from its JSON: one function per table name (sections 1
and 2 of docs/performance.md are in ``tables_training``, section 5 in ``tables_search``).

A function takes the JSON files a marker names (``benchmarks/report.py``) and returns the
Markdown table. It computes what is derived (ratios, medians, means, targets) from the raw
figures, so a JSON file is the only place a figure lives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Row = Sequence[Any]
Renderer = Callable[[list[dict[str, Any]]], str]
RENDERERS: dict[str, Renderer] = {}


def renderer(fn: Renderer) -> Renderer:
    RENDERERS[fn.__name__] = fn
    return fn


def md(headers: Row, rows: Sequence[Row], left: int | None = None) -> str:
    """A Markdown table; with ``left``, the columns after the first ``left`` are right-aligned (numbers)."""
    cols = len(headers)
    rule = "|" + "|".join("---" if left is None or i < left else "---:" for i in range(cols)) + "|"
    lines = [("| " + " | ".join(str(c) for c in line) + " |").replace("|  |", "| |") for line in (headers, *rows)]
    return "\n".join([lines[0], rule, *lines[1:]])


def bold(text: Any, on: bool = True) -> str:
    return f"**{text}**" if on else str(text)


def n(v: float) -> str:
    """A count or rate with thousands separators and no decimals."""
    return f"{v:,.0f}"


# Sections 3, 4, 6: serving, input pipeline, tracking overhead -----------------------------------

SERVING = {
    "server": "`mlflow models serve` (HTTP, JSON, PNG decoding)",
    "pyfunc": "pyfunc in-process (PNG decoding included)",
    "keras predict()": "Keras `model.predict()` (pixels)",
    "keras predict_on_batch()": "Keras `model.predict_on_batch()` (pixels)",
    "keras call (eager)": "Keras eager call (pixels)",
}


def _ratio(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


@renderer
def serving(files: list[dict[str, Any]]) -> str:
    data = files[0]
    summary = data["summary"]
    ref = summary["pyfunc"]["p50_ms"]["median"]
    out = []
    for side, s in summary.items():
        p50 = s["p50_ms"]
        cell = _ratio(p50["median"] / ref)
        out.append(
            [
                SERVING.get(side, side),
                f"{p50['median']:.1f}",
                f"{p50['min']:.1f}-{p50['max']:.1f}",
                f"{s['p99_ms']['median']:.1f}",
                n(s["batch_images_per_s"]["median"]),
                bold(cell, side == "server") if side != "pyfunc" else "1.00",
            ]
        )
    batch = data["settings"]["batch_size"]
    headers = ["side", "p50 ms", "p50 min-max", "p99 ms", f"{batch}-image request: images/s", "p50 vs pyfunc"]
    return md(headers, out)


PIPELINE = {
    "pipeline aug": "tf.data pipeline with augmentation (flip, shift)",
    "pipeline no-aug": "tf.data pipeline without augmentation",
    "model step": "model training step alone (one batch, repeated)",
    "fit aug": "`fit` on the augmented pipeline",
    "fit no-aug": "`fit` on the plain pipeline",
}


@renderer
def input_pipeline(files: list[dict[str, Any]]) -> str:
    summary = files[0]["summary"]
    ref = summary["model step"]["images_per_s"]["median"]
    out = []
    for side, s in summary.items():
        ips, ratio = s["images_per_s"], s["images_per_s"]["median"] / ref
        vs = f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2f}"
        cpu = s["cpu_ms_per_100_images"]["median"]
        cpu_cell = f"{cpu:.1f}" if cpu < 10 else f"{cpu:.0f}"
        out.append([PIPELINE.get(side, side), n(ips["median"]), f"{n(ips['min'])}-{n(ips['max'])}", vs, cpu_cell])
    return md(["side", "images/s (median)", "min-max", "vs model step", "CPU ms / 100 images"], out)


@renderer
def tracking_overhead(files: list[dict[str, Any]]) -> str:
    data = files[0]
    summary = data["summary"]
    ref = summary["bare"]["images_per_s"]["median"]
    labels = {"bare": "bare `fit`", "tracked": "tracked `train`"}
    out = []
    for side, s in summary.items():
        ips = s["images_per_s"]
        ratio = ips["median"] / ref
        out.append(
            [
                labels.get(side, side),
                n(ips["median"]),
                f"{n(ips['min'])}-{n(ips['max'])}",
                f"{s['epoch_s']['median']:.2f}",
                bold(f"{ratio:.3f}", side != "bare"),
            ]
        )
    return md(["side", "images/s (median)", "min-max", "s/epoch", "ratio vs bare"], out)


# docs/results.md: one training run and one study -----------------------------------------------


@renderer
def run_history(files: list[dict[str, Any]]) -> str:
    history = files[0]["history"]
    low = min(h["val_loss"] for h in history)
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    out = [[h["epoch"], *(bold(f"{h[k]:.4f}", k == "val_loss" and h[k] == low) for k in keys)] for h in history]
    return md(["epoch", *keys], out, left=0)


@renderer
def run_metrics(files: list[dict[str, Any]]) -> str:
    m = files[0]["metrics"]
    names = {
        "test_accuracy": "test accuracy",
        "test_macro_f1": "test macro-F1",
        "test_loss": "test cross-entropy",
        "test_ece": "expected calibration error",
        "best_val_accuracy": "best validation accuracy",
    }
    out = [[label, bold(f"{m[k]:.4f}", k == "test_accuracy")] for k, label in names.items()]
    return md(["metric", "value"], out, left=1)


@renderer
def run_per_class(files: list[dict[str, Any]]) -> str:
    rows = files[0]["per_class"]
    weakest = min(rows, key=lambda r: r["f1"])
    out = []
    for r in rows:
        w = r is weakest
        scores = [f"{r['precision']:.3f}", bold(f"{r['recall']:.3f}", w), bold(f"{r['f1']:.3f}", w)]
        out.append([bold(r["class"], w), *scores])
    return md(["class", "precision", "recall", "F1"], out, left=1)


@renderer
def run_confused_pairs(files: list[dict[str, Any]]) -> str:
    data = files[0]
    per_class = data["settings"]["test_images_per_class"]
    pairs = data["confused_pairs"]
    out = [[p["true"], p["predicted"], p["count"], f"{100 * p['count'] / per_class:.1f}%"] for p in pairs]
    return md(["true", "predicted", "count", "rate"], out, left=2)


@renderer
def study_summary(files: list[dict[str, Any]]) -> str:
    t, b, st = files[0]["trials"], files[0]["best"], files[0]["settings"]
    fidelity = f"{n(st['trial_train_subset'])} training images, {st['trial_epochs']} epochs"
    out = [
        ["trials complete / pruned / failed", f"{t['complete']} / {t['pruned']} / {t['failed']}"],
        [f"best trial ({t['best_trial']}): validation accuracy on {fidelity}", f"{t['best_val_accuracy']:.4f}"],
        ["median of completed trials", f"{t['median_complete_val_accuracy']:.4f}"],
        ["retrained best: test accuracy", bold(f"{b['test_accuracy']:.4f}")],
        [
            "retrained best: test macro-F1 / loss / ECE",
            " / ".join(f"{b[k]:.4f}" for k in ("test_macro_f1", "test_loss", "test_ece")),
        ],
    ]
    return md(["", "value"], out, left=1)
