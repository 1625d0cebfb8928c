"""Every colour mode, upright or stored sideways with EXIF orientation 6, decodes to the same array
through the served pyfunc, the web page's endpoint and a folder dataset (docs/images.md)."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import uvicorn
from conftest import tracking_store
from PIL import Image
from servers import free_port

from cnnexp.config import ModelConfig
from cnnexp.data.folder import load_folder
from cnnexp.data.images import IMAGE_SUFFIXES, is_grayscale, to_array
from cnnexp.deploy.webapp import create_app
from cnnexp.models.cnn import build_model
from cnnexp.serving.pyfunc import ImageClassifier, log_image_model

# Not square: a file read sideways would be resized from 4x6 instead of 6x4 and differ everywhere.
H, W = 6, 4
_rng = np.random.default_rng(20)
GRAY = _rng.integers(2, 254, (H, W), dtype=np.uint8)
COLOR = _rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
ORIENTATION = 0x0112


def _alpha() -> np.ndarray:
    alpha = np.full((H, W), 255, dtype=np.uint8)
    alpha[0, 1] = 0  # one transparent pixel: it must come out white
    return alpha


def _white_at_transparent(arr: np.ndarray) -> np.ndarray:
    out = arr.copy()
    out[0, 1] = 255
    return out


def _palette(gray: np.ndarray) -> Image.Image:
    image = Image.frombytes("P", (gray.shape[1], gray.shape[0]), gray.tobytes())
    image.putpalette([v for i in range(256) for v in (i, i, i)])
    return image


# mode -> (the stored image made from an upright array, file format, the 8-bit image it must equal)
CASES: dict[str, tuple[Callable[[Callable[[np.ndarray], np.ndarray]], Image.Image], str, Image.Image]] = {
    "L": (lambda t: Image.fromarray(t(GRAY)), "PNG", Image.fromarray(GRAY)),
    "LA": (
        lambda t: Image.fromarray(t(np.dstack([GRAY, _alpha()]))),
        "PNG",
        Image.fromarray(_white_at_transparent(GRAY)),
    ),
    "P": (lambda t: _palette(t(GRAY)), "PNG", Image.fromarray(GRAY)),
    "RGB": (lambda t: Image.fromarray(t(COLOR)), "PNG", Image.fromarray(COLOR)),
    "RGBA": (
        lambda t: Image.fromarray(t(np.dstack([COLOR, _alpha()]))),
        "PNG",
        Image.fromarray(_white_at_transparent(COLOR)),
    ),
    "CMYK": (lambda t: Image.fromarray(t(COLOR)).convert("CMYK"), "TIFF", Image.fromarray(COLOR)),
    # 16-bit PNG: the whole 0-65535 range scales to 0-255 (it was clipped at 255: a binary image).
    "I;16": (lambda t: Image.fromarray(t(GRAY.astype(np.uint16) * 257)), "PNG", Image.fromarray(GRAY)),
    # 32-bit integer TIFF holding 16-bit values, and a float TIFF normalised to 0-1.
    "I": (lambda t: Image.fromarray(t(GRAY.astype(np.int32) * 257)), "TIFF", Image.fromarray(GRAY)),
    "F": (lambda t: Image.fromarray(t(GRAY.astype(np.float32) / 255)), "TIFF", Image.fromarray(GRAY)),
}
SUFFIX = {"PNG": ".png", "TIFF": ".tif", "JPEG": ".jpg"}


def _file(mode: str, rotated: bool) -> tuple[bytes, str]:
    """The file of ``mode``; rotated: pixels stored turned 90 degrees left, tagged orientation 6 (as phones do)."""
    make, fmt, _ = CASES[mode]
    image = make((lambda a: np.rot90(a).copy()) if rotated else (lambda a: a))
    assert image.mode == mode
    exif = Image.Exif()
    if rotated:
        exif[ORIENTATION] = 6
    buf = io.BytesIO()
    image.save(buf, format=fmt, exif=exif)
    return buf.getvalue(), SUFFIX[fmt]


def _expected(mode: str, channels: int) -> np.ndarray:
    reference = CASES[mode][2].convert("L" if channels == 1 else "RGB")
    arr = np.asarray(reference)
    return arr[..., None] if channels == 1 else arr


@contextmanager
def _app_in_thread(app) -> Iterator[str]:
    """The web app under uvicorn in this process (so the spy below sees its model), on a free port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict[int, dict]]:
    """Per channel count: a logged pyfunc (loaded as serving loads it) and the web app around it."""
    root = tmp_path_factory.mktemp("images")
    out = {}
    with ExitStack() as stack:
        with tracking_store(root):
            for channels in (1, 3):
                model = build_model(ModelConfig(blocks=1, filters=4, head_units=0), (H, W, channels), 2)
                with mlflow.start_run() as run:
                    log_image_model(model, ("a", "b"), np.zeros((2, H, W, channels), dtype=np.uint8))
                uri = f"runs:/{run.info.run_id}/model"
                app = stack.enter_context(_app_in_thread(create_app(uri)))
                out[channels] = {"pyfunc": mlflow.pyfunc.load_model(uri), "app": app}
        yield out


def _post(url: str, data: bytes) -> requests.Response:
    return requests.post(url + "/api/predict", data=data, timeout=60)


