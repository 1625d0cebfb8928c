"""``cnnexp app``: a web page and a JSON endpoint that classify one uploaded image.

The page (``static/index.html``) posts the chosen file itself as the request body to
``/api/predict``; the same registered pyfunc that ``mlflow models serve`` runs does the decoding,
resizing and classification, so the page and the scoring server can never disagree. The upload
limit is checked against ``Content-Length`` before any byte is read, and again while streaming
(a chunked upload has no length). Every error answers ``{"error": message}``: never a traceback.

A ``models:/NAME@ALIAS`` model is loaded as the version the alias names then; with
``follow_interval`` a background thread re-reads the alias that often and, when it moved, loads
the new version and swaps it in whole (requests meanwhile use the old one). ``/health`` reports
the version served.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import mlflow
import pandas as pd
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.utils.models import get_model_name_and_version
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnexp.deploy.model_info import describe_model
from cnnexp.errors import AppError
from cnnexp.serving.requests import IMAGE_COLUMN

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD = 5 * 1024 * 1024
TOP_K = 5


def _page(max_upload_bytes: int) -> str:
    html = resources.files("cnnexp.deploy").joinpath("static/index.html").read_text(encoding="utf-8")
    return html.replace("{{MAX_UPLOAD_BYTES}}", str(max_upload_bytes))


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    too_big = HTTPException(413, f"the file is larger than the {limit / 1024 / 1024:g} MB upload limit")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


def top_classes(probabilities: list[float], class_names: list[str], k: int = TOP_K) -> list[dict]:
    ranked = sorted(range(len(probabilities)), key=lambda i: probabilities[i], reverse=True)[:k]
    return [{"label": class_names[i], "class_index": i, "probability": float(probabilities[i])} for i in ranked]


@dataclass(frozen=True)
class Loaded:
    """One loaded model; replaced whole, so a request never mixes two versions."""

    model: mlflow.pyfunc.PyFuncModel
    class_names: list[str]
    version: str | None  # registry version, None for a runs:/ or file URI
    info: dict  # what the page says it serves: name, version, alias, test accuracy (model_info.describe_model)


def resolve(model_uri: str) -> tuple[str, str | None]:
    """The URI to load and its registry version: an alias resolved to the version it names now."""
    if model_uri.startswith("models:/"):
        resolved = get_model_name_and_version(mlflow.MlflowClient(), model_uri)
        if len(resolved) == 2:  # a bare models:/<model id> has no version
            name, version = resolved
            return f"models:/{name}/{version}", str(version)
    return model_uri, None


def load(model_uri: str) -> Loaded:
    try:
        # Load the resolved version, not the alias: what /health reports is what answers.
        uri, version = resolve(model_uri)
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException as e:
        raise AppError(f"cannot load model {model_uri!r}: {e.message}") from None
    try:
        class_names = list(model.unwrap_python_model().class_names)
    except (MlflowException, AttributeError):
        raise AppError(f"{model_uri!r} is not a cnnexp image classifier (logged by `cnnexp train`)") from None
    return Loaded(model, class_names, version, describe_model(model_uri))


class _Follower:
    """Re-reads the alias every ``interval`` seconds and swaps in the version it names when it moved."""

    def __init__(self, model_uri: str, served: dict[str, Loaded], interval: float) -> None:
        self.model_uri, self.served, self.interval = model_uri, served, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cnnexp-follow-alias", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                if resolve(self.model_uri)[1] != self.served["now"].version:
                    self.served["now"] = new = load(self.model_uri)
                    log.info("%s moved: now serving version %s", self.model_uri, new.version)
            except Exception as e:  # noqa: BLE001 - a registry briefly unreachable must not end the following
                log.warning(
                    "could not follow %s (still serving version %s): %s", self.model_uri, self.served["now"].version, e
                )


def create_app(
    model_uri: str, max_upload_bytes: int = DEFAULT_MAX_UPLOAD, follow_interval: float | None = None
) -> FastAPI:
    """Load the model (a bad URI fails here, before serving) and build the app around it.

    ``follow_interval`` (seconds): follow a ``models:/NAME@ALIAS`` alias, reloading when it moves.
    """
    if follow_interval is not None and ("@" not in model_uri or not model_uri.startswith("models:/")):
        raise AppError(f"following an alias needs a model URI models:/NAME@ALIAS, not {model_uri!r}")
    if follow_interval is not None and not follow_interval > 0:
        raise AppError(f"the alias check interval {follow_interval:g} s must be positive")
    served = {"now": load(model_uri)}
    page = _page(max_upload_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        follower = _Follower(model_uri, served, follow_interval) if follow_interval else None
        if follower:
            follower.thread.start()
        yield
        if follower:
            follower.stop.set()

    app = FastAPI(title="cnnexp image classifier", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    # Starlette's class, not FastAPI's subclass: the router's own 404 and 405 get the same shape.
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)  # the trace stays in the server log
        return JSONResponse({"error": "internal error while classifying; see the server log"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict:
        now = served["now"]
        return {"status": "ok", "model": model_uri, "version": now.version, "classes": now.class_names}

    @app.get("/api/model")
    async def model_info() -> dict:
        return served["now"].info

    @app.post("/api/predict")
    async def predict(request: Request) -> dict:
        if request.headers.get("content-type", "").startswith("multipart/"):
            raise HTTPException(415, "send the image file itself as the body (curl --data-binary @image.png)")
        body = await read_limited(request, max_upload_bytes)
        if not body:
            raise HTTPException(400, "empty upload: choose a PNG or JPEG image")
        frame = pd.DataFrame({IMAGE_COLUMN: [base64.b64encode(body).decode("ascii")]})
        now = served["now"]
        try:
            out = await run_in_threadpool(now.model.predict, frame)
        except MlflowException as e:
            # The model's messages name the problem ("row 0: 'image' is not a PNG or JPEG image").
            prefix = f"row 0: '{IMAGE_COLUMN}' "
            reason = f"this file {e.message[len(prefix) :]}" if e.message.startswith(prefix) else e.message
            raise HTTPException(400, f"cannot classify: {reason}") from None
        probabilities = list(out["probabilities"].iloc[0])
        return {
            "label": str(out["label"].iloc[0]),
            "class_index": int(out["class_index"].iloc[0]),
            "top": top_classes(probabilities, now.class_names),
        }

    return app


def serve(
    model_uri: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    follow_interval: float | None = None,
) -> None:
    import uvicorn

    app = create_app(model_uri, max_upload_bytes, follow_interval)
    log.info("serving %s on http://%s:%d", model_uri, host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")
