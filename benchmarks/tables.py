"""How each table of the documents is drawn from its JSON: one function per table name (sections 1
and 2 of docs/performance.md are in ``tables_training``).

A function takes the JSON files a marker names (``benchmarks/report.py``) and returns the
Markdown table. It computes what is derived (ratios, medians, means, targets) from the raw
figures, so a JSON file is the only place a figure lives.
"""

from __future__ import annotations

import statistics
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


# Section 5: search efficiency and the 60-minute tune -------------------------------------------


PRUNER_NAMES = {"sha": "successive halving", "hyperband": "Hyperband", "median": "median"}


def _target(rnd: dict[str, Any], tolerance: float) -> float:
    return rnd["studies"]["unpruned"]["summary"]["best_val_accuracy"] - tolerance


def _reach(got: dict[str, Any] | None, short: float | None = None) -> str:
    if got is None:
        return "never" + ("" if short is None else f" (short by {100 * short:.1f} point)")
    where = f"trial {got['trial']}" if "trial" in got else f"after {got['trials']} trial{'s' * (got['trials'] != 1)}"
    return f"{n(got['images'])} ({where})"


def _ratios(r: dict[str, Any]) -> str:
    if r["images"] is None:
        return "n/a"
    return f"{r['images']:.2f} / {r['wall']:.2f}"


@renderer
def search_efficiency(files: list[dict[str, Any]]) -> str:
    data = files[0]
    tol = data["settings"]["tolerance"]
    rounds = data["rounds"]
    best = max(s["summary"]["best_val_accuracy"] for r in rounds for s in r["studies"].values())
    out = []
    for rnd in rounds:
        target = _target(rnd, tol)
        for side, study in rnd["studies"].items():
            s = study["summary"]
            label = "unpruned" if side == "unpruned" else PRUNER_NAMES[side.removeprefix("pruned-")]
            reach = rnd["to_target"][side]
            short = None if reach else target - s["best_val_accuracy"]
            ratio = "-" if side == "unpruned" else _ratios(rnd["ratios"][side])
            out.append(
                [
                    f"{rnd['round']} ({rnd['seed']})",
                    f"{label}, {s['trials']} trials",
                    f"{s['complete']} / {s['pruned']}",
                    bold(f"{s['best_val_accuracy']:.3f}", s["best_val_accuracy"] == best and side != "unpruned"),
                    n(s["images"]),
                    f"{s['wall_s']:.0f}",
                    f"{target:.3f}",
                    _reach(reach, short),
                    ratio,
                ]
            )
    headers = ["round (seed)", "study", "complete / pruned", "best val. acc.", "training images", "wall s", "target"]
    return md([*headers, "images to target", "ratio (images / wall)"], out)


@renderer
def search_efficiency_brief(files: list[dict[str, Any]]) -> str:
    out = []
    for rnd in files[0]["rounds"]:
        best = {side: s["summary"]["best_val_accuracy"] for side, s in rnd["studies"].items()}
        (pruned,) = (side for side in rnd["studies"] if side != "unpruned")
        reach = rnd["to_target"]
        row = [f"{rnd['round']} ({rnd['seed']})", f"{best['unpruned']:.3f}", f"{best[pruned]:.3f}"]
        out.append([*row, _reach(reach["unpruned"]), _reach(reach[pruned]), _ratios(rnd["ratios"][pruned])])
    headers = ["round (seed)", "unpruned best", "Hyperband best", "unpruned images to target"]
    return md([*headers, "Hyperband images to target", "ratio images / wall"], out)


