"""Image files and PIL images to the uint8 array a model takes: the one decoder of folder datasets,
serving and the web page, so the three can never see the same file differently.

Every path decodes with :func:`read_image` (EXIF orientation applied, as a phone's viewer shows the
photo) and converts with :func:`to_array`. How each colour mode becomes 0-255 pixels is documented
in docs/images.md and tested mode by mode in tests/data/test_images.py.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnexp.errors import DataError

# Formats folder datasets read (Pillow reads them all; serving takes any format Pillow can open).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Bands of a grayscale image, with or without alpha: such images stay one channel.
_GRAY_BANDS = {"1", "L", "I", "F"}
_ALPHA_BANDS = {"A", "a"}
# 16-bit modes: the full 0-65535 range maps to 0-255, so 65535 / 255 = 257 per step.
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def read_image(source: str | Path | IO[bytes]) -> Image.Image:
    """Decode an image file, upright (EXIF orientation applied) and loaded; Pillow's errors pass through."""
    if isinstance(source, (str, Path)):
        # From memory, not from the path: Pillow 13 memory-maps an uncompressed TIFF file and then
        # drops its orientation tag without turning the pixels (tests/data/test_images.py catches it).
        source = io.BytesIO(Path(source).read_bytes())
    with Image.open(source) as img:
        img.load()
        # A new, loaded image either way: turned as the EXIF tag says, or a plain copy.
        return ImageOps.exif_transpose(img)


def open_image(path: Path) -> Image.Image:
    """:func:`read_image` of a file, or a DataError naming it."""
    try:
        return read_image(path)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None


def is_grayscale(image: Image.Image) -> bool:
    """True for 1, L, LA, I, I;16 and F images: they become one channel unless told otherwise."""
    bands = set(image.getbands()) - _ALPHA_BANDS
    return bands <= _GRAY_BANDS


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """I;16*, I and F images scaled to 8-bit L by their range (Pillow's own convert clips at 255).

    16-bit: divide by 257. I (32-bit int) and F (float) have no fixed range, so the values decide:
    0-255 stays as it is, 0-65535 is 16-bit data (/257), F in 0-1 is normalised (x255); anything else
    (negative values, or beyond those ranges) is stretched min-max to 0-255. NaN and inf become 0.
    """
    arr = np.asarray(image, dtype=np.float64)
    arr = np.where(np.isfinite(arr), arr, 0.0)
    low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if image.mode in _SIXTEEN_BIT:
        arr = arr / 257
    elif low >= 0 and high <= 1 and image.mode == "F":
        arr = arr * 255
    elif low >= 0 and high <= 255:
        pass
    elif low >= 0 and high <= 65535:
        arr = arr / 257
    else:
        arr = (arr - low) * 255 / (high - low)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def to_array(image: Image.Image, size: tuple[int, int], channels: int) -> np.ndarray:
    """Convert a PIL image of any mode and size to uint8 (h, w, channels).

    Transparent pixels are composited onto white (a transparent background must not turn black);
    other modes (CMYK, YCbCr, LAB, HSV, palettes) convert to RGB with Pillow, and RGB goes to gray by
    Pillow's ITU-R 601-2 luma.
    """
    mode = image.mode
    try:
        if mode in _SIXTEEN_BIT or mode in ("I", "F"):
            image = _high_depth_to_l(image)
        elif image.has_transparency_data:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        # Every other mode goes through RGB (Pillow lacks some direct conversions, e.g. LAB to L).
        rgb = image if image.mode in ("1", "L", "RGB") else image.convert("RGB")
        image = rgb.convert("L" if channels == 1 else "RGB")
    except ValueError as e:
        raise DataError(f"cannot convert a {mode} image to 8-bit gray or RGB ({e})") from None
    arr = np.asarray(image.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr
