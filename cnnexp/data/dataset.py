"""A loaded dataset: uint8 NHWC images (0-255; scaling happens inside the model) and class names."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # uint8, (n, h, w, c)
    y_train: np.ndarray  # int64 class indices
    class_names: tuple[str, ...]
    x_test: np.ndarray | None = None  # official test set, where the dataset has one
    y_test: np.ndarray | None = None
    source: str = ""  # the file or folder the images were read from (recorded as the MLflow dataset source)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def content_hash(self) -> str:
        """sha256 over every pixel and label: a run records exactly which data it saw."""
        h = hashlib.sha256()
        for arr in (self.x_train, self.y_train, self.x_test, self.y_test):
            if arr is not None:
                h.update(str(arr.shape).encode())
                h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()
