"""Training-step throughput of cnnexp's default CNN under each CPU switch, and GFLOP/s against peak.

Every variant trains the same model (``build_model`` of the default config, or a named change to
it) on the same in-memory Fashion-MNIST slice, without augmentation (the input pipeline has its
own benchmark). This machine's speed jumps between levels for minutes at a time, so two designs:

* **In one process** (switches that are per model: XLA, bfloat16 mixed precision,
  ``steps_per_execution``, separable convolutions, the old default architecture): every variant is
  built and traced first, then all of them train in turns of ``--chunk-steps`` steps, alternating
  the order each cycle, for ``--cycles`` cycles. Every variant sees the same machine states, so
  their ratios are trustworthy even when the absolute speed is not.
* **In fresh processes** (switches fixed at import or process level: oneDNN custom ops
  ``TF_ENABLE_ONEDNN_OPTS=0``, TensorFlow op determinism, inter-op threads, and the torch and JAX
  Keras backends from a second virtualenv, ``--backend-python``, since cnnexp pins TensorFlow):
  interleaved rounds, ``--repeats`` of them, medians. Noisier: read with the spread.

Achieved GFLOP/s counts 3x the forward multiply-adds (x2) of the conv and dense layers per training
image (forward, input gradient, weight gradient); the fp32 peak is cores x clock x FLOPs per cycle
of the widest vector unit the CPU reports, with 2 FMA units.

    python -m benchmarks.compute [--cycles 12] [--repeats 3] [--backend-python /path/to/python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from cnnexp.hardware import cpu_flags

# name -> (jit_compile, precision, steps_per_execution, batch size, model overrides)
IN_PROCESS: dict[str, tuple[bool, str, int, int, dict[str, Any]]] = {
    "default (fp32, no XLA)": (False, "float32", 1, 128, {}),
    "XLA (jit_compile)": (True, "float32", 1, 128, {}),
    "mixed_bfloat16": (False, "mixed_bfloat16", 1, 128, {}),
    "XLA + mixed_bfloat16": (True, "mixed_bfloat16", 1, 128, {}),
    "steps_per_execution=8": (False, "float32", 8, 128, {}),
    "batch 256": (False, "float32", 1, 256, {}),
    "separable convs": (False, "float32", 1, 128, {"model.conv_type": "separable"}),
    "old default (2 blocks x 2 convs)": (False, "float32", 1, 128, {"model.blocks": 2, "model.convs_per_block": 2}),
}
# name -> (environment, worker flags); the first is the reference.
PROCESSES: dict[str, tuple[dict[str, str], list[str]]] = {
    "default (deterministic, oneDNN on)": ({}, ["--deterministic"]),
    "oneDNN off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, ["--deterministic"]),
    "not deterministic": ({}, []),
    "inter-op threads 1": ({}, ["--deterministic", "--inter-op", "1"]),
    # As cnnexp trains with train.precision=mixed_bfloat16 (op determinism on): whether the in-process
    # bf16 ratio holds under determinism.
    "mixed_bfloat16 (deterministic)": ({}, ["--deterministic", "--precision", "mixed_bfloat16"]),
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


def peak_gflops(cpuinfo: str = "/proc/cpuinfo") -> dict[str, float]:
    """fp32 peak: cores x GHz x FLOPs/cycle (2 FMA units x lanes x 2)."""
    flags = cpu_flags(cpuinfo)
    info: dict[str, str] = {}
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    # AMD FMA units: 128-bit on Zen 1 and Zen+ (family 23, models below 0x30), 256-bit on Zen 2 to
    # Zen 4 (Zen 4 runs AVX-512 as two halves); Zen 5 (family 26) is counted full-width.
    if info.get("vendor_id") == "AuthenticAMD":
        family, model = int(info.get("cpu family", "0")), int(info.get("model", "0"))
        lanes = min(lanes, 4 if family < 23 or (family == 23 and model < 0x30) else 8 if family < 26 else 16)
    ghz = float(info.get("cpu MHz", "0")) / 1000
    cores = os.cpu_count() or 1
    return {"cores": cores, "ghz": ghz, "flops_per_cycle": 4 * lanes, "fp32_peak_gflops": cores * ghz * 4 * lanes}


def _model(overrides: dict[str, Any], shape: tuple[int, ...], precision: str = "float32"):
    from cnnexp.config import build_config
    from cnnexp.models.cnn import build_model
    from cnnexp.training.train import dtype_policy

    with dtype_policy(precision):
        return build_model(build_config(overrides=overrides).model, shape, 10)


def in_process(x, y, cycles: int, chunk_steps: int, names: list[str]) -> dict[str, dict[str, float]]:
    """Per-model switches, all variants trained in turns in this process (see the module docstring)."""
    import keras
    import tensorflow as tf

    # No op determinism here (cnnexp's default; the fresh-process rows measure its cost): Keras
    # silently turns XLA off under it, so the XLA rows would measure nothing.
    variants = {}
    for name in names:
        jit, precision, spe, batch, overrides = IN_PROCESS[name]
        model = _model(overrides, x.shape[1:], precision)
        model.compile(
            keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", jit_compile=jit, steps_per_execution=spe
        )
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().repeat()
        steps = max(spe, chunk_steps * 128 // batch)  # the same images per turn for every batch size
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)  # trace, warm caches
        variants[name] = (model, data, steps, batch)
    turns: dict[str, list[float]] = {name: [] for name in variants}  # seconds of every turn: the raw figures
    order = list(variants)
    for cycle in range(cycles):
        for name in order if cycle % 2 == 0 else order[::-1]:
            model, data, steps, _ = variants[name]
            start = time.perf_counter()
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            turns[name].append(time.perf_counter() - start)
    out = {}
    for name, (model, _, steps, batch) in variants.items():
        ips = cycles * steps * batch / sum(turns[name])
        flops = forward_flops(model)
        out[name] = {"images_per_s": ips, "forward_mflops": flops / 1e6, "gflops_per_s": 3 * flops * ips / 1e9}
        out[name]["turn_images_per_s"] = [steps * batch / s for s in turns[name]]
    return out


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One fresh-process variant: time ``fit`` on the saved slice under the process-level switches."""
    import keras
    import numpy as np

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if args.deterministic:
            tf.config.experimental.enable_op_determinism()
        if args.inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    keras.utils.set_random_seed(0)
    data = np.load(args.data)
    x, y = data["x"], data["y"]
    model = _model({}, x.shape[1:], args.precision)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    warm = 10 * args.batch_size
    model.fit(x[:warm], y[:warm], batch_size=args.batch_size, epochs=1, verbose=0)  # trace, warm caches
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0)
    images_per_s = len(y) / (time.perf_counter() - start)
    flops = forward_flops(model)
    return {"images_per_s": images_per_s, "forward_mflops": flops / 1e6, "gflops_per_s": 3 * flops * images_per_s / 1e9}


