"""A user's own images: one sub-folder per class; PNG, JPEG, BMP, TIFF or WebP of any size and colour mode."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from cnnexp.data.dataset import Dataset
from cnnexp.data.images import IMAGE_SUFFIXES, is_grayscale, open_image, to_array
from cnnexp.errors import DataError

log = logging.getLogger(__name__)


def load_folder(root: Path, size: tuple[int, int], channels: int | None = None, skip_bad: bool = False) -> Dataset:
    if not root.is_dir():
        raise DataError(f"folder dataset {root} does not exist or is not a directory")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"folder dataset {root} needs at least two class sub-folders, found {len(class_dirs)}")
    images: list[Image.Image] = []
    labels: list[int] = []
    for index, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                log.debug("ignoring non-image file %s", path)
                continue
            try:
                images.append(open_image(path))
            except DataError as e:
                if not skip_bad:
                    raise DataError(f"{e} (pass data.skip_bad_images=true to skip such files)") from None
                warnings.warn(f"skipping {e}", stacklevel=2)
                continue
            labels.append(index)
    for index, class_dir in enumerate(class_dirs):
        if index not in labels:
            raise DataError(f"class folder {class_dir} holds no readable image ({'/'.join(IMAGE_SUFFIXES)})")
    if channels is None:
        channels = 1 if all(is_grayscale(img) for img in images) else 3
    x = np.stack([to_array(img, size, channels) for img in images])
    labels_arr, classes = np.asarray(labels, dtype=np.int64), tuple(d.name for d in class_dirs)
    return Dataset(f"folder:{root}", x, labels_arr, classes, source=str(root.resolve()))
