"""The study's report on its parent run: the trials table, its parameters' distributions and Optuna's
own plots (matplotlib PNGs)."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import optuna  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from cnnexp.tracking.runs import retry_locked  # noqa: E402

log = logging.getLogger(__name__)

TRIALS_CSV = "trials.csv"
# Optuna's distributions (log scale, step, bounds) of the parameters in trials.csv: a study rebuilt
# from the two when its storage is out of reach is the same study, with the same importances.
DISTRIBUTIONS_JSON = "distributions.json"

# bbox "tight": long dotted parameter names must not be cut off at the figure's edge.
SAVE = {"bbox_inches": "tight", "dpi": 100}
PLOTS = {
    "plots/optimization_history.png": optuna_plots.plot_optimization_history,
    "plots/param_importances.png": optuna_plots.plot_param_importances,
    "plots/parallel_coordinate.png": optuna_plots.plot_parallel_coordinate,
    "plots/slice.png": optuna_plots.plot_slice,
    "plots/intermediate_values.png": optuna_plots.plot_intermediate_values,
}


@contextmanager
def quiet_category_axes() -> Iterator[None]:
    """Optuna plots categorical params as strings; matplotlib.category logs an INFO line for every such axis."""
    logger = logging.getLogger("matplotlib.category")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def log_report(parent_id: str, study: optuna.Study) -> list[str]:
    """Write trials.csv and every plot that the study's trials allow; returns the artifact paths logged."""
    client = mlflow.MlflowClient()
    frame = study.trials_dataframe()
    retry_locked(lambda: client.log_text(parent_id, frame.to_csv(index=False), TRIALS_CSV))
    # A resumed space only widens ranges (tuning.resume.check_resumable): the latest trial's holds every value.
    latest = {key: dist for t in study.get_trials(deepcopy=False) for key, dist in t.distributions.items()}
    text = json.dumps({k: optuna.distributions.distribution_to_json(d) for k, d in sorted(latest.items())}, indent=2)
    retry_locked(lambda: client.log_text(parent_id, text, DISTRIBUTIONS_JSON))
    with quiet_category_axes():
        return [TRIALS_CSV, DISTRIBUTIONS_JSON, *_log_plots(client, parent_id, study)]


def _log_plots(client: mlflow.MlflowClient, parent_id: str, study: optuna.Study) -> list[str]:
    logged = []
    for path, plot in PLOTS.items():
        try:
            with warnings.catch_warnings():
                # Optuna marks its matplotlib backend experimental, and sparse studies make matplotlib
                # warn about flat axes: noise in every study's log.
                warnings.simplefilter("ignore")
                ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            # e.g. importances need two completed trials with differing params
            log.info("skipping %s: %s", path, e)
            continue
        fig = _figure(ax)
        fig.set_size_inches(max(fig.get_size_inches()[0], 10), max(fig.get_size_inches()[1], 6))
        retry_locked(lambda f=fig, p=path: client.log_figure(parent_id, f, p, save_kwargs=SAVE))
        plt.close(fig)
        logged.append(path)
    return logged


def _figure(ax) -> plt.Figure:
    # The plots return an Axes, or an array of Axes (slice plot with several params).
    first = ax.flat[0] if hasattr(ax, "flat") else ax
    return first.get_figure()
