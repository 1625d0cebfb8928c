"""What the scoring server adds: `mlflow models serve` on loopback against the same pyfunc in-process.

Measured, for one logged model (trained here in a few seconds, or ``--model-uri``):

* ``server``: the real ``mlflow models serve --env-manager local`` in a subprocess on a free
  loopback port (one uvicorn worker, its default), asked over one keep-alive HTTP connection with
  ``dataframe_split`` JSON bodies built beforehand;
* ``pyfunc``: ``mlflow.pyfunc.load_model(...).predict(frame)`` in this process on the same rows
  (schema check, image decoding, resizing and the Keras model: everything but HTTP and JSON);
* ``keras predict()``, ``keras predict_on_batch()``, ``keras call (eager)``: the wrapped Keras
  model alone on the decoded pixels, three ways to run it. ``predict()`` builds a tf.data
  pipeline and callbacks on every call; ``predict_on_batch()`` (what cnnexp's pyfunc uses) runs
  the same compiled graph directly; an eager call runs the layers op by op.

Per side and round: single-image latency p50/p99 over ``--requests`` requests, then images/s of
``--batch-requests`` requests of ``--batch-size`` images. Sides run alternately in rounds; every
side is warmed up first (the first call traces the graph).

Why: a served model should cost little more than calling it. Target: server p50 <= 2x pyfunc p50.

    python -m benchmarks.serving [--smoke] [--repeats 3] [--requests 300] [--model-uri models:/name@champion]
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.common import interleave, parser, summarize, table, throwaway_store, write_result  # noqa: E402
from cnnexp.config import build_config  # noqa: E402
from cnnexp.data.sources import load_dataset  # noqa: E402
from cnnexp.data.split import split_dataset  # noqa: E402
from cnnexp.serving.pyfunc import encode_image  # noqa: E402
from cnnexp.serving.requests import IMAGE_COLUMN, PIXELS_COLUMN, request_images  # noqa: E402
from cnnexp.training.train import train  # noqa: E402

# The tests' helpers start and stop real servers (free port, readiness poll, process-group kill).
_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)
from servers import free_port, running, server_env  # noqa: E402

NAME = "serving"
TARGET = 2.0
EXPERIMENT = "bench-serving"
SMOKE = {"model.blocks": 1, "model.filters": 8, "model.convs_per_block": 1, "model.head_units": 32}


def train_model(dataset: str, smoke: bool, dst: Path) -> tuple[str, np.ndarray]:
    """A one-epoch model of the default architecture (tiny in smoke runs), logged as cnnexp logs it."""
    overrides = {"data.dataset": dataset, "data.train_subset": 2000, "train.epochs": 1, "experiment_name": EXPERIMENT}
    cfg = build_config(overrides={**overrides, **(SMOKE if smoke else {})})
    with throwaway_store(EXPERIMENT):
        try:
            result = train(cfg, evaluate_test=False, log_model=True)
        finally:
            mlflow.keras.autolog(disable=True)
        local = mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model", dst_path=str(dst))
    return local, result.split.x_test


def request_rows(images: np.ndarray, column: str) -> list[Any]:
    """Cell values of the chosen input column: base64 PNG files or nested pixel lists."""
    if column == IMAGE_COLUMN:
        return [encode_image(img) for img in images]
    return [img[..., 0].tolist() if img.shape[-1] == 1 else img.tolist() for img in images]


def body(rows: list[Any], column: str) -> bytes:
    return json.dumps({"dataframe_split": {"columns": [column], "data": [[r] for r in rows]}}).encode()


class ScoringClient:
    """POSTs prepared bodies to /invocations over one keep-alive connection (opened per round)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.conn: http.client.HTTPConnection | None = None

    def reconnect(self) -> None:
        # uvicorn drops idle keep-alive connections after 5 s: each round starts a fresh one.
        self.close()
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, data: bytes) -> int:
        assert self.conn is not None
        self.conn.request("POST", "/invocations", body=data, headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"server answered {resp.status}: {raw[:500]!r}")
        return len(json.loads(raw)["predictions"])


