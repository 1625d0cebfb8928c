"""A user's own images: one sub-folder per class, PNG or JPEG, any size, RGB or grayscale."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnexp.data.sources import IMAGE_SUFFIXES, DataError, Dataset

log = logging.getLogger(__name__)


def to_array(image: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """Convert a PIL image of any mode and size to uint8 (h, w, channels). Shared with serving."""
    mode = "L" if channels == 1 else "RGB"
    if image.mode in ("RGBA", "LA", "P"):
        # Composite transparency onto white so a transparent background does not turn black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


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
                images.append(_open(path))
            except DataError as e:
                if not skip_bad:
                    raise DataError(f"{e} (pass data.skip_bad_images=true to skip such files)") from None
                warnings.warn(f"skipping {e}", stacklevel=2)
                continue
            labels.append(index)
    for index, class_dir in enumerate(class_dirs):
        if index not in labels:
            raise DataError(f"class folder {class_dir} holds no readable PNG/JPEG image")
    if channels is None:
        channels = 1 if all(img.mode in ("L", "1", "I;16", "I") for img in images) else 3
    x = np.stack([to_array(img, size, channels) for img in images])
    return Dataset(f"folder:{root}", x, np.asarray(labels, dtype=np.int64), tuple(d.name for d in class_dirs))
