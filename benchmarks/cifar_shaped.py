"""A CIFAR-10-shaped task for the benchmarks, since the real CIFAR-10 cannot be downloaded here.

Fashion-MNIST's images, padded to 32x32 and tinted (a random foreground and background colour per
image, so the three channels differ), are written as CIFAR-10 python batches (``data_batch_1..5``,
``test_batch``: 50,000 + 10,000 images, 10 classes) and read back by cnnexp's own CIFAR-10 loader
(``--dataset cifar10 --data-dir DIR``). The task has CIFAR-10's shape and format, not its
difficulty: the figures it gives say whether a gain holds on 32x32 RGB input, not what CIFAR-10
would score.

    python -m benchmarks.cifar_shaped /tmp/cifar-shaped
    python -m benchmarks.time_to_accuracy --dataset cifar10 --data-dir /tmp/cifar-shaped --time-budgeted --budgets 5
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np


def tinted(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 28, 28) grayscale to (n, 3072) CIFAR rows: padded to 32x32, coloured per image."""
    n = len(images)
    gray = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.float32) / 255
    fg = rng.uniform(0.4, 1.0, (n, 1, 1, 3))
    bg = rng.uniform(0.0, 0.4, (n, 1, 1, 3))
    rgb = gray[..., None] * fg + (1 - gray[..., None]) * bg
    return (rgb * 255).round().astype(np.uint8).transpose(0, 3, 1, 2).reshape(n, -1)  # channel-first rows


def write(out: Path, seed: int = 0) -> Path:
    from cnnexp.config import DataConfig
    from cnnexp.data.sources import load_dataset

    data = load_dataset(DataConfig(dataset="fashion_mnist"))
    rng = np.random.default_rng(seed)
    batches = out / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    x_train = tinted(data.x_train[:50_000, ..., 0], rng)
    y_train = data.y_train[:50_000]
    parts = [(f"data_batch_{i + 1}", x_train[i::5], y_train[i::5]) for i in range(5)]
    parts.append(("test_batch", tinted(data.x_test[..., 0], rng), data.y_test))
    for name, x, y in parts:
        with open(batches / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": [int(v) for v in y]}, f)
    return batches


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    print(f"wrote {write(p.parse_args(argv).out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
