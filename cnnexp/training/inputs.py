"""The run's data as MLflow datasets: what the UI's Dataset column, filter and model lineage show.

Each part of the split is logged with its context (``training``, ``validation``, ``test``), a
digest that identifies its examples (:meth:`Split.part_hash`, so runs on the same test images
share a test digest) and the files it was read from as its source. Only metadata reaches the
tracking store: name, digest, source, the arrays' schema and shape profile, never a pixel.
"""

from __future__ import annotations

import mlflow
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.numpy_dataset import NumpyDataset
from mlflow.data.sources import LocalArtifactDatasetSource

from cnnexp.data.split import Split

# Split part -> the context MLflow records it under.
CONTEXTS = {"train": "training", "val": "validation", "test": "test"}


def part_dataset(dataset: str, split: Split, part: str) -> NumpyDataset:
    """One part as an MLflow dataset; the arrays stay in memory, only their schema and profile are logged."""
    x, y = split.part(part)
    source: DatasetSource = LocalArtifactDatasetSource(split.source or dataset)
    return mlflow.data.from_numpy(
        x, source=source, targets=y, name=f"{dataset}-{CONTEXTS[part]}", digest=split.part_hash(part)
    )


def log_split_inputs(dataset: str, split: Split, parts: tuple[str, ...] = ("train", "val", "test")) -> None:
    """Log ``parts`` of the split as the active run's inputs, each with its context."""
    mlflow.log_inputs(
        datasets=[part_dataset(dataset, split, p) for p in parts],
        contexts=[CONTEXTS[p] for p in parts],
        tags_list=[None] * len(parts),
    )