@dataclass
class Caller:
    """One way to get predictions: ``single(i)`` for the i-th one-image request, ``batch()`` -> images."""

    single: Callable[[int], object]
    batch: Callable[[], int]
    before_round: Callable[[], object] = lambda: None

    def warm_up(self) -> None:
        # The first calls trace the graphs: for one image, then for any batch size.
        self.before_round()
        self.single(0)
        self.batch()
        self.single(1)


def measure(caller: Caller, n_single: int, n_batch: int) -> dict[str, float]:
    """Latency of ``n_single`` one-image calls, then images/s of ``n_batch`` batch calls."""
    caller.before_round()
    latencies = []
    for i in range(n_single):
        start = time.perf_counter()
        caller.single(i)
        latencies.append(time.perf_counter() - start)
    start, images = time.perf_counter(), 0
    for _ in range(n_batch):
        images += caller.batch()
    batch_s = time.perf_counter() - start
    ms = 1000 * np.asarray(latencies)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "batch_images_per_s": images / batch_s,
    }


@contextmanager
def scoring_server(model_dir: str, work: Path, url: str | None) -> Iterator[tuple[str, float | None]]:
    """``mlflow models serve`` of ``model_dir`` on a free loopback port until the block ends (or ``url``
    as it is); yields the URL and the seconds until /ping answered."""
    if url:
        yield url, None
        return
    port = free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_dir, "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    # running() kills the server's process group on leaving the block, whatever happens inside.
    env = server_env(mlflow.get_tracking_uri())
    try:
        with running(cmd, env=env, cwd=work, ready_url=url + "/ping", log=work / "serve.log"):
            yield url, time.perf_counter() - start
    finally:
        wait_until_closed(port)


