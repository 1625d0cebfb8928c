"""Figures logged with runs and reports: training curves, confusion matrices, reliability, errors."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files, never to a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from cnnexp.analysis.diagnose import Calibration  # noqa: E402


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


def show_image(ax, image: np.ndarray) -> None:
    """One uint8 (h, w, c) image on an axis, grayscale or colour, no ticks. Shared with exploration."""
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image.astype(np.uint8))
    ax.set_xticks([])
    ax.set_yticks([])


def reliability_diagram(cal: Calibration) -> Figure:
    """Accuracy against confidence per bin, with the diagonal of perfect calibration and the bin counts."""
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    bins = cal.bins
    centers = (bins["bin_lower"] + bins["bin_upper"]) / 2
    width = float(bins["bin_upper"].iloc[0] - bins["bin_lower"].iloc[0])
    ax.bar(centers, bins["accuracy"].fillna(0), width=width * 0.9, edgecolor="black", label="accuracy")
    gap = (bins["confidence"] - bins["accuracy"]).fillna(0)
    ax.bar(centers, gap, bottom=bins["accuracy"].fillna(0), width=width * 0.9, color="red", alpha=0.3, label="gap")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"reliability diagram (ECE {cal.ece:.4f})")
    ax.legend(loc="upper left")
    ax_count.bar(centers, bins["count"], width=width * 0.9, color="gray")
    ax_count.set_yscale("log" if bins["count"].max() > 100 else "linear")
    ax_count.set_xlabel("confidence")
    ax_count.set_ylabel("images")
    ax_count.set_xlim(0, 1)
    fig.tight_layout()
    return fig


GALLERY_TITLE = "most confidently wrong test images: true -> predicted (confidence)"


def error_gallery(images: np.ndarray, wrong: pd.DataFrame, columns: int = 8, title: str = GALLERY_TITLE) -> Figure:
    """Wrong test images (the most confident first), each titled true -> predicted (confidence)."""
    n = max(len(wrong), 1)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, r) in zip(axes.flat, wrong.iterrows(), strict=False):
        ax.axis("on")
        show_image(ax, images[int(r["index"])])
        ax.set_title(f"{r['true']}\n-> {r['predicted']} ({r['confidence']:.2f})", fontsize=7)
    if not len(wrong):
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
