"""Re-run a training run from its MLflow record alone and compare the metrics, old against new."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from cnnexp.config import build_config
from cnnexp.tracking import tags
from cnnexp.tracking.record import get_run, load_record, rebuild_split
from cnnexp.training.train import TrainResult, train

# Metrics worth comparing: the run's own summary metrics (not the per-epoch curves' last values).
COMPARED = ("test_accuracy", "test_macro_f1", "test_loss", "test_ece", "best_val_accuracy", "best_val_loss")


@dataclass
class Reproduction:
    source_run_id: str
    result: TrainResult
    comparison: pd.DataFrame  # metric, old, new, difference


def reproduce(run_id: str, overrides: dict[str, str] | None = None) -> Reproduction:
    """Train again with the source run's logged config; the new run is tagged with the source run id.

    The data hash is checked before any new run starts, so a refusal leaves no run behind.
    ``overrides`` (dotted keys) exist for where the files now live, e.g. ``data.data_dir``.
    """
    record = load_record(run_id)
    if overrides:
        record.config = build_config(record.config.to_dict(), overrides)
    cfg = record.config
    rebuild_split(record)  # refuses changed data or an unrebuildable split before any run starts
    result = train(cfg, tags={tags.REPRODUCED_FROM: run_id, tags.ROLE: tags.ROLE_REPRODUCTION})
    old = get_run(run_id).data.metrics
    new = get_run(result.run_id).data.metrics
    return Reproduction(run_id, result, compare(old, new))


def compare(old: dict[str, float], new: dict[str, float]) -> pd.DataFrame:
    rows = []
    for name in COMPARED:
        if name in old or name in new:
            a, b = old.get(name), new.get(name)
            diff = b - a if a is not None and b is not None else None
            rows.append({"metric": name, "old": a, "new": b, "difference": diff})
    return pd.DataFrame(rows, columns=["metric", "old", "new", "difference"])


def format_comparison(frame: pd.DataFrame) -> str:
    def num(v) -> str:
        return "-" if v is None or pd.isna(v) else f"{v:.4f}"

    def signed(v) -> str:
        return "-" if v is None or pd.isna(v) else f"{v:+.4f}"

    lines = [f"{'metric':20s} {'old':>10s} {'new':>10s} {'difference':>11s}"]
    for _, r in frame.iterrows():
        lines.append(f"{r['metric']:20s} {num(r['old']):>10s} {num(r['new']):>10s} {signed(r['difference']):>11s}")
    return "\n".join(lines)