def wait_until_closed(port: int, timeout: float = 30) -> None:
    """running() waits for `mlflow models serve` itself; its uvicorn child exits a moment later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.1)
    # A warning, not an exception: this runs in a finally block and must not hide the original error.
    print(f"warning: the model server on port {port} still answers {timeout}s after it was stopped", file=sys.stderr)


def build_callers(
    model_dir: str, client: ScoringClient, rows: list[Any], column: str, batch_size: int
) -> dict[str, Caller]:
    """Every side, asked the same one-image requests (cycled) and the same batch."""
    singles = rows[:64]  # cycled through, so no side answers the same image twice in a row
    k = len(singles)
    single_frames = [pd.DataFrame({column: [r]}) for r in singles]
    single_bodies = [body([r], column) for r in singles]
    batch_frame = pd.DataFrame({column: rows[:batch_size]})
    batch_body = body(rows[:batch_size], column)

    pyfunc = mlflow.pyfunc.load_model(model_dir)
    classifier = pyfunc.unwrap_python_model()
    model = classifier.model
    # The Keras-only sides start from decoded pixels, exactly what the pyfunc feeds its model.
    single_pixels = [classifier.to_pixels(request_images(f)) for f in single_frames]
    batch_pixels = classifier.to_pixels(request_images(batch_frame))

    def keras(run: Callable[[np.ndarray], Any]) -> Caller:
        return Caller(lambda i: run(single_pixels[i % k]), lambda: len(np.asarray(run(batch_pixels))))

    def fresh_connection() -> None:
        client.reconnect()
        client.post(single_bodies[0])  # connects outside the timing

    return {
        "server": Caller(
            lambda i: client.post(single_bodies[i % k]), lambda: client.post(batch_body), fresh_connection
        ),
        "pyfunc": Caller(lambda i: pyfunc.predict(single_frames[i % k]), lambda: len(pyfunc.predict(batch_frame))),
        "keras predict()": keras(lambda x: model.predict(x, verbose=0)),
        "keras predict_on_batch()": keras(model.predict_on_batch),
        "keras call (eager)": keras(lambda x: np.asarray(model(x, training=False))),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--model-uri", help="serve this model (e.g. models:/name@champion) instead of training one")
    p.add_argument("--server-url", help="measure this running server (serving --model-uri) instead of starting one")
    p.add_argument("--dataset", default="fashion_mnist", help="images to send (and to train on)")
    p.add_argument("--input", choices=(IMAGE_COLUMN, PIXELS_COLUMN), default=IMAGE_COLUMN, help="request column")
    p.add_argument("--requests", type=int, default=300, help="single-image requests per side and round")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch request")
    p.add_argument("--batch-requests", type=int, default=5, help="batch requests per side and round")
    args = p.parse_args(argv)
    if args.server_url and not args.model_uri:
        p.error("--server-url needs --model-uri: the in-process sides must load the model the server serves")
    if args.smoke:
        args.dataset, args.requests, args.batch_size, args.batch_requests = "digits", 20, 32, 2

    with tempfile.TemporaryDirectory(prefix="cnnexp-bench-serving-") as tmp:
        work = Path(tmp)
        if args.model_uri:
            model_dir = mlflow.artifacts.download_artifacts(args.model_uri, dst_path=str(work))
            cfg = build_config(overrides={"data.dataset": args.dataset})
            images = split_dataset(load_dataset(cfg.data), cfg.data, cfg.train.seed).x_test
        else:
            model_dir, images = train_model(args.dataset, args.smoke, work)
        rows = request_rows(images[: max(args.batch_size, 64)], args.input)
        with scoring_server(model_dir, work, args.server_url) as (url, startup_s):
            print(f"server {url} ready" + (f" after {startup_s:.1f}s" if startup_s is not None else ""))
            client = ScoringClient(url)
            try:
                callers = build_callers(model_dir, client, rows, args.input, args.batch_size)
                for caller in callers.values():
                    caller.warm_up()
                sides = {n: (lambda c=c: measure(c, args.requests, args.batch_requests)) for n, c in callers.items()}
                results = interleave(sides, args.repeats)
            finally:
                client.close()

    summary = summarize(results)
    p50 = {side: s["p50_ms"]["median"] for side, s in summary.items()}
    ratio = p50["server"] / p50["pyfunc"]
    keras_sides = [s for s in summary if s.startswith("keras")]
    rows_out = [
        {
            "side": side,
            "p50 ms": s["p50_ms"]["median"],
            "p50 min-max": f"{s['p50_ms']['min']:.2f}-{s['p50_ms']['max']:.2f}",
            "p99 ms": s["p99_ms"]["median"],
            f"batch of {args.batch_size}: images/s": s["batch_images_per_s"]["median"],
            "images/s min-max": f"{s['batch_images_per_s']['min']:,.0f}-{s['batch_images_per_s']['max']:,.0f}",
            "p50 vs pyfunc": s["p50_ms"]["median"] / p50["pyfunc"],
        }
        for side, s in summary.items()
    ]
    fastest = {
        "single": min(keras_sides, key=lambda s: p50[s]),
        "batch": max(keras_sides, key=lambda s: summary[s]["batch_images_per_s"]["median"]),
    }
    print()
    print(table(rows_out, list(rows_out[0])))
    print(f"\nfastest Keras path: one image {fastest['single']}, batch {fastest['batch']}")
    print(f"server p50 / pyfunc p50 = {ratio:.2f} (target <= {TARGET}): {'met' if ratio <= TARGET else 'NOT met'}")
    payload = {
        "settings": {
            "model_uri": args.model_uri or "trained here (1 epoch, default architecture)",
            "server": args.server_url or "mlflow models serve --env-manager local (started here)",
            "dataset": args.dataset,
            "input": args.input,
            "requests": args.requests,
            "batch_size": args.batch_size,
            "batch_requests": args.batch_requests,
            "repeats": args.repeats,
            "smoke": args.smoke,
        },
        "server_url": url,
        "server_startup_s": startup_s,
        "samples": results,
        "summary": summary,
        "ratio_server_over_pyfunc_p50": ratio,
        "target": TARGET,
        "meets_target": ratio <= TARGET,
        "fastest_keras_path": fastest,
    }
    write_result(Path(args.out), NAME, payload)
    return payload


if __name__ == "__main__":
    main()