@renderer
def search_efficiency_ratios(files: list[dict[str, Any]]) -> str:
    """Per pruned study: the compute ratio to the unpruned best's target, median [min-max] over rounds."""
    data = files[0]

    def cell(spread: dict[str, float] | None) -> str:
        return "n/a" if spread is None else f"{spread['median']:.2f} [{spread['min']:.2f}-{spread['max']:.2f}]"

    def whole(side: str, key: str) -> str:  # the whole study's compute, unpruned over pruned
        ratios = [r["studies"]["unpruned"]["summary"][key] / r["studies"][side]["summary"][key] for r in data["rounds"]]
        return cell({"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)})

    out = []
    for r in data["ratios"]:
        short = "" if r["max_shortfall"] is None else f" (short by {100 * r['max_shortfall']:.1f} point)"
        met = " / ".join("yes" if r[f"{k}_meets_target"] else "no" for k in ("images", "wall"))
        row = [PRUNER_NAMES[r["study"].removeprefix("pruned-")], f"{r['reached']}/{r['rounds']}{short}"]
        row += [f"{r['survived']}/{r['rounds']}", cell(r["images_ratio"]), cell(r["wall_ratio"]), met]
        out.append([*row, whole(r["study"], "images"), whole(r["study"], "wall_s")])
    headers = ["pruner", "rounds reaching the target", "rounds the winner (or one within 0.5) survived"]
    headers += ["images ratio to target", "wall ratio to target", ">= 3x (images / wall)"]
    return md([*headers, "whole study: images ratio", "whole study: wall ratio"], out)


@renderer
def rank_correlation_unpruned(files: list[dict[str, Any]]) -> str:
    """Spearman's rho of each epoch's score against the final one, over the unpruned studies' trials."""
    rows = files[0]["rank_correlation"]
    rounds = [k for k in rows[0] if k.startswith("round ")]
    # The rungs the pruned studies really cut at: the epochs their pruned trials ran.
    sha = {
        t["epochs"]
        for rnd in files[0]["rounds"]
        for side, study in rnd["studies"].items()
        if side != "unpruned"
        for t in study["trials"]
        if t["state"] == "PRUNED"
    }

    def rho(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    out = []
    for r in rows:
        epoch = f"{r['rung_epoch']}" + (" (a rung)" if r["rung_epoch"] in sha else "")
        out.append(
            [
                epoch,
                r["configurations"],
                bold(rho(r["pooled"]), r["rung_epoch"] in sha),
                *map(rho, (r[k] for k in rounds)),
            ]
        )
    return md(["epoch", "configurations", "rho, pooled", *(f"rho, {k}" for k in rounds)], out)


@renderer
def parallel_workers(files: list[dict[str, Any]]) -> str:
    """Per sampler: median [min-max] over rounds of near-duplicate pairs, all and among concurrent trials."""

    def cell(values: list[float], fmt: str = "g") -> str:
        return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"

    out = []
    for way, rounds in files[0]["rounds"].items():
        row = [f"TPE, {way}", len(rounds), rounds[0]["trials"]]
        row += [cell([r[k] for r in rounds]) for k in ("near_duplicate_pairs", "concurrent_near_duplicate_pairs")]
        row += [cell([r["concurrent_pairs"] for r in rounds]), cell([r["best_value"] for r in rounds], ".3f")]
        out.append(row)
    headers = ["sampler", "rounds", "trials", "near-duplicate pairs", "near-duplicate pairs, concurrent trials"]
    return md([*headers, "concurrent pairs", "best synthetic value"], out)


@renderer
def tune_60min(files: list[dict[str, Any]]) -> str:
    data = files[0]
    t, rt, res, st = data["trials"], data["retrain"], data["result"], data["settings"]
    trials = (
        f"{t['n']} trials: {t['complete']} complete, {t['pruned']} pruned, {t['failed']} failed; best trial "
        f"{t['best_trial']}, validation accuracy {t['best_val_accuracy']:.3f}"
    )
    retrain = f"{rt['config']}; {rt['epochs']} epochs in its {rt['wall_min']} minutes"
    result = (
        f"**test accuracy {res['test_accuracy']:.3f}**, macro-F1 {res['test_macro_f1']:.3f}, "
        f"validation accuracy {res['val_accuracy']:.3f}"
    )
    fidelity = f"{n(st['trial_train_subset'])} images, {st['trial_epochs']} epochs each"
    out = [
        [f"trials ({fidelity})", trials, f"{t['wall_min']} min"],
        [f"retrain of trial {t['best_trial']} on all {n(rt['train_images'])} images", retrain, f"{rt['wall_min']} min"],
        ["**result**", result, f"**{res['wall_min']} min**"],
    ]
    return md(["phase", "what happened", "wall"], out)


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
