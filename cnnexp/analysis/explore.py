"""Data exploration: what a dataset looks like before any model sees it, as files and one MLflow run.

Sample grid per class, class counts per split, pixel intensity histogram and mean image per
class, on exactly the split training would use (same config, same seed).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cnnexp.analysis.figures import plt, show_image
from cnnexp.analysis.files import output_dir, save_figure
from cnnexp.config import ExperimentConfig
from cnnexp.data.sources import load_dataset
from cnnexp.data.split import Split, split_dataset
from cnnexp.tracking import tags
from cnnexp.tracking.runs import tracked_run, use_experiment

SAMPLE_GRID = "sample_grid.png"
CLASS_COUNTS = "class_counts.png"
CLASS_COUNTS_CSV = "class_counts.csv"
PIXEL_HISTOGRAM = "pixel_histogram.png"
MEAN_IMAGES = "mean_images.png"
SUMMARY = "summary.md"


@dataclass
class Exploration:
    run_id: str | None
    out_dir: Path
    counts: pd.DataFrame  # class, train, val, test
    files: list[Path]


def class_counts(split: Split) -> pd.DataFrame:
    n = len(split.class_names)
    parts = {"train": split.y_train, "val": split.y_val, "test": split.y_test}
    frame = pd.DataFrame({"class": list(split.class_names)})
    for name, y in parts.items():
        frame[name] = np.bincount(y, minlength=n)
    return frame


def sample_grid(
    x: np.ndarray, y: np.ndarray, class_names: tuple[str, ...], per_class: int = 8, seed: int = 0
) -> Figure:
    """One row per class, ``per_class`` random training images, the class name on the left."""
    rng = np.random.default_rng(seed)
    n = len(class_names)
    fig, axes = plt.subplots(n, per_class, figsize=(1.1 * per_class + 1.5, 1.1 * n), squeeze=False)
    for c, name in enumerate(class_names):
        members = np.flatnonzero(y == c)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False) if len(members) else []
        for k, ax in enumerate(axes[c]):
            if k < len(chosen):
                show_image(ax, x[chosen[k]])
            else:
                ax.axis("off")
        axes[c][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("training images per class")
    fig.tight_layout()
    return fig


def counts_figure(counts: pd.DataFrame) -> Figure:
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(counts) + 2), 4))
    counts.set_index("class")[["train", "val", "test"]].plot.bar(ax=ax, rot=45)
    ax.set_ylabel("images")
    ax.set_title("class counts per split")
    fig.tight_layout()
    return fig


def pixel_histogram(x: np.ndarray) -> Figure:
    """Intensity distribution over every training pixel, one line per channel (log counts)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    channels = x.shape[-1]
    colours = ["black"] if channels == 1 else ["red", "green", "blue"]
    for ch in range(channels):
        hist = np.bincount(x[..., ch].ravel(), minlength=256)
        ax.plot(np.arange(256), hist, color=colours[ch % len(colours)], label="gray" if channels == 1 else colours[ch])
    ax.set_yscale("log")
    ax.set_xlabel("pixel intensity (0-255)")
    ax.set_ylabel("pixels")
    ax.set_title(f"pixel intensities (mean {x.mean():.1f}, std {x.std():.1f})")
    ax.legend()
    fig.tight_layout()
    return fig


def mean_images(x: np.ndarray, y: np.ndarray, class_names: tuple[str, ...]) -> Figure:
    n = len(class_names)
    columns = min(n, 5)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for c, (ax, name) in enumerate(zip(axes.flat, class_names, strict=False)):
        members = x[y == c]
        if len(members):
            ax.axis("on")
            show_image(ax, members.mean(axis=0).round().astype(np.uint8))
        ax.set_title(name, fontsize=9)
    fig.suptitle("mean training image per class")
    fig.tight_layout()
    return fig


def summary_markdown(name: str, split: Split, counts: pd.DataFrame) -> str:
    x = split.x_train
    totals = counts[["train", "val", "test"]].sum()
    share = counts["train"] / totals["train"]
    lines = [
        f"# Exploration: {name}",
        "",
        f"- images: {x.shape[1]}x{x.shape[2]} pixels, {x.shape[3]} channel(s), {len(split.class_names)} classes",
        f"- split: {totals['train']} train, {totals['val']} validation, {totals['test']} test "
        f"(split hash {split.split_hash}, data hash {split.data_hash[:12]}...)",
        f"- training pixels: mean {x.mean():.1f}, std {x.std():.1f}, {np.mean(x == 0) * 100:.1f}% exactly 0",
        _balance(counts["class"], share),
        "",
        counts.to_markdown(index=False),
        "",
    ]
    return "\n".join(lines)


def _balance(names: pd.Series, share: pd.Series) -> str:
    if share.max() - share.min() < 0.0005:
        return f"- class balance (train): balanced, {share.iloc[0] * 100:.1f}% each"
    return (
        f"- class balance (train): smallest {names[share.idxmin()]} {share.min() * 100:.1f}%, "
        f"largest {names[share.idxmax()]} {share.max() * 100:.1f}%"
    )


def write_exploration(cfg: ExperimentConfig, out_dir: Path) -> tuple[Split, pd.DataFrame, list[Path]]:
    split = split_dataset(load_dataset(cfg.data), cfg.data, cfg.train.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = class_counts(split)
    x, y, names = split.x_train, split.y_train, split.class_names
    files = [
        save_figure(sample_grid(x, y, names, seed=cfg.train.seed), out_dir / SAMPLE_GRID),
        save_figure(counts_figure(counts), out_dir / CLASS_COUNTS),
        save_figure(pixel_histogram(x), out_dir / PIXEL_HISTOGRAM),
        save_figure(mean_images(x, y, names), out_dir / MEAN_IMAGES),
    ]
    counts.to_csv(out_dir / CLASS_COUNTS_CSV, index=False)
    (out_dir / SUMMARY).write_text(summary_markdown(cfg.data.dataset, split, counts))
    return split, counts, files + [out_dir / CLASS_COUNTS_CSV, out_dir / SUMMARY]


def explore(cfg: ExperimentConfig, out_dir: Path | None = None, log: bool = True) -> Exploration:
    """Write the exploration files (into ``out_dir`` or a temporary folder) and log them as one run."""
    if out_dir is not None:
        output_dir(out_dir)  # an unusable folder fails here, before any run exists
    if not log:
        assert out_dir is not None, "out_dir is needed when nothing is logged"
        _, counts, files = write_exploration(cfg, out_dir)
        return Exploration(None, out_dir, counts, files)
    use_experiment(cfg.experiment_name)
    with tempfile.TemporaryDirectory() as tmp:
        target = out_dir or Path(tmp)
        name = f"explore-{cfg.data.dataset.replace('/', '_')}"
        with tracked_run(name, tags={tags.KIND: "exploration", tags.DATASET: cfg.data.dataset}) as run:
            mlflow.log_params(
                {k: v for k, v in cfg.flat().items() if k.startswith("data.")} | {"train.seed": cfg.train.seed}
            )
            split, counts, files = write_exploration(cfg, target)
            mlflow.set_tags({tags.DATA_HASH: split.data_hash, tags.SPLIT_HASH: split.split_hash})
            mlflow.log_params({f"split.{k}_size": v for k, v in split.sizes().items()})
            mlflow.log_artifacts(str(target), "exploration")
        return Exploration(run.info.run_id, target, counts, files)
