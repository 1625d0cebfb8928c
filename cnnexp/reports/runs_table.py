"""``cnnexp runs``: compare the runs of an experiment by chosen metrics, in the terminal."""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from cnnexp.errors import ConfigError, RunError
from cnnexp.tracking import tags

DEFAULT_METRICS = ("test_accuracy", "test_macro_f1", "test_loss", "best_val_accuracy")
DEFAULT_PARAMS = ("data.dataset", "model.family", "model.blocks", "model.filters", "train.learning_rate")
# Metrics whose names say lower is better: sorted ascending unless told otherwise.
LOWER_IS_BETTER = ("loss", "error", "ece")
# Which runs a table lists. Training runs are those that logged a training config (every
# `cnnexp train`, trial and retrained best does, before anything can fail); MLflow's filter
# cannot select runs *without* a tag, so "has a train.epochs param" is the test.
KINDS = {
    "training": "params.`train.epochs` LIKE '%'",
    "exploration": f"tags.`{tags.KIND}` = 'exploration'",
    "all": "",
}


def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in LOWER_IS_BETTER)


def _search(experiment: str, kind: str, filter_string: str, order: str, limit: int) -> pd.DataFrame:
    combined = " and ".join(f for f in (KINDS[kind], filter_string.strip()) if f)
    try:
        return mlflow.search_runs(
            experiment_names=[experiment], filter_string=combined, order_by=[order], max_results=limit
        )
    except MlflowException as e:
        raise ConfigError(
            f"filter {filter_string!r} is not a valid MLflow search filter: {e.message.splitlines()[0]} "
            "(e.g. \"metrics.test_accuracy > 0.9 and params.`model.family` = 'residual'\")"
        ) from None


def _check_known(what: str, names: tuple[str, ...], runs: pd.DataFrame, prefix: str) -> None:
    known = sorted(c[len(prefix) :] for c in runs.columns if c.startswith(prefix))
    unknown = [n for n in names if n not in known]
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise ConfigError(f"{what} {names} not logged by any of these runs; known: {', '.join(known) or 'none'}")


def compare_runs(
    experiment: str,
    metrics: tuple[str, ...] | None = None,
    params: tuple[str, ...] | None = None,
    sort_by: str | None = None,
    ascending: bool | None = None,
    filter_string: str = "",
    limit: int = 20,
    kind: str = "training",
) -> pd.DataFrame:
    """One row per run, best first by ``sort_by`` (default: the first metric; losses and errors
    ascending unless ``ascending`` says otherwise): id, name, status, the sort column, metrics, params.

    Metrics, params and a sort metric that are given must be logged by some listed run; the
    defaults (DEFAULT_METRICS, DEFAULT_PARAMS) show "-" where a run has none.
    """
    if kind not in KINDS:
        raise ConfigError(f"runs kind {kind!r} is not one of: {', '.join(KINDS)}")
    if limit < 1:
        raise ConfigError(f"limit {limit} must be at least 1")
    if mlflow.get_experiment_by_name(experiment) is None:
        names = [e.name for e in mlflow.search_experiments()]
        raise RunError(
            f"no experiment named {experiment!r} in {mlflow.get_tracking_uri()} "
            f"(experiments: {', '.join(names) or 'none'})"
        )
    asked_metrics = tuple(metrics or ()) + ((sort_by,) if sort_by else ())
    asked_params = tuple(params or ())
    metrics = DEFAULT_METRICS if metrics is None else metrics
    params = DEFAULT_PARAMS if params is None else params
    sort_by = sort_by or (metrics[0] if metrics else None)
    if sort_by is None:
        order = "attributes.start_time DESC"
        shown = metrics
    else:
        ascending = lower_is_better(sort_by) if ascending is None else ascending
        # MLflow sorts runs without the metric last in either direction, as a table should.
        order = f"metrics.`{sort_by}` {'ASC' if ascending else 'DESC'}"
        shown = metrics if sort_by in metrics else (sort_by, *metrics)
    runs = _search(experiment, kind, filter_string, order, limit)
    columns = ["run_id", "run_name", "status", *shown, *params]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    _check_known("metric", asked_metrics, runs, "metrics.")
    _check_known("param", asked_params, runs, "params.")
    out = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "run_name": runs.get("tags.mlflow.runName", pd.Series([""] * len(runs))),
            "status": runs["status"],
        }
    )
    for m in shown:
        out[m] = runs[f"metrics.{m}"] if f"metrics.{m}" in runs else float("nan")
    for p in params:
        out[p] = runs[f"params.{p}"] if f"params.{p}" in runs else ""
    return out.reset_index(drop=True)


def format_runs(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no runs)"
    return frame.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")