def load_slice(images: int, dataset: str):
    from cnnexp.config import build_config
    from cnnexp.data.sources import load_dataset

    ds = load_dataset(build_config(overrides={"data.dataset": dataset}).data)
    return ds.x_train[:images].astype("float32"), ds.y_train[:images].astype("int64")


def _rows(results: dict[str, dict[str, float]], spreads: dict[str, str], peak: float) -> list[dict[str, Any]]:
    reference = next(iter(results.values()))["images_per_s"]
    return [
        {
            "variant": name,
            "images/s": r["images_per_s"],
            "min-max": spreads.get(name, ""),
            "vs default": r["images_per_s"] / reference,
            "GFLOP/s": r["gflops_per_s"],
            "% of fp32 peak": 100 * r["gflops_per_s"] / peak if peak else None,
            "fwd MFLOPs": r["forward_mflops"],
        }
        for name, r in results.items()
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8192, help="training images in memory")
    p.add_argument("--cycles", type=int, default=12, help="in-process turns per variant")
    p.add_argument("--chunk-steps", type=int, default=16, help="steps of 128 images per in-process turn")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--backend-python", help="a python with keras + torch + jax, for the backend rows")
    p.add_argument("--skip-processes", action="store_true", help="only the in-process comparison")
    p.add_argument(
        "--variants",
        nargs="+",
        choices=list(IN_PROCESS),
        metavar="NAME",
        help="in-process variants to compare (default: all); the first is the reference of 'vs default'",
    )
    p.add_argument(
        "--processes",
        nargs="+",
        choices=list(PROCESSES),
        metavar="NAME",
        help="fresh-process variants to compare (default: all); the first is the reference",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--deterministic", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--inter-op", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return {}
    if args.smoke:
        args.dataset, args.images, args.cycles, args.chunk_steps = "digits", 512, 1, 2
    peak = peak_gflops()
    x, y = load_slice(args.images, args.dataset)
    # Smoke: two cheap variants in-process and one fresh process just check both designs run.
    names = args.variants or ([list(IN_PROCESS)[0], "mixed_bfloat16"] if args.smoke else list(IN_PROCESS))
    inproc = in_process(x, y, args.cycles, args.chunk_steps, names)
    print(common.table(_rows(inproc, {}, peak["fp32_peak_gflops"]), COLUMNS))
    payload: dict[str, Any] = {"peak": peak, "in_process": _rows(inproc, {}, peak["fp32_peak_gflops"])}
    payload["in_process_samples"] = {name: r["turn_images_per_s"] for name, r in inproc.items()}
    if not args.skip_processes:
        chosen = args.processes or list(PROCESSES)
        processes = {name: (*PROCESSES[name], sys.executable) for name in chosen}
        if args.backend_python:
            repo = str(Path(__file__).resolve().parent.parent)
            for name, backend in BACKENDS.items():
                processes[name] = ({"KERAS_BACKEND": backend, "PYTHONPATH": repo}, [], args.backend_python)
        if args.smoke:
            processes = dict(list(processes.items())[:1])
        samples = _fresh_processes(processes, x, y, args)
        medians = {n: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for n, runs in samples.items()}
        spreads = {
            n: f"{min(s['images_per_s'] for s in r):,.0f}-{max(s['images_per_s'] for s in r):,.0f}"
            for n, r in samples.items()
        }
        payload["processes"] = _rows(medians, spreads, peak["fp32_peak_gflops"])
        payload["process_samples"] = samples
        print(common.table(payload["processes"], COLUMNS))
    payload["settings"] = {k: str(v) for k, v in vars(args).items()}
    common.write_result(args.out, "compute", payload)
    return payload


COLUMNS = ["variant", "images/s", "min-max", "vs default", "GFLOP/s", "% of fp32 peak", "fwd MFLOPs"]


def _fresh_processes(processes: dict, x, y, args: argparse.Namespace) -> dict[str, list[dict[str, float]]]:
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="cnnexp-compute-") as tmp:
        data = Path(tmp) / "slice.npz"
        np.savez(data, x=x, y=y)
        flags = ["--data", str(data), "--batch-size", str(args.batch_size)]

        def side(env: dict[str, str], extra: list[str], python: str):
            return lambda: common.run_command([python, "-m", "benchmarks.compute", "--worker", *flags, *extra], env)

        return common.interleave({name: side(*v) for name, v in processes.items()}, args.repeats)


if __name__ == "__main__":
    main()
