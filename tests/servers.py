"""Start real servers (mlflow models serve, cnnexp app) on free loopback ports, and stop them cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(tracking_uri: str) -> dict[str, str]:
    # `mlflow models serve` runs `uvicorn` from PATH, as in a user's activated environment.
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


@contextmanager
def running(cmd: list[str], *, env: dict, cwd: Path, ready_url: str, log: Path, timeout: float = 240) -> Iterator:
    """Run ``cmd`` in its own process group until ``ready_url`` answers 200; stop the group afterwards."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(ready_url, timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or listening while its workers still start (a busy machine)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{ready_url} not ready after {timeout}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def tracking_server(
    backend_uri: str, root: Path, *, extra: tuple[str, ...] = (), env: dict | None = None
) -> Iterator[str]:
    """`mlflow server` on a free loopback port: database backend store, artifacts proxied from root/artifacts.

    Workers reach artifacts only through the server (mlflow-artifacts:/ URIs), as on other machines.
    """
    port = free_port()
    cmd = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", backend_uri, "--artifacts-destination", str(root / "artifacts"), *extra,
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    env = {**(env or os.environ), "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
    with running(cmd, env=env, cwd=root, ready_url=url + "/health", log=root / "mlflow-server.log"):
        yield url
