"""``cnnexp report --study NAME``: what an Optuna study tried and learned, as Markdown + HTML.

What it reads (written by ``cnnexp tune``):

- the study's parent MLflow run, tagged ``cnnexp.study=<name>`` and ``cnnexp.role=study``, with a
  ``trials.csv`` artifact (Optuna's ``study.trials_dataframe()``: number, value, state, params_*)
  and the Optuna storage URL in tag ``cnnexp.storage``;
- optionally the retrained best run, tagged ``cnnexp.study=<name>`` and ``cnnexp.role=best`` (or
  named by the study run's tag ``cnnexp.best_run_id``).

Parameter importances and plots come from Optuna itself, on the study loaded (read-only) from its
storage, provided it is the study this parent run recorded; when the storage cannot be opened
(another machine, a moved file) or holds another study of that name, the same study is rebuilt in
memory from ``trials.csv`` and ``distributions.json`` so the report still has them. A report never
writes into a storage nor creates one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
from optuna.visualization import matplotlib as optuna_plots

from cnnexp.analysis.files import output_dir, save_figure
from cnnexp.errors import RunError
from cnnexp.reports.markdown import image, table, write_report
from cnnexp.tracking import tags
from cnnexp.tuning.artifacts import DISTRIBUTIONS_JSON, TRIALS_CSV
from cnnexp.tuning.parent_run import check_study_name
from cnnexp.tuning.storage import optuna_experimental, read_only_storage

log = logging.getLogger(__name__)

MIN_TRIALS_FOR_IMPORTANCE = 5
IMPORTANCE_SEED = 0  # fANOVA fits a random forest: seeded, a report says the same thing twice
FIGURES = "figures"
HISTORY_PNG, IMPORTANCE_PNG = "optimization_history.png", "param_importances.png"


@dataclass
class StudyReport:
    run_id: str  # the study's parent run, where the report is logged
    markdown: Path
    html: Path
    trials: pd.DataFrame
    importances: dict[str, float]
    artifact_path: str = "report"  # where in the parent run it was logged


def find_runs(name: str) -> tuple[mlflow.entities.Run, mlflow.entities.Run | None]:
    """The study's parent run and, if it exists, the newest retrained-best run."""
    check_study_name(name)  # a quote would break the MLflow filter below
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`{tags.STUDY}` = '{name}'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    by_role = {}
    for run in runs:  # newest first: keep the first of each role
        by_role.setdefault(run.data.tags.get(tags.ROLE), run)
    if tags.ROLE_STUDY not in by_role:
        raise RunError(
            f"no study named {name!r} in {mlflow.get_tracking_uri()}: expected a run tagged "
            f"{tags.STUDY}={name} and {tags.ROLE}=study (made by `cnnexp tune --study-name {name}`)"
        )
    study_run = by_role[tags.ROLE_STUDY]
    best_id = study_run.data.tags.get(tags.BEST_RUN_ID)  # tuning also points at its retrained best directly
    if best_id:
        best = next((r for r in runs if r.info.run_id == best_id), None)
        return study_run, best or by_role.get(tags.ROLE_BEST)
    return study_run, by_role.get(tags.ROLE_BEST)


def load_trials(run_id: str) -> pd.DataFrame:
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TRIALS_CSV)
    except Exception:  # noqa: BLE001 - any store error means the same thing here
        raise RunError(f"study run {run_id} has no {TRIALS_CSV} artifact") from None
    trials = pd.read_csv(path)
    missing = {"number", "value", "state"} - set(trials.columns)
    if missing:
        raise RunError(f"{TRIALS_CSV} of run {run_id} lacks column(s) {', '.join(sorted(missing))}")
    return trials


def load_distributions(run_id: str) -> dict[str, optuna.distributions.BaseDistribution] | None:
    """The parameters' Optuna distributions tuning recorded; None for studies recorded without them."""
    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{DISTRIBUTIONS_JSON}")
    except Exception:  # noqa: BLE001 - absent (older studies): infer them from the values
        return None
    return {k: optuna.distributions.json_to_distribution(v) for k, v in json.loads(text).items()}


def param_columns(trials: pd.DataFrame) -> list[str]:
    return [c for c in trials.columns if c.startswith("params_")]


def _distribution(values: pd.Series) -> optuna.distributions.BaseDistribution:
    values = values.dropna()
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return optuna.distributions.CategoricalDistribution(sorted({str(v) for v in values}))
    if (values == values.round()).all():
        return optuna.distributions.IntDistribution(int(values.min()), int(values.max()))
    return optuna.distributions.FloatDistribution(float(values.min()), float(values.max()))


