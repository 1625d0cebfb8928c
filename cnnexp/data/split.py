"""Seeded, stratified train/validation/test split with a hash that identifies it exactly."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from cnnexp.config import DataConfig
from cnnexp.data.dataset import Dataset
from cnnexp.errors import DataError


@dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    split_hash: str
    data_hash: str
    source: str = ""  # the dataset's files (Dataset.source)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of one part: ``train``, ``val`` or ``test``."""
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def part_hash(self, name: str) -> str:
        """Identifies one part's examples alone: the same test images hash the same whatever the train/val split."""
        x, y = self.part(name)
        h = hashlib.sha256(np.ascontiguousarray(x).tobytes())
        h.update(np.ascontiguousarray(y).astype(np.int64).tobytes())
        return h.hexdigest()[:16]


def _stratified(
    indices: np.ndarray, labels: np.ndarray, size: float | int, seed: int, names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    try:
        return train_test_split(indices, test_size=size, stratify=labels, random_state=seed)
    except ValueError as e:
        # scikit-learn names classes by index ("[2]"); a user knows them by name (a folder's name).
        counts = np.bincount(labels, minlength=len(names))
        few = [f"{names[i]!r} has {counts[i]}" for i in np.flatnonzero((counts > 0) & (counts < 2))]
        reason = f"each class needs at least 2 images here: {', '.join(few)}" if few else str(e)
        raise DataError(f"cannot split stratified ({reason}); the dataset is too small for these fractions") from None


def split_dataset(ds: Dataset, cfg: DataConfig, seed: int) -> Split:
    """Official test sets stay the test set; validation is carved from train. Otherwise both are carved.

    ``train_subset`` then caps the training part (stratified), leaving validation and test whole so
    that cheap runs are still measured on the same data as full ones.
    """
    n = len(ds.y_train)
    all_idx = np.arange(n)
    if ds.x_test is not None:
        test_idx = None
        pool = all_idx
    else:
        pool, test_idx = _stratified(all_idx, ds.y_train, cfg.test_fraction, seed, ds.class_names)
    # val_fraction is a fraction of the whole labelled pool the split starts from.
    val_size = cfg.val_fraction if ds.x_test is not None else cfg.val_fraction / (1 - cfg.test_fraction)
    train_idx, val_idx = _stratified(pool, ds.y_train[pool], val_size, seed, ds.class_names)
    if cfg.train_subset is not None and cfg.train_subset < len(train_idx):
        keep = max(cfg.train_subset, ds.num_classes)
        if keep < len(train_idx):
            train_idx, _ = _stratified(train_idx, ds.y_train[train_idx], len(train_idx) - keep, seed, ds.class_names)

    if test_idx is None:
        x_test, y_test = ds.x_test, ds.y_test
    else:
        x_test, y_test = ds.x_train[test_idx], ds.y_train[test_idx]
    data_hash = ds.content_hash()
    h = hashlib.sha256(data_hash.encode())
    for part in (train_idx, val_idx, test_idx if test_idx is not None else np.array([-1])):
        h.update(np.asarray(part, dtype=np.int64).tobytes())
        h.update(b"|")
    return Split(
        x_train=ds.x_train[train_idx],
        y_train=ds.y_train[train_idx],
        x_val=ds.x_train[val_idx],
        y_val=ds.y_train[val_idx],
        x_test=x_test,
        y_test=y_test,
        class_names=ds.class_names,
        split_hash=h.hexdigest()[:16],
        data_hash=data_hash,
        source=ds.source,
    )
