"""``cnnexp runs``: compare the runs of an experiment by chosen metrics, in the terminal."""

from __future__ import annotations

import mlflow
import pandas as pd

from cnnexp.errors import RunError

DEFAULT_METRICS = ("test_accuracy", "test_macro_f1", "test_loss", "best_val_accuracy")
DEFAULT_PARAMS = ("data.dataset", "model.family", "model.blocks", "model.filters", "train.learning_rate")


def compare_runs(
    experiment: str,
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    params: tuple[str, ...] = DEFAULT_PARAMS,
    sort_by: str | None = None,
    ascending: bool = False,
    filter_string: str = "",
    limit: int = 20,
) -> pd.DataFrame:
    """One row per run (best first by ``sort_by``, default the first metric): id, name, status, metrics, params."""
    if mlflow.get_experiment_by_name(experiment) is None:
        names = [e.name for e in mlflow.search_experiments()]
        raise RunError(
            f"no experiment named {experiment!r} in {mlflow.get_tracking_uri()} "
            f"(experiments: {', '.join(names) or 'none'})"
        )
    sort_by = sort_by or metrics[0]
    # MLflow sorts runs without the metric last in either direction, as a table should.
    order = f"metrics.`{sort_by}` {'ASC' if ascending else 'DESC'}"
    runs = mlflow.search_runs(
        experiment_names=[experiment], filter_string=filter_string, order_by=[order], max_results=limit
    )
    columns = ["run_id", "run_name", "status", *metrics, *params]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    out = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "run_name": runs.get("tags.mlflow.runName", pd.Series([""] * len(runs))),
            "status": runs["status"],
        }
    )
    for m in metrics:
        out[m] = runs[f"metrics.{m}"] if f"metrics.{m}" in runs else float("nan")
    for p in params:
        out[p] = runs[f"params.{p}"] if f"params.{p}" in runs else ""
    return out.reset_index(drop=True)


def format_runs(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no runs)"
    return frame.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")
