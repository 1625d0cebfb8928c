"""Request rows -> images: both input kinds, and an error naming the row for every bad one."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models.utils import _enforce_schema
from mlflow.pyfunc.scoring_server import infer_and_parse_data
from PIL import Image

from cnnexp.serving.requests import input_schema, request_images


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_files_and_arrays_of_any_mode():
    rgb = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    frame = pd.DataFrame(
        {
            "image": [_b64(Image.fromarray(rgb)), None, None, None],
            "pixels": [None, rgb[..., 0].tolist(), rgb.tolist(), np.dstack([rgb, rgb[..., :1]]).astype(float).tolist()],
        }
    )
    images = request_images(frame)
    assert [img.mode for img in images] == ["RGB", "L", "RGB", "RGBA"]
    assert all(img.size == (7, 5) for img in images)
    assert np.array_equal(np.asarray(images[0]), rgb) and np.array_equal(np.asarray(images[2]), rgb)


def test_record_requests_with_missing_keys_pass_the_signature():
    """What MLflow's scoring server does with a JSON body before calling predict."""
    schema = input_schema()
    records = [{"pixels": [[0, 255], [255, 0]]}, {"image": _b64(Image.new("L", (3, 3)))}]
    frame = _enforce_schema(infer_and_parse_data({"dataframe_records": records}, schema), schema)
    assert [img.size for img in request_images(frame)] == [(2, 2), (3, 3)]


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"image": []}), "holds no rows"),
        (pd.DataFrame({"other": [1]}), "request has neither"),
        (pd.DataFrame({"image": ["aGk="]}), "row 0: 'image' is not a PNG or JPEG image"),
        (pd.DataFrame({"image": [""]}), "row 0: 'image' is empty"),
        (pd.DataFrame({"pixels": [[[1.5, float("nan")]]]}), "from 0 to 255"),
        (pd.DataFrame({"pixels": [np.zeros((2, 2, 2)).tolist()]}), "has shape (2, 2, 2)"),
        (pd.DataFrame({"pixels": [np.zeros((5000, 1)).tolist()]}), "sides must be 1-4096"),
        (pd.DataFrame({"pixels": [[[1, 2]], [[True]]]}), "row 1: 'pixels' must hold only numbers"),
        (pd.DataFrame({"image": [np.array(["aGk=", "aGk="])]}), "one image per row with dataframe_split"),
        ("not a table", "expected a table"),
    ],
)
def test_bad_rows_raise_invalid_parameter_value(frame, message):
    with pytest.raises(MlflowException, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        request_images(frame)
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
