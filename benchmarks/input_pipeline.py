"""Does training wait on data? The tf.data pipeline alone, the model's training step alone, and fit.

Measured, in images per second over one pass of the training subset, each side warmed up first
(pipeline caches filled, training graphs traced):

* ``pipeline aug``/``pipeline no-aug``: iterating :func:`cnnexp.data.pipeline.make_dataset` with
  ``training=True`` (cache, shuffle, batch, cast, prefetch), with the dataset's default
  augmentation from :func:`cnnexp.data.pipeline.build_augmenter` and without any;
* ``model step``: ``model.fit`` on one pre-materialised float32 batch repeated (no pipeline work);
* ``fit aug``/``fit no-aug``: ``model.fit`` on the real pipelines, i.e. what a run does per epoch.

Besides wall time, each side records the process CPU time it used (all threads): on a 2-core
machine tf.data's threads compete with the model step for the same cores, so a pipeline that is
fast alone can still slow fit down. ``cores busy`` = CPU seconds / wall seconds.

Why: to know whether speeding up training means the model or the input pipeline.
Target: pipeline/model-step >> 1 (data is never the bottleneck) and fit close to model step.

    python -m benchmarks.input_pipeline [--smoke] [--repeats 3] [--train-subset 10000]
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import SMOKE_CONFIG, interleave, parser, summarize, table, write_result  # noqa: E402
from cnnexp.config import build_config  # noqa: E402
from cnnexp.data.pipeline import build_augmenter, make_dataset  # noqa: E402
from cnnexp.data.sources import load_dataset  # noqa: E402
from cnnexp.data.split import split_dataset  # noqa: E402
from cnnexp.models.cnn import build_model  # noqa: E402
from cnnexp.training.train import compile_model, set_seeds  # noqa: E402

NAME = "input_pipeline"
SMOKE = {
    **SMOKE_CONFIG,
    # Digits has no default augmentation; the smoke run still exercises the augmented pipeline.
    "data.augment.shift": 0.1,
}


def measure(work: Callable[[], int]) -> dict[str, float]:
    """Run ``work`` (returns the images it processed): images/s, CPU time per image, cores busy."""
    wall, cpu = time.perf_counter(), time.process_time()
    images = work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"images_per_s": images / wall, "cpu_ms_per_100_images": 1e5 * cpu / images, "cores_busy": cpu / wall}


def iterate(ds: tf.data.Dataset) -> int:
    """One pass over the pipeline, doing nothing with the batches: the pipeline's own rate."""
    images = 0
    for xb, _ in ds:
        images += int(xb.shape[0])
    return images


def fit_once(model: keras.Model, ds: tf.data.Dataset, images: int) -> int:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")  # ours is shuffled by tf.data
        model.fit(ds, epochs=1, verbose=0)
    return images


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--train-subset", type=int, default=10_000, help="training images per pass (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    if args.smoke:
        args.dataset, args.train_subset = "digits", None
    overrides: dict[str, Any] = {
        "data.dataset": args.dataset,
        "data.train_subset": args.train_subset,
        "train.batch_size": args.batch_size,
    }
    if args.smoke:
        overrides.update(SMOKE)
    cfg = build_config(overrides=overrides)
    t = cfg.train
    set_seeds(t)
    split = split_dataset(load_dataset(cfg.data), cfg.data, t.seed)
    x, y = split.x_train, split.y_train
    n, bs = len(y), t.batch_size
    augmenter = build_augmenter(cfg.data.augment, t.seed)
    if augmenter is None:
        raise SystemExit(f"{cfg.data.dataset} has no default augmentation: pass one (e.g. shift) to compare")
    print(f"{cfg.data.dataset}: {n} training images, batch {bs}, augmentation {cfg.data.augment}")

    pipelines = {
        "aug": make_dataset(x, y, bs, training=True, augmenter=augmenter, seed=t.seed),
        "no-aug": make_dataset(x, y, bs, training=True, seed=t.seed),
    }
    # The model step alone: full batches of real images already in memory, as float32 like the pipeline's.
    steps = n // bs
    batch = (tf.constant(x[:bs].astype(np.float32)), tf.constant(y[:bs]))
    step_ds = tf.data.Dataset.from_tensors(batch).repeat(steps)
    model = build_model(cfg.model, x.shape[1:], len(split.class_names))
    compile_model(model, t, math.ceil(n / bs))

    # Warm-up: fill the pipelines' caches and trace the training graphs for both input signatures.
    for ds in pipelines.values():
        iterate(ds)
        fit_once(model, ds.take(2), 0)
    fit_once(model, step_ds.take(2), 0)

    sides = {
        "pipeline aug": lambda: measure(lambda: iterate(pipelines["aug"])),
        "pipeline no-aug": lambda: measure(lambda: iterate(pipelines["no-aug"])),
        "model step": lambda: measure(lambda: fit_once(model, step_ds, steps * bs)),
        "fit aug": lambda: measure(lambda: fit_once(model, pipelines["aug"], n)),
        "fit no-aug": lambda: measure(lambda: fit_once(model, pipelines["no-aug"], n)),
    }
    results = interleave(sides, args.repeats)
    summary = summarize(results)
    rate = {side: s["images_per_s"]["median"] for side, s in summary.items()}
    ratios = {
        # How many times faster the data comes than the model can eat it (>> 1: never the bottleneck).
        "pipeline_aug_over_model_step": rate["pipeline aug"] / rate["model step"],
        "pipeline_no_aug_over_model_step": rate["pipeline no-aug"] / rate["model step"],
        # How close a real epoch gets to the pure step (1.0: training never waits on data).
        "fit_aug_over_model_step": rate["fit aug"] / rate["model step"],
        "fit_no_aug_over_model_step": rate["fit no-aug"] / rate["model step"],
        # What augmentation costs a real epoch.
        "fit_aug_over_fit_no_aug": rate["fit aug"] / rate["fit no-aug"],
        # CPU the pipeline spends per image, as a share of what a whole fit spends per image.
        "pipeline_aug_cpu_share_of_fit": summary["pipeline aug"]["cpu_ms_per_100_images"]["median"]
        / summary["fit aug"]["cpu_ms_per_100_images"]["median"],
    }

    rows = [
        {
            "side": side,
            "images/s (median)": s["images_per_s"]["median"],
            "images/s min-max": f"{s['images_per_s']['min']:,.0f}-{s['images_per_s']['max']:,.0f}",
            "ratio vs model step": s["images_per_s"]["median"] / rate["model step"],
            "CPU ms / 100 images": s["cpu_ms_per_100_images"]["median"],
            "cores busy": s["cores_busy"]["median"],
        }
        for side, s in summary.items()
    ]
    print()
    print(table(rows, list(rows[0])))
    print()
    print("\n".join(f"{k} = {v:.3f}" for k, v in ratios.items()))
    payload = {
        "settings": {
            "dataset": cfg.data.dataset,
            "train_images": n,
            "batch_size": bs,
            "augment": cfg.to_dict()["data"]["augment"],
            "repeats": args.repeats,
            "smoke": args.smoke,
            "model": cfg.to_dict()["model"],
        },
        "samples": results,
        "summary": summary,
        "ratios": ratios,
    }
    write_result(Path(args.out), NAME, payload)
    return payload


if __name__ == "__main__":
    main()
