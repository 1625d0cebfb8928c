"""The logged, registered and served model: an MLflow pyfunc that takes image files.

It wraps the trained Keras model with what serving needs and Keras does not carry: decoding
base64 image files (cnnexp/data/images.py), converting any size and colour mode to the model's input, and class names.
Scaling to [0, 1] already lives inside the Keras model.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array
from PIL import Image

# Registers cnnexp's own layers (flip test-time augmentation) that a saved model may hold, so
# the serving process can load it.
import cnnexp.models  # noqa: F401
from cnnexp.data.images import to_array
from cnnexp.errors import DataError
from cnnexp.serving.requests import IMAGE_COLUMN, PIXELS_COLUMN, bad_input, input_schema, request_images


def encode_image(image: np.ndarray | Image.Image, fmt: str = "PNG") -> str:
    """Base64 text of an image file: what a client puts in the ``image`` column."""
    if isinstance(image, np.ndarray):
        arr = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        image = Image.fromarray(arr.astype(np.uint8))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# Images per call of the compiled graph: bounds the memory a large request takes.
PREDICT_CHUNK = 256


def predict_probabilities(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """Class probabilities of float32 ``pixels`` (n, h, w, c), n >= 1, in chunks of PREDICT_CHUNK.

    ``predict_on_batch`` runs Keras' compiled predict graph directly. ``model.predict`` runs the
    same graph but builds a tf.data pipeline, an iterator and callbacks on every call: about
    100 ms per request on a 2-core CPU, 50-100 times the model itself for one image
    (benchmarks/serving.py measures both).
    """
    chunks = [model.predict_on_batch(pixels[i : i + PREDICT_CHUNK]) for i in range(0, len(pixels), PREDICT_CHUNK)]
    return np.concatenate([np.asarray(c) for c in chunks])


# What predict returns, declared rather than inferred: inference warns about the integer
# class_index column, which is an output and can never be missing.
OUTPUT_SCHEMA = Schema(
    [
        ColSpec(DataType.string, "label"),
        ColSpec(DataType.long, "class_index"),
        ColSpec(Array(DataType.double), "probabilities"),
    ]
)


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """pyfunc: rows of base64 ``image`` files or ``pixels`` arrays -> label, class_index, probabilities."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)
        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.class_names: list[str] = meta["class_names"]
        self.input_shape: tuple[int, int, int] = tuple(meta["input_shape"])

    def to_pixels(self, images: list[Image.Image]) -> np.ndarray:
        h, w, c = self.input_shape
        arrays = []
        for row, img in enumerate(images):
            try:
                arrays.append(to_array(img, (h, w), c))
            except DataError as e:
                raise bad_input(f"row {row}: {e}") from None
        return np.stack(arrays).astype(np.float32)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.predict_pixels(self.to_pixels(request_images(model_input)))

    def predict_pixels(self, pixels: np.ndarray) -> pd.DataFrame:
        probs = predict_probabilities(self.model, pixels)
        index = probs.argmax(axis=1)
        return pd.DataFrame(
            {
                "label": [self.class_names[i] for i in index],
                "class_index": index.astype(np.int64),
                "probabilities": [p.astype(float).tolist() for p in probs],
            }
        )


# What the logged model imports (its code travels with it under code/). Listed explicitly: MLflow's
# inference would add `cnnexp` itself, which no package index has, so the Docker image MLflow
# generates (and `--env-manager virtualenv`) could not install it.
_SERVING_PACKAGES = ("tensorflow", "keras", "pillow", "numpy", "pandas", "pyyaml")


def serving_requirements() -> list[str]:
    """Pinned to this environment's versions, as MLflow's own inference would."""
    return [f"mlflow=={mlflow.__version__}"] + [f"{dist}=={version(dist)}" for dist in _SERVING_PACKAGES]


def log_image_model(model: keras.Model, class_names: tuple[str, ...], example_images: np.ndarray) -> None:
    """Log ``model`` under the active run as the ``model`` artifact, with signature and input example."""
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / "model.keras"
        model.save(keras_path)
        meta_path = Path(tmp) / "meta.json"
        meta = {"class_names": list(class_names), "input_shape": list(model.input_shape[1:])}
        meta_path.write_text(json.dumps(meta))
        # One row of each kind documents both ways of asking (see cnnexp/serving/requests.py).
        first, second = example_images[0], example_images[min(1, len(example_images) - 1)]
        example = pd.DataFrame({IMAGE_COLUMN: [encode_image(first), None], PIXELS_COLUMN: [None, second.tolist()]})
        # The logged model is built from code (serving/entry.py) and the saved .keras file, so no
        # pickle travels with it.
        signature = ModelSignature(inputs=input_schema(), outputs=OUTPUT_SCHEMA)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("entry.py")),
            artifacts={"keras_model": str(keras_path), "meta": str(meta_path)},
            signature=signature,
            input_example=example,
            # The whole package travels with the model, so it loads where cnnexp is not installed.
            code_paths=[str(Path(__file__).resolve().parent.parent)],
            pip_requirements=serving_requirements(),
        )
