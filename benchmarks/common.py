"""Shared plumbing for the benchmarks: interleaved repeats, medians, machine facts, JSON and tables.

Every comparison runs its sides alternately (A B A B ...) in one process or one session, so a
machine whose speed drifts by 2x over minutes slows both sides alike; the report is the median
of the repeats and the ratio of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("benchmarks/results")
# Tiny model on digits: a smoke run checks a script end to end in seconds, measuring nothing.
SMOKE_CONFIG = {
    "data.dataset": "digits",
    "model.blocks": 1,
    "model.filters": 8,
    "model.convs_per_block": 1,
    "model.head_units": 32,
    "train.batch_size": 64,
}


def parser(description: str, *, repeats: int = 3) -> argparse.ArgumentParser:
    """Flags every benchmark shares: where to write JSON, how many repeats, tiny smoke settings."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON result (default %(default)s)")
    p.add_argument("--repeats", type=int, default=repeats, help="interleaved repeats per side (default %(default)s)")
    p.add_argument("--smoke", action="store_true", help="tiny settings: checks the script runs, measures nothing")
    return p


def interleave(sides: Mapping[str, Callable[[], dict[str, float]]], repeats: int) -> dict[str, list[dict[str, float]]]:
    """Run every side once per round, alternating the order each round (ABAB, then BABA ...)."""
    names = list(sides)
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            results[name].append(sides[name]())
            print(f"  round {r + 1}/{repeats} {name}: {_fmt_row(results[name][-1])}", flush=True)
    return results


def medians(samples: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = samples[0].keys()
    return {k: statistics.median(float(s[k]) for s in samples) for k in keys}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of a list of numbers: the summary each table reports."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


class Timer:
    """Wall-clock seconds of a with-block (time.perf_counter)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


# The CPU flags a figure depends on: vector width (the fp32 peak) and native bfloat16 (train.precision=auto).
NOTABLE_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def machine() -> dict[str, Any]:
    """What the numbers were measured on and with: CPU model and flags, cores (and those this process
    may use), load, library versions, oneDNN switch, and the git commit of the code (dirty:
    uncommitted changes on top of it)."""
    from cnnexp.hardware import cpu_flags

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_flags": sorted(set(NOTABLE_FLAGS) & cpu_flags()),
        "cores": os.cpu_count(),
        # Fewer when pinned (taskset): a run given one core of two says so.
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **_git(),
    }
    for module in ("tensorflow", "keras", "mlflow", "optuna"):
        mod = sys.modules.get(module)
        if mod is not None:
            info[module] = getattr(mod, "__version__", "?")
    return info


def _git() -> dict[str, Any]:
    """The repository's commit and whether the working tree differed from it."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": "unknown"}
        return {"commit": head.stdout.strip(), "commit_dirty": bool(git("status", "--porcelain").stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown"}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_result(out: Path, name: str, payload: Mapping[str, Any]) -> Path:
    """Write ``<out>/<name>.json`` with the machine facts alongside the payload."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=2, default=float) + "\n")
    print(f"wrote {path}")
    return path


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table (pastes straight into docs/performance.md)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.1f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def run_python(args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float | None = None) -> dict:
    """Run ``python <args>`` in a fresh process (a switch read at import time, e.g. oneDNN or the
    Keras backend, needs one) and parse the JSON object it prints on its last stdout line."""
    return run_command([sys.executable, *args], env, timeout)


def run_command(cmd: Sequence[str], env: Mapping[str, str] | None = None, timeout: float | None = None) -> dict:
    """:func:`run_python` with any interpreter (e.g. another virtualenv's, for another Keras backend)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(list(cmd), env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(results: Mapping[str, Sequence[Mapping[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per side and per measured quantity: the :func:`spread` of its repeats (what :func:`interleave` returns)."""
    return {side: {k: spread([float(s[k]) for s in samples]) for k in samples[0]} for side, samples in results.items()}


# MLflow's fluent API keeps the store and the active experiment in these (and writes some of them).
_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


@contextmanager
def throwaway_store(experiment: str) -> Iterator[str]:
    """A fresh SQLite MLflow tracking store in a temporary folder for the block.

    The experiment is created with its artifacts inside that folder too (a SQLite store would
    otherwise put them in ./mlruns of the working directory). MLflow's tracking URI and environment
    variables are restored afterwards, so a caller's own store is untouched.
    """
    import mlflow

    saved = {name: os.environ.pop(name, None) for name in _MLFLOW_ENV}
    with tempfile.TemporaryDirectory(prefix="cnnexp-bench-") as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        mlflow.set_tracking_uri(uri)
        try:
            mlflow.create_experiment(experiment, artifact_location=(root / "artifacts").as_uri())
            yield uri
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            for name, value in saved.items():
                os.environ.pop(name, None)
                if value is not None:
                    os.environ[name] = value
            mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])


def _fmt_row(row: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def draw_configs(space_path: str | Path, n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` configurations Optuna's RandomSampler(seed) draws from a cnnexp search space.

    They are what ``cnnexp tune --sampler random --seed SEED`` tries, in that order (the sampler's draws
    do not depend on the results), so studies and benchmarks given the same seed share one list.
    """
    import optuna

    from cnnexp.tuning.space import sample
    from cnnexp.tuning.space_file import load_space
    from cnnexp.tuning.storage import make_sampler

    space = load_space(space_path)
    study = optuna.create_study(sampler=make_sampler("random", seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append(sample(trial, space))
        study.tell(trial, 0.0)
    return configs
