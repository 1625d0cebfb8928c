"""What MLflow tracking costs a training run: cnnexp's tracked training against a bare ``model.fit``.

Measured: training throughput (training images per second of epoch wall time, validation
included) of

* ``tracked``: :func:`cnnexp.training.train.train`, i.e. an MLflow run with Keras autologging (params,
  per-epoch metrics through MLflow's asynchronous logging) into a throwaway SQLite store; test
  evaluation and model logging off, since they happen once, after training;
* ``bare``: :func:`cnnexp.training.train.fit` with autologging disabled, i.e. the very function ``train``
  calls inside its run: same model config, split, train subset, batch size, tf.data pipeline,
  augmentation, validation set each epoch and callbacks.

Only epochs 2..N are timed (a Keras callback stamps each epoch's start and the end of training),
so model building, graph tracing in epoch 1 and the run's setup and teardown are excluded on both
sides; what remains differs only by the per-epoch tracking work.

Why: every run and every tuning trial pays this cost; it must stay in the noise.
Target: tracked/bare throughput ratio >= 0.95.

    python -m benchmarks.tracking_overhead [--smoke] [--repeats 3] [--epochs 3] [--train-subset 10000]
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import mlflow  # noqa: E402

from benchmarks.common import SMOKE_CONFIG, interleave, parser, summarize, table, throwaway_store, write_result  # noqa: E402
from cnnexp.config import ExperimentConfig, build_config  # noqa: E402
from cnnexp.data.sources import load_dataset  # noqa: E402
from cnnexp.data.split import Split, split_dataset  # noqa: E402
from cnnexp.training.train import fit, set_seeds, train  # noqa: E402

NAME = "tracking_overhead"
TARGET = 0.95
EXPERIMENT = "bench-tracking-overhead"


class EpochClock(keras.callbacks.Callback):
    """Stamps the start of every epoch and the end of training.

    Start-to-start intervals include every callback's ``on_epoch_end`` of the previous epoch, also
    those registered after this one (MLflow's autolog callback is appended last).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.stamps.append(time.perf_counter())

    def on_train_end(self, logs: dict | None = None) -> None:
        self.stamps.append(time.perf_counter())

    def timed_seconds(self) -> float:
        """Wall time of epochs 2..N (epoch 1 traces the graphs)."""
        if len(self.stamps) < 3:
            raise RuntimeError("timing needs at least 2 epochs")
        return self.stamps[-1] - self.stamps[1]


def make_config(dataset: str, epochs: int, train_subset: int | None, batch_size: int, smoke: bool) -> ExperimentConfig:
    overrides: dict[str, Any] = {
        "data.dataset": dataset,
        "data.train_subset": train_subset,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        # Both sides must run every epoch: no early stop on one side only.
        "train.early_stopping_patience": 0,
        "experiment_name": EXPERIMENT,
    }
    if smoke:
        overrides.update(SMOKE_CONFIG)
    return build_config(overrides=overrides)


def _sample(clock: EpochClock, cfg: ExperimentConfig, n_train: int) -> dict[str, float]:
    seconds = clock.timed_seconds()
    epochs = cfg.train.epochs - 1
    return {"images_per_s": n_train * epochs / seconds, "epoch_s": seconds / epochs}


def run_tracked(cfg: ExperimentConfig, n_train: int) -> dict[str, float]:
    """One tracked run (it loads and splits the data itself, outside the timed epochs)."""
    keras.backend.clear_session()
    clock = EpochClock()
    train(cfg, extra_callbacks=[clock], evaluate_test=False, log_model=False)
    return _sample(clock, cfg, n_train)


def run_bare(cfg: ExperimentConfig, split: Split) -> dict[str, float]:
    """The same fit without a run: autologging off, so keras.Model.fit is not instrumented."""
    keras.backend.clear_session()
    mlflow.keras.autolog(disable=True)
    set_seeds(cfg.train)  # as train() does: same shuffling, same op determinism
    clock = EpochClock()
    fit(cfg, split, [clock])
    return _sample(clock, cfg, len(split.y_train))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; 2..N are timed (default %(default)s)")
    p.add_argument("--train-subset", type=int, default=10_000, help="training images (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    if args.smoke:
        args.dataset, args.epochs, args.train_subset = "digits", 2, None
    cfg = make_config(args.dataset, args.epochs, args.train_subset, args.batch_size, args.smoke)
    split = split_dataset(load_dataset(cfg.data), cfg.data, cfg.train.seed)
    n_train = len(split.y_train)
    print(f"{cfg.data.dataset}: {split.sizes()}, batch {cfg.train.batch_size}, {cfg.train.epochs} epochs (2.. timed)")

    with throwaway_store(EXPERIMENT):
        try:
            results = interleave(
                {"bare": lambda: run_bare(cfg, split), "tracked": lambda: run_tracked(cfg, n_train)}, args.repeats
            )
        finally:
            mlflow.keras.autolog(disable=True)  # leave keras.Model.fit uninstrumented for the caller
    summary = summarize(results)
    ratio = summary["tracked"]["images_per_s"]["median"] / summary["bare"]["images_per_s"]["median"]

    rows = [
        {
            "side": side,
            "images/s (median)": s["images_per_s"]["median"],
            "images/s min-max": f"{s['images_per_s']['min']:,.0f}-{s['images_per_s']['max']:,.0f}",
            "s/epoch (median)": s["epoch_s"]["median"],
            "ratio vs bare": s["images_per_s"]["median"] / summary["bare"]["images_per_s"]["median"],
        }
        for side, s in summary.items()
    ]
    print()
    print(table(rows, list(rows[0])))
    print(f"\ntracked/bare = {ratio:.3f} (target >= {TARGET}): {'met' if ratio >= TARGET else 'NOT met'}")
    payload = {
        "settings": {
            "dataset": cfg.data.dataset,
            "train_images": n_train,
            "val_images": len(split.y_val),
            "batch_size": cfg.train.batch_size,
            "epochs": cfg.train.epochs,
            "timed_epochs": cfg.train.epochs - 1,
            "repeats": args.repeats,
            "store": "sqlite",
            "smoke": args.smoke,
            "model": cfg.to_dict()["model"],
        },
        "samples": results,
        "summary": summary,
        "ratio_tracked_over_bare": ratio,
        "target": TARGET,
        "meets_target": ratio >= TARGET,
    }
    write_result(Path(args.out), NAME, payload)
    return payload


if __name__ == "__main__":
    main()
