"""What the served model accepts, and how each request row becomes a PIL image.

A request is a table with one row per image and two optional columns: ``image`` (base64 text of
a PNG/JPEG file) and ``pixels`` (a nested list of 0-255 numbers, height x width for grayscale or
height x width x 1/3/4 for grayscale/RGB/RGBA). Each row fills exactly one of them. One signature
covers both, so MLflow's scoring server validates every request against it before ``predict``.

Every bad row raises an ``MlflowException`` with ``INVALID_PARAMETER_VALUE``: MLflow's scoring
server answers it with a 400 whose message names the row and what was expected.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import AnyType, ColSpec, DataType, Schema
from PIL import Image, UnidentifiedImageError

from cnnexp.data.images import read_image

IMAGE_COLUMN = "image"
PIXELS_COLUMN = "pixels"
# Larger arrays are almost certainly a client bug, and a 10k x 10k list would exhaust memory.
MAX_SIDE = 4096
_CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def bad_input(message: str) -> MlflowException:
    # INVALID_PARAMETER_VALUE makes MLflow's scoring server answer 400 with this message.
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def input_schema() -> Schema:
    """Both columns optional: the signature accepts either per row; ``predict`` checks exactly one."""
    return Schema(
        [
            ColSpec(DataType.string, IMAGE_COLUMN, required=False),
            # Untyped: nesting depth differs between grayscale and colour, and rows that send an
            # image file leave it empty (NaN in record-oriented requests, which Array() rejects).
            # decode_pixels checks every value and says which row is wrong and why.
            ColSpec(AnyType(), PIXELS_COLUMN, required=False),
        ]
    )


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, (list, np.ndarray)) and len(value) == 0


def decode_image(value: Any, row: int) -> Image.Image:
    """Base64 text (or raw bytes, from Python callers) of an image file -> upright PIL image."""
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise bad_input(f"row {row}: '{IMAGE_COLUMN}' is not valid base64 text of a PNG or JPEG file") from None
    else:
        # An array here means a batched request format (`inputs`/`instances`) put all rows in one cell.
        hint = "; send one image per row with dataframe_split or dataframe_records" if hasattr(value, "shape") else ""
        raise bad_input(f"row {row}: '{IMAGE_COLUMN}' must be base64 text, got {type(value).__name__}{hint}")
    if not raw:
        raise bad_input(f"row {row}: '{IMAGE_COLUMN}' is empty")
    try:
        return read_image(io.BytesIO(raw))
    except UnidentifiedImageError:
        raise bad_input(f"row {row}: '{IMAGE_COLUMN}' is not a PNG or JPEG image") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise bad_input(f"row {row}: '{IMAGE_COLUMN}' is not a readable PNG or JPEG image ({e})") from None


def decode_pixels(value: Any, row: int) -> Image.Image:
    """A nested list (or array) of 0-255 numbers, (h, w) or (h, w, 1|3|4) -> PIL image."""
    expected = "expected a height x width (grayscale) or height x width x 1/3/4 (gray/RGB/RGBA) array of numbers 0-255"
    try:
        arr = np.asarray(value)
    except ValueError:
        raise bad_input(f"row {row}: '{PIXELS_COLUMN}' is ragged (rows of unequal length); {expected}") from None
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        raise bad_input(f"row {row}: '{PIXELS_COLUMN}' must hold only numbers; {expected}")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in _CHANNEL_MODES)):
        raise bad_input(f"row {row}: '{PIXELS_COLUMN}' has shape {arr.shape}; {expected}")
    if min(arr.shape[:2]) < 1 or max(arr.shape[:2]) > MAX_SIDE:
        raise bad_input(f"row {row}: '{PIXELS_COLUMN}' is {arr.shape[0]}x{arr.shape[1]}; sides must be 1-{MAX_SIDE}")
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255:
        raise bad_input(f"row {row}: '{PIXELS_COLUMN}' values must be numbers from 0 to 255")
    mode = "L" if arr.ndim == 2 else _CHANNEL_MODES[arr.shape[-1]]
    return Image.fromarray(np.rint(arr).astype(np.uint8), mode=mode)


def request_images(frame: Any) -> list[Image.Image]:
    """One PIL image per row of a request table, or an error naming the first bad row."""
    if not isinstance(frame, pd.DataFrame):
        raise bad_input(f"expected a table with an '{IMAGE_COLUMN}' or '{PIXELS_COLUMN}' column")
    columns = [c for c in (IMAGE_COLUMN, PIXELS_COLUMN) if c in frame.columns]
    if not columns:
        raise bad_input(
            f"expected a column '{IMAGE_COLUMN}' (base64 PNG/JPEG files) or '{PIXELS_COLUMN}' (pixel arrays)"
            " in every row; the request has neither"
        )
    if len(frame) == 0:
        raise bad_input("the request holds no rows: send at least one image")
    images = []
    for row, (_, record) in enumerate(frame.iterrows()):
        given = [c for c in columns if not _missing(record[c])]
        if len(given) != 1:
            what = "both" if len(given) == 2 else "neither"
            raise bad_input(f"row {row}: fill exactly one of '{IMAGE_COLUMN}' and '{PIXELS_COLUMN}' ({what} given)")
        decode = decode_image if given[0] == IMAGE_COLUMN else decode_pixels
        images.append(decode(record[given[0]], row))
    return images
