"""Shared fixtures: a tiny, fast config and an isolated MLflow tracking store per test."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mlflow  # noqa: E402
import pytest  # noqa: E402
from servers import free_port, running, server_env  # noqa: E402

from cnnexp.config import ExperimentConfig, build_config  # noqa: E402

TINY = {
    "data.dataset": "digits",
    "model.filters": 8,
    "model.convs_per_block": 1,
    "model.head_units": 32,
    "train.epochs": 2,
    # Pooling last: a 2-epoch digits run with the default conv -> pool -> BN order validates far worse
    # (0.17 against 0.66 after epoch 2; level by 10 epochs), and the registry tests' strong, weak and
    # noisy models were chosen on this order. tests/models covers both orders.
    "model.block_order": "conv_bn_pool",
    # A random first convolution, as the registry tests' models were chosen with: at 8 filters the
    # whitening bank fills all of them. tests/models/test_init.py covers whitening.
    "model.whiten_init": False,
    "train.batch_size": 64,
    "train.learning_rate": 3e-3,
    # float32 whatever the CPU: predictions compared across processes and batch sizes must not hinge on
    # bf16 rounding, and results stay the same on hosts with and without native bf16 (test_train covers bf16).
    "train.precision": "float32",
    "experiment_name": "tests",
}


@pytest.fixture
def tiny_overrides() -> dict:
    """Dotted overrides for a model that trains on digits in a few seconds."""
    return dict(TINY)


@pytest.fixture
def tiny_config(tiny_overrides) -> ExperimentConfig:
    return build_config(overrides=tiny_overrides)


@contextmanager
def tracking_store(cwd: Path, uri: str | None = None) -> Iterator[str]:
    """Point MLflow at a SQLite store (a fresh one in ``cwd`` unless ``uri`` is given), with ``cwd``
    as the working directory (artifacts land in cwd/mlruns); everything is restored on exit."""
    uri = uri or f"sqlite:///{cwd / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        # MLflow's set_experiment/set_tracking_uri write these to os.environ: recorded here so that
        # leaving the context removes what MLflow set.
        for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            mp.setenv(name, "")
            mp.delenv(name)
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)


@pytest.fixture
def tracking(tmp_path) -> Iterator[str]:
    """A fresh SQLite tracking store with artifacts under tmp_path; the cwd is tmp_path too."""
    with tracking_store(tmp_path) as uri:
        yield uri


@pytest.fixture(scope="session")
def champion_store(tmp_path_factory) -> dict:
    """One tiny digits model, trained once per session and promoted to ``digits-test@champion``.

    For tests that serve the registered model from other processes: returns the tracking URI,
    the store's directory (use it as cwd), the model URI and the training run's test images.
    """
    from cnnexp.deploy.registry import promote
    from cnnexp.training.train import train

    root = tmp_path_factory.mktemp("champion_store")
    with tracking_store(root) as uri:
        result = train(build_config(overrides={**TINY, "train.epochs": 3}))
        decision = promote("digits-test", run_id=result.run_id)
    return {
        "uri": uri,
        "root": root,
        "model_uri": "models:/digits-test@champion",
        "run_id": result.run_id,
        "version": decision.version,
        "x_test": result.split.x_test,
        "y_test": result.split.y_test,
        "expected": result.model.predict(result.split.x_test[:8].astype("float32"), verbose=0).argmax(axis=1),
    }


@pytest.fixture(scope="session")
def champion_pyfunc(champion_store):
    """The champion's pyfunc loaded in this process: what every served prediction must equal."""
    import mlflow

    with tracking_store(champion_store["root"], champion_store["uri"]):
        dst = champion_store["root"] / "in_process"
        local = mlflow.artifacts.download_artifacts(champion_store["model_uri"], dst_path=str(dst))
    return mlflow.pyfunc.load_model(local)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster on a loopback port, once per session; its base URL (no database).

    Skips when the server binaries are missing, except in CI (CI=true), where that is a failure:
    .ci/run installs Debian's postgresql.
    """
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server binaries missing in CI: .ci/run must apt-get install postgresql")
        pytest.skip("needs Debian's postgresql (apt-get install postgresql)")
    bindir = os.path.dirname(bins[-1])
    # PostgreSQL refuses to run as root; the cluster belongs to the postgres user in a dir it can reach.
    root = tempfile.mkdtemp(prefix="cnnexp-pg-", dir="/tmp")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    data, port = os.path.join(root, "data"), free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    pg(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres")
    # Enough connections for several workers, each with Optuna's and MLflow's pools.
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    pg(f"{bindir}/pg_ctl", "-D", data, "-o", options, "-l", os.path.join(root, "log"), "-w", "start")
    try:
        # trust auth accepts any password: the URL carries one so tests can check it is never logged
        yield f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{port}"
    finally:
        pg(f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


_databases = itertools.count()


def new_database(server_url: str) -> str:
    """A fresh, empty database on the session's cluster; its SQLAlchemy URL."""
    import psycopg

    name = f"db{next(_databases)}_{os.getpid()}"
    conninfo = server_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server_url}/{name}"


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """An empty database of its own for each test (studies and stores never leak between tests)."""
    return new_database(postgres_server)


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven by selenium (the app's page, the MLflow UI)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        if os.environ.get("CI") == "true":
            pytest.fail("chromium and chromium-driver must be installed in CI (.ci/run installs them)")
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


# The app's upload limit in tests: small, so oversized uploads stay small.
APP_LIMIT_MB = 0.05


def _serve(cmd: list[str], store: dict, tmp_path_factory, name: str, ready_path: str) -> Iterator[str]:
    """Run a server for the champion store's model on a free loopback port until the session ends."""
    port = free_port()
    log = tmp_path_factory.mktemp(name) / f"{name}.log"
    url = f"http://127.0.0.1:{port}"
    env = server_env(store["uri"])
    with running([*cmd, str(port)], env=env, cwd=store["root"], ready_url=url + ready_path, log=log):
        yield url


@pytest.fixture(scope="session")
def scoring_server(champion_store, tmp_path_factory):
    """The champion served by the real `mlflow models serve` on a loopback port, once per session."""
    cmd = [
        sys.executable, "-m", "mlflow", "models", "serve",
        "-m", champion_store["model_uri"], "--env-manager", "local", "-h", "127.0.0.1", "-p",
    ]  # fmt: skip
    yield from _serve(cmd, champion_store, tmp_path_factory, "serve", "/ping")


@pytest.fixture(scope="session")
def app_url(champion_store, tmp_path_factory):
    """`cnnexp app` serving the champion (default host: 127.0.0.1), once per session."""
    cmd = [
        sys.executable, "-m", "cnnexp", "app", "--model", champion_store["model_uri"],
        "--max-upload-mb", str(APP_LIMIT_MB), "--port",
    ]  # fmt: skip
    yield from _serve(cmd, champion_store, tmp_path_factory, "app", "/health")