@pytest.fixture
def seen(monkeypatch) -> list[np.ndarray]:
    """The pixel arrays the pyfunc hands to the Keras model, whoever called it."""
    arrays: list[np.ndarray] = []
    original = ImageClassifier.predict_pixels

    def spy(self, pixels):
        arrays.append(np.asarray(pixels))
        return original(self, pixels)

    monkeypatch.setattr(ImageClassifier, "predict_pixels", spy)
    return arrays


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("rotated", [False, True], ids=["upright", "exif6"])
@pytest.mark.parametrize("mode", list(CASES))
def test_every_mode_gives_the_same_array_on_every_path(served, seen, tmp_path, mode, rotated, channels):
    data, suffix = _file(mode, rotated)
    expected = _expected(mode, channels)

    frame = pd.DataFrame({"image": [base64.b64encode(data).decode("ascii")]})
    served[channels]["pyfunc"].predict(frame)
    resp = _post(served[channels]["app"], data)
    assert resp.status_code == 200, resp.text
    (class_a := tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (class_a / f"image{suffix}").write_bytes(data)
    Image.fromarray(GRAY).save(tmp_path / "b" / "other.png")
    folder = load_folder(tmp_path, (H, W), channels)

    served_pixels, page_pixels = seen
    np.testing.assert_array_equal(served_pixels[0].astype(np.uint8), expected)
    np.testing.assert_array_equal(page_pixels[0].astype(np.uint8), expected)
    np.testing.assert_array_equal(folder.x_train[0], expected)


def test_a_sideways_jpeg_is_read_upright_everywhere(served, seen, tmp_path):
    """The issue's case: a phone JPEG (lossy, so the reference is the file's own pixels turned upright)."""
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(np.rot90(COLOR).copy()).save(buf, format="JPEG", quality=95, exif=exif)
    stored = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))  # as saved, sideways
    expected = np.rot90(stored, k=-1)
    served[3]["pyfunc"].predict(pd.DataFrame({"image": [base64.b64encode(buf.getvalue()).decode("ascii")]}))
    assert _post(served[3]["app"], buf.getvalue()).status_code == 200
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "a" / "phone.jpg").write_bytes(buf.getvalue())
    Image.fromarray(COLOR).save(tmp_path / "b" / "other.png")
    folder = load_folder(tmp_path, (H, W), 3)
    for pixels in (*seen, folder.x_train[:1]):
        np.testing.assert_array_equal(pixels[0].astype(np.uint8), expected)


@pytest.mark.parametrize(
    "mode, values, expected",
    [
        ("I", [0, 100, 255], [0, 100, 255]),  # 8-bit values in a 32-bit image stay as they are
        ("I", [0, 257, 65535], [0, 1, 255]),  # 16-bit values scale by 257
        ("I", [-100, 0, 100], [0, 128, 255]),  # anything else: stretched min-max
        ("F", [0.0, 0.5, 1.0], [0, 128, 255]),  # normalised floats scale by 255
        ("F", [0.0, 2.0, 200.0], [0, 2, 200]),  # 0-255 floats stay
        ("F", [-1.0, 0.0, 1.0], [0, 128, 255]),  # anything else: stretched min-max
        ("F", [np.nan, np.inf, 0.25], [0, 0, 64]),  # non-finite values count as 0
        ("I;16", [0, 128, 65535], [0, 0, 255]),  # 16-bit: always by 257, whatever the values
    ],
)
def test_high_depth_scaling_rule(mode, values, expected):
    dtype = {"I": np.int32, "F": np.float32, "I;16": np.uint16}[mode]
    image = Image.fromarray(np.asarray([values], dtype=dtype))
    assert image.mode == mode
    assert to_array(image, (1, 3), 1)[0, :, 0].tolist() == expected


def test_grayscale_modes_stay_one_channel():
    gray = [Image.new(m, (2, 2)) for m in ("1", "L", "LA", "I", "I;16", "F")]
    colour = [Image.new(m, (2, 2)) for m in ("RGB", "RGBA", "P", "CMYK")]
    assert all(is_grayscale(i) for i in gray) and not any(is_grayscale(i) for i in colour)


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES)
def test_folder_datasets_read_every_listed_suffix(tmp_path, suffix):
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(suffix, suffix[1:].upper())
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        options = {"lossless": True} if fmt == "WEBP" else {}
        Image.fromarray(GRAY).save(tmp_path / name / f"x{suffix}", format=fmt, **options)
    ds = load_folder(tmp_path, (H, W), channels=1)  # WebP has no gray mode: it reads back as RGB
    assert ds.x_train.shape == (2, H, W, 1)
    if fmt != "JPEG":
        np.testing.assert_array_equal(ds.x_train[0, ..., 0], GRAY)


def test_a_mode_pillow_cannot_convert_is_named_not_a_crash():
    from mlflow.exceptions import MlflowException

    from cnnexp.errors import DataError

    odd = Image.new("La", (2, 2))  # premultiplied alpha: Pillow converts it to nothing we take
    with pytest.raises(DataError, match="cannot convert a La image to 8-bit gray or RGB"):
        to_array(odd, (2, 2), 1)
    classifier = ImageClassifier()
    classifier.input_shape = (2, 2, 1)
    with pytest.raises(MlflowException, match="row 0: cannot convert a La image") as err:
        classifier.to_pixels([odd])
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"  # the scoring server answers 400
