"""An analysis written as files: figures, tables and the written summary, in one folder.

Training logs this folder with every run (artifact path ``analysis/``); reports and
``cnnexp report`` write the same files for runs and registered model versions after the fact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnexp.analysis import figures as plots
from cnnexp.analysis.diagnose import Analysis, summary_markdown
from cnnexp.analysis.figures import error_gallery, reliability_diagram
from cnnexp.errors import ConfigError

# File names inside the analysis folder; reports link to them by these names.
CONFUSION = "confusion_matrix.png"
CONFUSION_NORMALIZED = "confusion_matrix_normalized.png"
RELIABILITY = "reliability_diagram.png"
GALLERY = "misclassified.png"
PER_CLASS = "per_class_report.csv"
CONFUSED_PAIRS = "confused_pairs.csv"
CONFIDENTLY_WRONG = "confidently_wrong.csv"
CALIBRATION_BINS = "calibration_bins.csv"
SUMMARY = "summary.md"


def output_dir(path: Path) -> Path:
    """``path``, created with its parents, or a ConfigError saying in one line why it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"output folder {str(path)!r} cannot be created: {e.strerror or e}") from None
    return path


def save_figure(fig, path: Path) -> Path:
    # 100 dpi keeps a 10-class confusion matrix legible at about 50 KB.
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plots.close(fig)
    return path


def write_analysis(a: Analysis, test_images: np.ndarray, out_dir: Path, confusion: bool = True) -> list[Path]:
    """Write every analysis file into ``out_dir``; ``confusion=False`` skips the matrices (training logs them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = a.evaluation
    files = []
    if confusion:
        files.append(save_figure(plots.confusion_figure(ev.confusion, a.class_names), out_dir / CONFUSION))
        files.append(
            save_figure(
                plots.confusion_figure(ev.confusion, a.class_names, normalize=True), out_dir / CONFUSION_NORMALIZED
            )
        )
    files.append(save_figure(reliability_diagram(a.calibration), out_dir / RELIABILITY))
    files.append(save_figure(error_gallery(test_images, a.confidently_wrong), out_dir / GALLERY))
    tables = {
        PER_CLASS: ev.per_class,
        CONFUSED_PAIRS: a.confused_pairs,
        CONFIDENTLY_WRONG: a.confidently_wrong,
        CALIBRATION_BINS: a.calibration.bins,
    }
    for name, frame in tables.items():
        frame.to_csv(out_dir / name, index=False)
        files.append(out_dir / name)
    (out_dir / SUMMARY).write_text(summary_markdown(a))
    files.append(out_dir / SUMMARY)
    return files


def log_analysis(a: Analysis, test_images: np.ndarray) -> dict[str, float]:
    """Log the analysis folder (``analysis/``) and ``test_ece`` to the active MLflow run."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        write_analysis(a, test_images, Path(tmp), confusion=False)  # training logs plots/confusion_*.png itself
        mlflow.log_artifacts(tmp, "analysis")
    metrics = {"test_ece": a.calibration.ece}
    mlflow.log_metrics(metrics)
    return metrics
