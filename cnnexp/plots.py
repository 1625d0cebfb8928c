"""Figures logged with runs: training curves and the confusion matrix."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files, never to a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402


def training_curves(history: dict[str, list[float]]) -> Figure:
    """Loss and accuracy per epoch, train against validation, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def confusion_figure(confusion: np.ndarray, class_names: tuple[str, ...], normalize: bool = False) -> Figure:
    matrix = confusion.astype(float)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(5.0, 0.6 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(matrix, display_labels=list(class_names)).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, values_format=".2f" if normalize else ".0f"
    )
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else ""))
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