def _value(value, dist: optuna.distributions.BaseDistribution):
    """A trials.csv cell back as the value Optuna sampled (CSV turns every choice into text or a number)."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return next((c for c in dist.choices if str(c) == str(value) or c == value), str(value))
    return int(value) if isinstance(dist, optuna.distributions.IntDistribution) else float(value)


def study_from_trials(
    trials: pd.DataFrame,
    name: str,
    direction: str,
    distributions: dict[str, optuna.distributions.BaseDistribution] | None = None,
) -> optuna.Study:
    """An in-memory Optuna study holding the completed trials of ``trials.csv``, with the recorded
    distributions (else ones inferred from the values: no log scale or step, observed bounds)."""
    study = optuna.create_study(study_name=name, direction=direction)
    done = trials[trials["state"] == "COMPLETE"]
    inferred = {c.removeprefix("params_"): _distribution(done[c]) for c in param_columns(trials)}
    dists = inferred | (distributions or {})
    for _, row in done.iterrows():
        params = {}
        for col in param_columns(trials):
            key, value = col.removeprefix("params_"), row[col]
            if pd.isna(value):
                continue
            params[key] = _value(value, dists[key])
        used = {k: dists[k] for k in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=used, value=float(row["value"])))
    return study


def load_study(name: str, study_run: mlflow.entities.Run, trials: pd.DataFrame) -> tuple[optuna.Study, str]:
    """The study from its Optuna storage, or rebuilt from trials.csv; with a note saying which."""
    storage = study_run.data.tags.get(tags.STORAGE)
    why = "not recorded"
    if storage:
        try:
            study = optuna.load_study(study_name=name, storage=read_only_storage(storage))
            owner = study.user_attrs.get(tags.PARENT_RUN_ATTR)
            if owner in (None, study_run.info.run_id):  # None: a study recorded by hand, not by tuning
                return study, f"loaded from its Optuna storage `{storage}`"
            why = f"holds another study of that name (parent run {owner})"
        except Exception as e:  # noqa: BLE001 - fall back to the artifact, and say why
            why = "unreachable"
            log.warning("cannot open Optuna storage %s (%s); rebuilding from %s", storage, e, TRIALS_CSV)
    direction = study_run.data.tags.get(tags.DIRECTION, "maximize").lower()
    dists = load_distributions(study_run.info.run_id)
    sources = f"`{TRIALS_CSV}` and `{DISTRIBUTIONS_JSON}`" if dists else f"`{TRIALS_CSV}`"
    note = f"rebuilt from {sources} (storage {why}; direction {direction})"
    return study_from_trials(trials, name, direction, dists), note


def importances(study: optuna.Study) -> dict[str, float]:
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # fANOVA fits a random forest to the trials; on a handful of points its ranking is noise.
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE or not study.best_trial.params:
        return {}
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
        return optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as e:  # e.g. every trial used the same values
        log.warning("no parameter importances: %s", e)
        return {}


def lessons(trials: pd.DataFrame, direction: str, imp: dict[str, float]) -> list[str]:
    """What the search learned, in sentences computed from the trials."""
    done = trials[trials["state"] == "COMPLETE"].copy()
    counts = trials["state"].value_counts()
    out = [
        f"{len(trials)} trials: "
        + ", ".join(f"{int(n)} {state.lower()}" for state, n in counts.items())
        + (
            " (pruned trials were stopped early by the pruner, saving their remaining epochs)."
            if "PRUNED" in counts
            else "."
        )
    ]
    if done.empty:
        return out + ["No trial completed, so there is nothing to learn from yet."]
    maximize = direction == "maximize"
    best = done["value"].max() if maximize else done["value"].min()
    first = done.sort_values("number")["value"].iloc[0]
    gain = (
        f"the search gained {abs(best - first):.4f} over the first trial"
        if best != first
        else "the first trial is still the best: run more trials"
    )
    out.append(f"Best value {best:.4f} against a median of {done['value'].median():.4f} over completed trials; {gain}.")
    ranked = done.sort_values("value", ascending=not maximize)
    top = ranked.head(max(1, len(ranked) // 4))
    for key, share in list(imp.items())[:2]:
        col = f"params_{key}"
        if col not in done:
            continue
        text = f"`{key}` explains {share * 100:.0f}% of the variation in the objective"
        if pd.api.types.is_numeric_dtype(done[col]) and not pd.api.types.is_bool_dtype(done[col]):
            text += f"; the best quarter of trials used {top[col].mean():.4g} on average"
            text += f" against {done[col].mean():.4g} overall."
        else:
            text += f"; the best quarter of trials mostly used {top[col].astype(str).mode().iloc[0]}."
        out.append(text)
    if imp:
        low = [k for k, v in imp.items() if v < 0.05]
        if low:
            out.append(
                f"Hardly mattered (<5% importance): {', '.join(f'`{k}`' for k in low)}; fix them and search the rest."
            )
    return out


def render(name: str, study_run, best_run, trials, study, note, imp) -> str:
    direction = study.direction.name.lower()
    done = trials[trials["state"] == "COMPLETE"].sort_values("value", ascending=direction == "minimize")
    cols = ["number", "value", *param_columns(trials)]
    top = done[cols].head(10).rename(columns=lambda c: c.removeprefix("params_"))
    top["number"] = top["number"].astype(str)
    lines = [
        f"# Study report: {name}",
        "",
        f"Study run `{study_run.info.run_id}`; study {note}; direction {direction}.",
        "",
        "## Best trials",
        "",
        table(top, floatfmt=".4g"),
        "",
        "## Search progress",
        "",
        image(f"{FIGURES}/{HISTORY_PNG}", "optimization history"),
        "",
        "## Parameter importances",
        "",
    ]
    if imp:
        frame = pd.DataFrame({"parameter": list(imp), "importance": list(imp.values())})
        lines += [image(f"{FIGURES}/{IMPORTANCE_PNG}", "parameter importances"), "", table(frame), ""]
    else:
        lines += [
            f"_Importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials with varied parameters._",
            "",
        ]
    lines += pruned_section(study_run)
    lines += ["## Retrained best model", ""]
    if best_run is not None:
        metrics = {k: v for k, v in sorted(best_run.data.metrics.items()) if k.startswith(("test_", "best_val"))}
        lines += [
            f"Run `{best_run.info.run_id}` ({best_run.info.status}) retrained the best configuration: "
            + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
            "",
            f"Its full report: `cnnexp report --run {best_run.info.run_id}`.",
            "",
        ]
    else:
        lines += ["_No retrained best run (tag cnnexp.role=best) found for this study._", ""]
    lines += ["## What the search learned", ""] + [f"- {s}" for s in lessons(trials, direction, imp)] + [""]
    return "\n".join(lines)


def pruned_section(study_run: mlflow.entities.Run) -> list[str]:
    """Why each pruned trial was stopped, from its run's cnnexp.pruned_* tags (nothing if none was)."""
    runs = mlflow.search_runs(
        experiment_ids=[study_run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{study_run.info.run_id}' and tags.`{tags.PRUNED_AT}` != ''",
        output_format="list",
    )
    if not runs:
        return []
    rows = [
        {
            "trial": int(r.data.tags.get(tags.TRIAL_NUMBER, -1)),
            "stopped after epoch": r.data.tags[tags.PRUNED_AT],
            "score": r.data.tags.get(tags.PRUNED_SCORE, ""),
            "threshold": r.data.tags.get(tags.PRUNED_THRESHOLD, "n/a"),
            "rule": r.data.tags.get(tags.PRUNED_RULE, ""),
        }
        for r in runs
    ]
    frame = pd.DataFrame(sorted(rows, key=lambda row: row["trial"]))
    return ["## Pruned trials", "", table(frame), ""]


def _save_axes(ax, path: Path) -> None:
    fig = (ax.flat[0] if isinstance(ax, np.ndarray) else ax).figure
    save_figure(fig, path)


def report_study(name: str, out_dir: Path, log: bool = True) -> StudyReport:
    output_dir(out_dir)
    study_run, best_run = find_runs(name)
    trials = load_trials(study_run.info.run_id)
    study, note = load_study(name, study_run, trials)
    imp = importances(study)
    figures = out_dir / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    with optuna_experimental():  # the matplotlib backend is "experimental"
        _save_axes(optuna_plots.plot_optimization_history(study), figures / HISTORY_PNG)
        if imp:
            _save_axes(optuna_plots.plot_param_importances(study), figures / IMPORTANCE_PNG)
    text = render(name, study_run, best_run, trials, study, note, imp)
    md, html = write_report(text, out_dir, f"cnnexp study report {name}")
    if log:
        mlflow.MlflowClient().log_artifacts(study_run.info.run_id, str(out_dir), "report")
    return StudyReport(study_run.info.run_id, md, html, trials, imp)
