"""Writers for tiny files in the real on-disk formats the loaders read (tests make their own data)."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from cnnexp.data.sources import IDX_FILES


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_idx_dataset(directory: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> dict:
    """Four MNIST-style IDX .gz files, 28x28, 10 balanced classes."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": np.arange(n_train, dtype=np.uint8) % 10,
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for key, name in IDX_FILES.items():
        write_idx(directory / name, arrays[key])
    return arrays


def write_cifar_batches(directory: Path, per_batch: int = 20, seed: int = 0, archive: bool = False) -> Path:
    """CIFAR-10 python batches (pickled dicts, CHW-flattened rows), optionally as the .tar.gz archive."""
    rng = np.random.default_rng(seed)
    batches = directory / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8),
            b"labels": [i % 10 for i in range(per_batch)],
        }
        with open(batches / name, "wb") as f:
            pickle.dump(batch, f)
    if archive:
        with tarfile.open(directory / "cifar-10-python.tar.gz", "w:gz") as tar:
            tar.add(batches, arcname="cifar-10-batches-py")
        for p in batches.iterdir():
            p.unlink()
        batches.rmdir()
    return batches


def write_image_folder(root: Path, per_class: int = 6, classes: tuple[str, ...] = ("cats", "dogs", "owls")) -> Path:
    """PNG and JPEG files of mixed sizes and colour modes, one sub-folder per class."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (20 + 7 * i, 30 + 3 * c)
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            img = Image.fromarray(pixels)
            if i % 3 == 1:
                img = img.convert("L")
            if i % 3 == 2:
                img = img.convert("RGBA")
            img.save(folder / f"img{i}.{'jpg' if i % 2 and img.mode != 'RGBA' else 'png'}")
    return root
