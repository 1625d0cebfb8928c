"""``cnnexp report --run RUN_ID``: one training run explained, as Markdown + HTML, logged with the run.

The numbers come from the run's record (logged metrics, params, tags, curves); the analysis of
mistakes and calibration is recomputed from the run's logged model on its exact test split, and
the report checks that the recomputed test metrics equal the logged ones.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.store.artifact.utils.models import get_model_name_and_version

from cnnexp.analysis import figures as plots
from cnnexp.analysis import files as af
from cnnexp.analysis.diagnose import Analysis, analyze, findings
from cnnexp.analysis.evaluate import evaluate
from cnnexp.analysis.explore import class_counts
from cnnexp.data.split import Split
from cnnexp.reports.markdown import image, table, write_report
from cnnexp.tracking.record import RunRecord, history, load_keras_model, load_record, rebuild_split, run_id_of_model_uri

FIGURES = "figures"
CURVES = "training_curves.png"
# Logged and recomputed metrics may differ by float rounding only; anything more is reported.
MATCH_TOLERANCE = 1e-4
REPORT_METRICS = ("test_accuracy", "test_macro_f1", "test_loss", "test_ece")


@dataclass
class RunReport:
    run_id: str
    markdown: Path
    html: Path
    analysis: Analysis
    metrics: pd.DataFrame  # metric, logged, recomputed, match
    artifact_path: str = "report"  # where in the run it was logged


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def metric_check(logged: dict[str, float], a: Analysis) -> pd.DataFrame:
    recomputed = {**a.evaluation.metrics, "test_ece": a.calibration.ece}
    rows = []
    for name in REPORT_METRICS:
        old, new = logged.get(name), recomputed.get(name)
        if old is None:
            match = "not logged"  # e.g. test_ece, for runs trained before it was logged
        else:
            match = "yes" if abs(old - new) <= MATCH_TOLERANCE else "NO"
        rows.append({"metric": name, "logged": _num(old), "recomputed": _num(new), "match": match})
    return pd.DataFrame(rows)


def _section_data(record: RunRecord, split: Split) -> list[str]:
    cfg, tags = record.config, record.tags
    counts = class_counts(split)
    x = split.x_train
    return [
        "## Data",
        "",
        f"- dataset `{cfg.data.dataset}`: {x.shape[1]}x{x.shape[2]} pixels, {x.shape[3]} channel(s), "
        f"{len(split.class_names)} classes",
        f"- split (seed {cfg.train.seed}): {len(split.y_train)} train, {len(split.y_val)} validation, "
        f"{len(split.y_test)} test; split hash `{tags.get('cnnexp.split_hash', '?')}`",
        f"- data content hash `{tags.get('cnnexp.data_hash', '?')}` (checked against the files used for this report)",
        f"- augmentation: {', '.join(f'{k}={v}' for k, v in vars(cfg.data.augment).items())}",
        "",
        table(counts),
        "",
    ]


def _section_model(record: RunRecord, n_params: int) -> list[str]:
    flat = record.config.flat()
    rows = [{"parameter": k, "value": str(v)} for k, v in flat.items() if k.startswith(("model.", "train."))]
    return [
        "## Model and parameters",
        "",
        f"`{record.config.model.family}` CNN, {record.config.model.blocks} blocks, {n_params:,} parameters. "
        "Every parameter as logged (the full config is the run's `config.yaml`):",
        "",
        table(pd.DataFrame(rows)),
        "",
    ]


def _section_curves(hist: dict[str, list[float]]) -> list[str]:
    lines = ["## Training curves", "", image(f"{FIGURES}/{CURVES}", "training curves"), ""]
    if hist.get("val_loss"):
        frame = pd.DataFrame(
            {"epoch": [str(e) for e in range(1, len(hist["val_loss"]) + 1)], **{k: v for k, v in hist.items()}}
        )
        lines += [table(frame), ""]
    return lines


def _section_metrics(check: pd.DataFrame, logged: dict[str, float]) -> list[str]:
    ok = not (check["match"] == "NO").any()
    lines = [
        "## Test metrics",
        "",
        "Logged with the run, and recomputed for this report from the run's logged model on the same test split:",
        "",
        table(check),
        "",
        "All recomputed values match the logged ones."
        if ok
        else "**Some recomputed values differ from the logged ones.**",
        "",
    ]
    extra = {k: v for k, v in logged.items() if k.startswith("best_val")}
    if extra:
        lines += [", ".join(f"{k} {v:.4f}" for k, v in sorted(extra.items())), ""]
    if "best_val_loss_smoothed" in extra:
        note = "best_val_loss is plain cross-entropy, as test_loss; best_val_loss_smoothed includes label smoothing."
        lines += [note, ""]
    return lines


def render(
    record: RunRecord, split: Split, a: Analysis, check: pd.DataFrame, n_params: int, model_uri: str | None = None
) -> str:
    run = record.run
    started = dt.datetime.fromtimestamp(run.info.start_time / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    f = findings(a)
    lines = [
        f"# Report: run {run.info.run_name or ''} (`{record.run_id}`)",
        "",
        f"Status {run.info.status}, started {started}; cnnexp {record.tags.get('cnnexp.version', '?')}, "
        f"git commit `{record.tags.get('cnnexp.git_commit', '?')[:12]}`. "
        f"Re-run it with `cnnexp reproduce {record.run_id}`.",
        "",
        *([f"Model analysed: registered version `{model_uri}`, trained by this run.", ""] if model_uri else []),
        *_section_data(record, split),
        *_section_model(record, n_params),
        *_section_curves(a.history),
        *_section_metrics(check, record.metrics),
        "## Confusion matrix",
        "",
        image(f"{FIGURES}/{af.CONFUSION}", "confusion matrix"),
        image(f"{FIGURES}/{af.CONFUSION_NORMALIZED}", "row-normalised confusion matrix"),
        "",
        "Per class:",
        "",
        table(a.evaluation.per_class),
        "",
        "## Misclassifications",
        "",
        "Most-confused class pairs (rate = share of the true class):",
        "",
        table(a.confused_pairs),
        "",
        image(f"{FIGURES}/{af.GALLERY}", "most confidently wrong test images"),
        "",
        table(a.confidently_wrong),
        "",
        "## Calibration",
        "",
        f"Expected calibration error {a.calibration.ece:.4f} over 10 confidence bins.",
        "",
        image(f"{FIGURES}/{af.RELIABILITY}", "reliability diagram"),
        "",
        "## Findings",
        "",
    ]
    for title, sentences in f.items():
        lines += [f"### {title.capitalize()}", ""] + [f"- {s}" for s in sentences] + [""]
    return "\n".join(lines)


def report_run(run_id: str | None, out_dir: Path, log: bool = True, model_uri: str | None = None) -> RunReport:
    """Write ``report.md``, ``report.html`` and ``figures/`` into ``out_dir``; log them as ``report/``
    (a model version's report as ``report/models/NAME-vN/``).

    With ``model_uri`` (``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``), the registered model
    version is analysed, on the test split of the training run it came from.
    """
    af.output_dir(out_dir)  # an unusable folder fails before any work
    if model_uri:
        run_id = run_id_of_model_uri(model_uri)
    assert run_id, "a run id or a model URI is needed"
    record = load_record(run_id)
    split = rebuild_split(record)
    model = load_keras_model(run_id, model_uri)
    ev = evaluate(model, split.x_test, split.y_test, split.class_names)
    a = analyze(ev, split.class_names, history(run_id), record.config, split.x_test.shape[1:])
    figures = out_dir / FIGURES
    af.write_analysis(a, split.x_test, figures)
    af.save_figure(plots.training_curves(a.history), figures / CURVES)
    check = metric_check(record.metrics, a)
    text = render(record, split, a, check, model.count_params(), model_uri)
    md, html = write_report(text, out_dir, f"cnnexp report {model_uri or run_id}")
    where = "report"
    if model_uri:  # a version's report goes next to, not over, the run's own report/
        name, version = get_model_name_and_version(mlflow.MlflowClient(), model_uri)
        where = f"report/models/{name}-v{version}"
    if log:
        # Logging artifacts to a finished run does not reopen it: its status stays as it ended.
        mlflow.MlflowClient().log_artifacts(run_id, str(out_dir), where)
    return RunReport(run_id, md, html, a, check, where)
