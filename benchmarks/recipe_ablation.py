"""What each training technique buys within a time budget, each against the current default.

A technique can pay in two ways: more epochs fit in the budget (speed), or more accuracy per
epoch. The two are measured apart, so a speed swing on a shared CPU cannot pass for accuracy:

1. **Speed**: every variant's training step is timed on the real pipeline (cnnexp's own budget
   probe, ``training/budget.py``), variants interleaved, ``--repeats`` times, alone on the machine.
2. **Accuracy**: each variant trains for the epochs its median speed fits in ``--budget-minutes``
   (as the budget planner would size it), then test accuracy is measured. Op determinism is on,
   so this part does not depend on the machine's speed and may run ``--jobs`` variants at once.

Test-time augmentation is measured on each trained model: the saved model's own prediction (flip
averaging where the dataset flips) against flip x one-pixel translations (airbench's
``infer_mirror_translate``: half the original views, a quarter each of the image shifted one pixel
up-left and down-right, reflect-padded).

    python -m benchmarks.recipe_ablation --budget-minutes 5 --jobs 2 \\
        --variant default= --variant conv_pool_bn=model.block_order=conv_pool_bn \\
        --variant no_dropout=model.dropout=0,model.head_dropout=0 --variant ema=train.ema_momentum=0.998
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import common


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, sets = text.partition("=")
    overrides = dict(item.split("=", 1) for item in sets.split(",") if item)
    return name, overrides


def _split_and_config(dataset: str, overrides: dict[str, str], seed: int, train_subset: int | None = None):
    from cnnexp.config import build_config
    from cnnexp.data.sources import load_dataset
    from cnnexp.data.split import split_dataset

    cfg = build_config(
        overrides={"data.dataset": dataset, "train.seed": seed, "data.train_subset": train_subset, **overrides}
    )
    return cfg, split_dataset(load_dataset(cfg.data), cfg.data, seed)


def speed_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per training step and per planned epoch of one variant, in this fresh process."""
    import math

    from cnnexp.data.pipeline import build_augmenter
    from cnnexp.models.cnn import build_model
    from cnnexp.training.budget import time_steps, validation_seconds
    from cnnexp.training.train import compile_model, dtype_policy

    cfg, split = _split_and_config(args.dataset, json.loads(args.overrides), args.seed, args.train_subset)
    t = cfg.train
    with dtype_policy(t.precision):
        model = build_model(cfg.model, split.x_train.shape[1:], len(split.class_names))
    steps = math.ceil(len(split.y_train) / t.batch_size)
    compile_model(model, t, steps)
    step = time_steps(model, split.x_train, split.y_train, t.batch_size, build_augmenter(cfg.data.augment, 0), 40)
    val = validation_seconds(len(split.y_val), t.batch_size, step)
    return {"step_s": step, "epoch_s": steps * step + val, "params": model.count_params()}


def accuracy_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Train one variant for ``--epochs`` and report test accuracy with and without translation TTA."""
    import numpy as np

    from cnnexp.training.train import fit, set_seeds

    overrides = {**json.loads(args.overrides), "train.epochs": args.epochs}
    cfg, split = _split_and_config(args.dataset, overrides, args.seed, args.train_subset)
    set_seeds(cfg.train)
    model = fit(cfg, split).model

    def predict(x):
        return model.predict(x, batch_size=1000, verbose=0)

    x, y = split.x_test, split.y_test
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    h, w = x.shape[1:3]
    base = predict(x)
    shifted = (predict(padded[:, :h, :w]) + predict(padded[:, 2 : h + 2, 2 : w + 2])) / 2
    return {
        "epochs": args.epochs,
        "test_accuracy": float(np.mean(base.argmax(1) == y)),
        "test_accuracy_translate_tta": float(np.mean((0.5 * base + 0.5 * shifted).argmax(1) == y)),
    }


def _run(args: argparse.Namespace, kind: str, overrides: dict[str, str], epochs: int | None = None) -> dict[str, Any]:
    """One worker in a fresh process (timing needs one); smoke runs stay in-process."""
    if args.smoke:
        worker_args = argparse.Namespace(**{**vars(args), "overrides": json.dumps(overrides), "epochs": epochs})
        return (speed_worker if kind == "speed" else accuracy_worker)(worker_args)
    cmd = ["-m", "benchmarks.recipe_ablation", "--worker", kind, "--overrides", json.dumps(overrides)]
    cmd += ["--dataset", args.dataset, "--seed", str(args.seed)] + (["--epochs", str(epochs)] if epochs else [])
    return common.run_python(cmd + (["--train-subset", str(args.train_subset)] if args.train_subset else []))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = common.parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--budget-minutes", type=float, default=10.0)
    p.add_argument("--variant", action="append", default=[], help="NAME=KEY=VALUE,KEY=VALUE (NAME= is the default)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--jobs", type=int, default=1, help="accuracy runs at once (their result does not depend on speed)")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--speeds", type=Path, help="JSON {variant: [speed samples]} of an earlier run: skip the speed part")
    p.add_argument("--known", type=Path, help="JSON {variant: accuracy result} of an earlier run: not trained again")
    p.add_argument("--worker", choices=["speed", "accuracy"], help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps((speed_worker if args.worker == "speed" else accuracy_worker)(args)))
        return {}
    if args.smoke:
        args.dataset, args.budget_minutes, args.repeats, args.jobs = "digits", 0.05, 1, 1
    variants = dict(parse_variant(v) for v in args.variant) or {"default": {}}
    speeds: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    if args.speeds:  # measured earlier, alone on the machine; the accuracy part does not depend on speed
        speeds = {name: json.loads(args.speeds.read_text())[name] for name in variants}
    for _ in range(0 if args.speeds else args.repeats):  # interleaved: a speed swing hits every variant alike
        for name, overrides in variants.items():
            speeds[name].append(_run(args, "speed", overrides))
            print(f"speed {name}: {speeds[name][-1]}", flush=True)
    known = json.loads(args.known.read_text()) if args.known else {}
    rows = {}
    for name, samples in speeds.items():
        epoch_s = common.spread([s["epoch_s"] for s in samples])["median"]
        epochs = max(1, int(args.budget_minutes * 60 / epoch_s))
        rows[name] = {"variant": name, "epoch_s": epoch_s, "epochs": epochs, "params": samples[0]["params"]}

    def accuracy(name: str) -> dict[str, Any]:
        if name in known:
            return known[name]
        result = _run(args, "accuracy", variants[name], rows[name]["epochs"])
        print(f"accuracy {name}: {result}", flush=True)
        return result

    with ThreadPoolExecutor(args.jobs) as pool:
        for name, result in zip(variants, pool.map(accuracy, variants), strict=True):
            rows[name].update(result)
    base = rows.get("default")
    for row in rows.values():
        if base:
            row["vs_default_pt"] = 100 * (row["test_accuracy"] - base["test_accuracy"])
        row["tta_gain_pt"] = 100 * (row["test_accuracy_translate_tta"] - row["test_accuracy"])
    columns = ["variant", "params", "epoch_s", "epochs", "test_accuracy", "vs_default_pt", "tta_gain_pt"]
    print(common.table(list(rows.values()), columns))
    payload = {
        "dataset": args.dataset,
        "budget_minutes": args.budget_minutes,
        "seed": args.seed,
        "variants": variants,
        "speed_samples": speeds,
        "reused": {"speeds": str(args.speeds) if args.speeds else None, "accuracy": sorted(known)},
        "rows": list(rows.values()),
        "smoke": args.smoke,
    }
    common.write_result(args.out, f"recipe_ablation-{args.dataset}", payload)
    return payload


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
