"""What the servers expose and what they trust: loopback by default, no body read whole before the
limit is checked, no pickle loaded from a user-supplied file."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
import yaml
from formats import write_cifar_batches

from cnnexp.config import build_config
from cnnexp.data.sources import load_dataset
from cnnexp.errors import DataError


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (Linux /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_app_binds_loopback_unless_told_otherwise(app_url):
    # The app fixture starts `cnnexp app` without --host.
    port = urlparse(app_url).port
    assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, little-endian hex; nothing on 0.0.0.0


def test_scoring_server_listens_on_loopback_only(scoring_server):
    assert _listening_addresses(urlparse(scoring_server).port) == {"0100007F"}


def test_oversized_upload_refused_before_the_body_is_sent(app_url):
    """The 413 arrives although not one byte of the declared 100 MB body was sent."""
    parsed = urlparse(app_url)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=30) as conn:
        conn.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
            b"Content-Length: 104857600\r\n\r\n"
        )
        reply = b""
        while b"upload limit" not in reply:  # headers and body may come in separate segments
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    reply = reply.decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "upload limit" in reply


class _Payload:
    """Unpickling this runs code: it would create the sentinel file."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def test_dataset_pickles_cannot_run_code(tmp_path):
    batches = write_cifar_batches(tmp_path)
    sentinel = tmp_path / "pwned"
    (batches / "data_batch_1").write_bytes(pickle.dumps({b"data": _Payload(sentinel), b"labels": [0]}))
    cfg = build_config(overrides={"data.dataset": "cifar10", "data.data_dir": str(tmp_path)}).data
    with pytest.raises(DataError, match="data_batch_1: not a readable CIFAR-10 python batch.*refusing"):
        load_dataset(cfg)
    assert not sentinel.exists()


def test_served_model_carries_no_pickle(champion_store):
    """The logged pyfunc is models-from-code plus a .keras file: nothing in it is unpickled on load."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(champion_store["root"])
        mp.setenv("MLFLOW_TRACKING_URI", champion_store["uri"])
        mlflow.set_tracking_uri(champion_store["uri"])
        try:
            local = Path(mlflow.artifacts.download_artifacts(f"runs:/{champion_store['run_id']}/model"))
        finally:
            mlflow.set_tracking_uri(None)
    names = [p.name for p in local.rglob("*") if p.is_file()]
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".cloudpickle"))], names
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
    # defined by code (MLflow's models-from-code loader), not by a pickled python_model object
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert flavor["model_code_path"].endswith("serving/entry.py") and "python_model" not in flavor
