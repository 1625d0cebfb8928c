"""Training-step throughput of cnnexp's default CNN under each CPU switch, and GFLOP/s against peak.

Every variant trains the same model (``build_model`` of the default config, or a named change to
it) on the same in-memory Fashion-MNIST slice with ``model.fit`` on NumPy arrays (no tf.data, no
augmentation: the input pipeline has its own benchmark), in a fresh process each, since oneDNN,
the Keras backend and the precision policy are fixed at import time. Variants run interleaved,
alternating their order each round; the table reports median images/s and the ratio to the default.

Switches measured, from the issue's list of CPU traps: oneDNN custom ops off
(``TF_ENABLE_ONEDNN_OPTS=0``), TensorFlow op determinism (cnnexp's default, for reproducibility),
``steps_per_execution``, XLA (``jit_compile``), bfloat16 mixed precision, separable convolutions,
inter-op threads, and the torch and JAX backends (from a second virtualenv, ``--backend-python``,
since cnnexp itself pins TensorFlow). Achieved GFLOP/s counts 3x the forward multiply-adds of the
conv and dense layers per training image (forward, input gradient, weight gradient); the fp32 peak
is cores x clock x FLOPs per cycle of the widest vector unit the CPU reports (2 FMA units).

    python -m benchmarks.compute [--repeats 3] [--images 8192] [--backend-python /path/to/python]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common

# name -> (environment, worker flags). The first one is cnnexp's default and the ratios' reference.
VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "default (deterministic, oneDNN on)": ({}, ["--deterministic"]),
    "oneDNN off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, ["--deterministic"]),
    "not deterministic": ({}, []),
    "steps_per_execution=16": ({}, ["--deterministic", "--steps-per-execution", "16"]),
    "XLA (jit_compile)": ({}, ["--deterministic", "--jit"]),
    "mixed_bfloat16": ({}, ["--deterministic", "--policy", "mixed_bfloat16"]),
    "separable convs": ({}, ["--deterministic", "--set", "model.conv_type=separable"]),
    "inter-op threads 1": ({}, ["--deterministic", "--inter-op", "1"]),
    "old default (2x2 convs)": ({}, ["--deterministic", "--set", "model.blocks=2", "--set", "model.convs_per_block=2"]),
}
BACKENDS = {"torch backend": "torch", "jax backend": "jax"}


def forward_flops(model) -> float:
    """Multiply-adds x 2 of the conv and dense layers for one image (the rest is noise next to them)."""
    total = 0.0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "SeparableConv2D"):
            _, h, w, c_out = layer.output.shape
            c_in = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            if kind == "Conv2D":
                total += 2 * kh * kw * c_in * c_out * h * w
            else:
                total += 2 * kh * kw * c_in * h * w + 2 * c_in * c_out * h * w
        elif kind == "Dense":
            total += 2 * layer.input.shape[-1] * layer.units
    return total


def peak_gflops() -> dict[str, float]:
    """fp32 peak: cores x GHz x FLOPs/cycle (2 FMA units x lanes x 2)."""
    flags = common.cpu_flags()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    ghz = 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                ghz = float(line.split(":")[1]) / 1000
                break
    except OSError:
        pass
    cores = os.cpu_count() or 1
    return {"cores": cores, "ghz": ghz, "flops_per_cycle": 2 * lanes * 2, "fp32_peak_gflops": cores * ghz * 4 * lanes}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time ``fit`` on the saved slice in this process, under the switches given."""
    import keras
    import numpy as np

    from cnnexp.config import build_config
    from cnnexp.models import build_model

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if args.deterministic:
            tf.config.experimental.enable_op_determinism()
        if args.inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    if args.policy:
        keras.mixed_precision.set_global_policy(args.policy)
    keras.utils.set_random_seed(0)
    data = np.load(args.data)
    x, y = data["x"], data["y"]
    cfg = build_config(overrides=dict(s.split("=", 1) for s in args.set))
    model = build_model(cfg.model, x.shape[1:], 10)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=args.jit,
        steps_per_execution=args.steps_per_execution,
    )
    warm = 10 * args.batch_size
    model.fit(x[:warm], y[:warm], batch_size=args.batch_size, epochs=1, verbose=0)  # trace and warm caches
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    images_per_s = len(y) * args.epochs / seconds
    flops = forward_flops(model)
    return {
        "images_per_s": images_per_s,
        "forward_mflops": flops / 1e6,
        "gflops_per_s": 3 * flops * images_per_s / 1e9,
        "params": model.count_params(),
        "backend": keras.backend.backend(),
    }


def save_slice(path: Path, images: int, dataset: str) -> None:
    import numpy as np

    from cnnexp.config import build_config
    from cnnexp.datasets import load_dataset

    cfg = build_config(overrides={"data.dataset": dataset})
    ds = load_dataset(cfg.data)
    n = min(images, len(ds.y_train))
    np.savez(path, x=ds.x_train[:n].astype("float32"), y=ds.y_train[:n].astype("int64"))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8192, help="training images per timed pass")
    p.add_argument("--epochs", type=int, default=1, help="timed passes over them")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--only", nargs="+", help="variant names to run (default: all)")
    p.add_argument("--backend-python", help="a python with keras + torch + jax, for the backend rows")
    for flag in ("--worker", "--jit", "--deterministic"):
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--policy", help=argparse.SUPPRESS)
    p.add_argument("--inter-op", type=int, help=argparse.SUPPRESS)
    p.add_argument("--steps-per-execution", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return {}
    if args.smoke:
        args.dataset, args.images, args.only = "digits", 256, args.only or list(VARIANTS)[:2]
    variants = {name: (env, flags, sys.executable) for name, (env, flags) in VARIANTS.items()}
    if args.backend_python:
        repo = str(Path(__file__).resolve().parent.parent)
        for name, backend in BACKENDS.items():
            variants[name] = ({"KERAS_BACKEND": backend, "PYTHONPATH": repo}, [], args.backend_python)
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only}
    with tempfile.TemporaryDirectory(prefix="cnnexp-compute-") as tmp:
        data = Path(tmp) / "slice.npz"
        save_slice(data, args.images, args.dataset)
        common_flags = ["--data", str(data), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]

        def side(env: dict[str, str], flags: list[str], python: str):
            cmd = [python, "-m", "benchmarks.compute", "--worker", *common_flags, *flags]
            return lambda: common.run_command(cmd, env)

        samples = common.interleave({name: side(*v) for name, v in variants.items()}, args.repeats)
    peak = peak_gflops()
    reference = common.medians(samples[next(iter(samples))])["images_per_s"]
    rows = []
    for name, runs in samples.items():
        med = common.medians([{k: v for k, v in r.items() if k != "backend"} for r in runs])
        ips = [r["images_per_s"] for r in runs]
        rows.append(
            {
                "variant": name,
                "images/s": med["images_per_s"],
                "min-max": f"{min(ips):,.0f}-{max(ips):,.0f}",
                "vs default": med["images_per_s"] / reference,
                "GFLOP/s": med["gflops_per_s"],
                "% of fp32 peak": 100 * med["gflops_per_s"] / peak["fp32_peak_gflops"] if peak["ghz"] else None,
                "fwd MFLOPs": med["forward_mflops"],
            }
        )
    columns = ["variant", "images/s", "min-max", "vs default", "GFLOP/s", "% of fp32 peak", "fwd MFLOPs"]
    print(common.table(rows, columns))
    payload = {"peak": peak, "rows": rows, "samples": samples, "settings": {k: str(v) for k, v in vars(args).items()}}
    common.write_result(args.out, "compute", payload)
    return payload


if __name__ == "__main__":
    main()
