"""The ``cnnexp`` command: thin argument parsing that calls the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# TensorFlow's C++ start-up chatter hides our own output; users can still raise it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Flag -> dotted config key. Every flag is also reachable as --set KEY=VALUE.
TRAIN_FLAGS = {
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "train_subset": "data.train_subset",
    "val_fraction": "data.val_fraction",
    "test_fraction": "data.test_fraction",
    "model_family": "model.family",
    "blocks": "model.blocks",
    "filters": "model.filters",
    "optimizer": "train.optimizer",
    "learning_rate": "train.learning_rate",
    "batch_size": "train.batch_size",
    "epochs": "train.epochs",
    "label_smoothing": "train.label_smoothing",
    "patience": "train.early_stopping_patience",
    "lr_schedule": "train.lr_schedule",
    "seed": "train.seed",
    "experiment_name": "experiment_name",
    "run_name": "run_name",
}


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with any of the config sections (data, model, train)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config value by its dotted key, e.g. --set model.dropout=0.3 (repeatable)",
    )
    for flag, key in TRAIN_FLAGS.items():
        p.add_argument("--" + flag.replace("_", "-"), dest=flag, help=f"sets {key}")


def _config_from_args(args: argparse.Namespace):
    from cnnexp.config import ConfigError, build_config, load_yaml

    base = load_yaml(args.config) if args.config else {}
    overrides: dict[str, str] = {}
    for flag, key in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value not in (None, ""):  # MLproject passes "" for "use the default"
            overrides[key] = value
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. model.blocks=3")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    return build_config(base, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _config_from_args(args)
    from cnnexp.train import train

    result = train(cfg)
    print(f"\nrun {result.run_id} finished ({cfg.data.dataset}, split {result.split.split_hash})")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name:20s} {value:.4f}")
    print("compare runs: mlflow ui   (then open http://127.0.0.1:5000)")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from cnnexp.registry import PromotionError, promote

    # MLproject passes "" for an unused option; treat it as absent.
    run_id, study = args.run or None, args.study or None
    try:
        decision = promote(args.model_name, run_id=run_id, study=study, force=args.force, metric=args.metric)
    except PromotionError as e:
        print(f"cnnexp: promotion error: {e}", file=sys.stderr)
        return 1
    print(decision.summary())
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from cnnexp.webapp import AppError, serve

    if args.max_upload_mb <= 0:
        print("cnnexp: --max-upload-mb must be positive", file=sys.stderr)
        return 2
    try:
        serve(args.model, host=args.host, port=args.port, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    except AppError as e:
        print(f"cnnexp: {e}", file=sys.stderr)
        return 1
    return 0


def _add_deploy_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("promote", help="register a run's model and make it champion if it beats the champion")
    p.add_argument("--run", help="id of the training run whose model to promote")
    p.add_argument("--study", help="promote the retrained best run of this Optuna study")
    p.add_argument("--model-name", required=True, help="registered model name")
    p.add_argument(
        "--force",
        nargs="?",
        const=True,
        default=False,
        type=_bool,
        help="make it champion even if it is not better (tagged on the version)",
    )
    p.add_argument("--metric", default="test_accuracy", help="test_accuracy (default), test_macro_f1 or test_loss")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("app", help="web page and JSON endpoint that classify uploaded images")
    p.add_argument("--model", required=True, help='model URI, e.g. "models:/NAME@champion"')
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=5.0, help="largest accepted image file (default 5 MB)")
    p.set_defaults(func=cmd_app)


def cmd_tune(args: argparse.Namespace) -> int:
    from cnnexp.tune import TuneOptions, tune

    opts = TuneOptions(
        space=args.space,
        study_name=args.study_name or Path(args.space).stem,
        n_trials=args.n_trials,
        timeout=args.timeout,
        storage=args.storage or TuneOptions.storage,
        sampler=args.sampler,
        pruner=args.pruner,
        seed=args.seed,
        retrain_best=args.retrain_best,
        experiment_name=args.experiment_name,
        heartbeat_interval=args.heartbeat_interval,
    )
    result = tune(opts)
    print(f"\nstudy {result.study.study_name}: parent run {result.parent_run_id}")
    if result.best is not None:
        print(f"  best trial {result.best.number}: value {result.best.value:.4f}")
        for key, value in sorted(result.best.params.items()):
            print(f"    {key} = {value}")
    if result.retrained is not None:
        print(f"  retrained best: run {result.retrained.run_id}, model runs:/{result.retrained.run_id}/model")
    return 0


def _add_tune_args(p: argparse.ArgumentParser) -> None:
    from cnnexp.study_setup import DEFAULT_STORAGE, HEARTBEAT_INTERVAL, PRUNERS, SAMPLERS

    p.add_argument("--space", required=True, help="search-space YAML file (see search_spaces/)")
    p.add_argument(
        "--study-name", help="Optuna study name (default: the space file's name); the same name resumes the study"
    )
    p.add_argument("--n-trials", type=int, required=True, help="trials this process runs (0: only report/retrain)")
    p.add_argument("--timeout", type=_optional(float), help="stop starting new trials after this many seconds")
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"Optuna storage: an RDB URL (default {DEFAULT_STORAGE}) or journal:PATH for parallel workers",
    )
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    p.add_argument("--pruner", default="median", choices=PRUNERS)
    p.add_argument("--seed", type=_optional(int), help="sampler seed (reproducible studies)")
    # `--retrain-best`, `--retrain-best false` (MLproject) and `--no-retrain-best` all work.
    p.add_argument(
        "--retrain-best",
        nargs="?",
        const=True,
        default=True,
        type=_bool,
        help="retrain the best config on the full training data and test it once (default: on)",
    )
    p.add_argument("--no-retrain-best", dest="retrain_best", action="store_false")
    p.add_argument("--experiment-name", default="cnnexp", help="MLflow experiment of a new study's runs")
    p.add_argument(
        "--heartbeat-interval",
        type=int,
        default=HEARTBEAT_INTERVAL,
        help=f"RDB storages: seconds between a trial's heartbeats; a trial silent for twice this is failed "
        f"and retried (default {HEARTBEAT_INTERVAL})",
    )


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on", ""):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(tp):
    """MLproject passes "" for "not set"."""

    def parse(text: str):
        return None if text.strip() == "" else tp(text)

    parse.__name__ = tp.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnexp", description="Tracked CNN image-classification experiments.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one model as a tracked MLflow run")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)
    _add_deploy_commands(sub)
    p = sub.add_parser("tune", help="run (or resume) an Optuna study of tracked trainings")
    _add_tune_args(p)
    p.set_defaults(func=cmd_tune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from cnnexp.config import ConfigError
    from cnnexp.datasets import DataError

    try:
        return args.func(args)
    except ConfigError as e:
        print(f"cnnexp: configuration error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"cnnexp: data error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnexp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
