"""One image file or PIL image to the uint8 array a model takes: shared by folder datasets and serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnexp.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def to_array(image: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """Convert a PIL image of any mode and size to uint8 (h, w, channels)."""
    mode = "L" if channels == 1 else "RGB"
    if image.mode in ("RGBA", "LA", "P"):
        # Composite transparency onto white so a transparent background does not turn black.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
