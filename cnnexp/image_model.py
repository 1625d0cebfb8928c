"""The logged, registered and served model: an MLflow pyfunc that takes image files.

It wraps the trained Keras model with what serving needs and Keras does not carry: decoding
base64 PNG/JPEG, converting any size and colour mode to the model's input, and class names.
Scaling to [0, 1] already lives inside the Keras model.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from PIL import Image, UnidentifiedImageError

from cnnexp.folder_dataset import to_array

IMAGE_COLUMN = "image"


def _bad_input(message: str) -> MlflowException:
    # INVALID_PARAMETER_VALUE makes MLflow's scoring server answer 400 with this message.
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def encode_image(image: np.ndarray | Image.Image, fmt: str = "PNG") -> str:
    """Base64 text of an image file: what a client puts in the ``image`` column."""
    if isinstance(image, np.ndarray):
        arr = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        image = Image.fromarray(arr.astype(np.uint8))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_image(value: Any, row: int) -> Image.Image:
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _bad_input(f"row {row}: '{IMAGE_COLUMN}' is not valid base64 text of a PNG or JPEG file") from None
    else:
        raise _bad_input(f"row {row}: '{IMAGE_COLUMN}' must be base64 text, got {type(value).__name__}")
    if not raw:
        raise _bad_input(f"row {row}: '{IMAGE_COLUMN}' is empty")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise _bad_input(f"row {row}: '{IMAGE_COLUMN}' is not a readable PNG or JPEG image ({e})") from None


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc: DataFrame with a base64 ``image`` column -> label, class_index, probabilities."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.class_names: list[str] = meta["class_names"]
        self.input_shape: tuple[int, int, int] = tuple(meta["input_shape"])

    def to_pixels(self, images: list[Image.Image]) -> np.ndarray:
        h, w, c = self.input_shape
        return np.stack([to_array(img, (h, w), c) for img in images]).astype(np.float32)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame) or IMAGE_COLUMN not in model_input.columns:
            raise _bad_input(f"expected a table with an '{IMAGE_COLUMN}' column of base64 PNG/JPEG files")
        if len(model_input) == 0:
            raise _bad_input("the request holds no rows: send at least one image")
        images = [decode_image(v, i) for i, v in enumerate(model_input[IMAGE_COLUMN].tolist())]
        return self.predict_pixels(self.to_pixels(images))

    def predict_pixels(self, pixels: np.ndarray) -> pd.DataFrame:
        probs = self.model.predict(pixels, verbose=0)
        index = probs.argmax(axis=1)
        return pd.DataFrame(
            {
                "label": [self.class_names[i] for i in index],
                "class_index": index.astype(np.int64),
                "probabilities": [p.astype(float).tolist() for p in probs],
            }
        )


def log_image_model(model: keras.Model, class_names: tuple[str, ...], example_images: np.ndarray) -> None:
    """Log ``model`` under the active run as the ``model`` artifact, with signature and input example."""
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / "model.keras"
        model.save(keras_path)
        meta_path = Path(tmp) / "meta.json"
        meta = {"class_names": list(class_names), "input_shape": list(model.input_shape[1:])}
        meta_path.write_text(json.dumps(meta))
        example = pd.DataFrame({IMAGE_COLUMN: [encode_image(img) for img in example_images[:2]]})
        # An in-memory instance computes the example output; the logged model is built from code
        # (pyfunc_entry.py) and the saved .keras file, so no pickle travels with it.
        probe = ImageClassifier()
        probe.model, probe.class_names, probe.input_shape = model, list(class_names), tuple(meta["input_shape"])
        signature = infer_signature(example, probe.predict(None, example))
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
            artifacts={"keras_model": str(keras_path), "meta": str(meta_path)},
            signature=signature,
            input_example=example,
            code_paths=[str(Path(__file__).resolve().parent)],
        )
