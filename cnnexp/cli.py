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


def cmd_explore(args: argparse.Namespace) -> int:
    cfg = _config_from_args(args)
    from cnnexp.explore import explore

    result = explore(cfg, Path(args.out))
    print(result.counts.to_string(index=False))
    print(f"\nexploration files in {result.out_dir}, logged to run {result.run_id} (tag cnnexp.kind=exploration)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if args.study:
        from cnnexp.report_study import report_study

        report = report_study(args.study, out or Path("reports") / f"study-{args.study}", log=not args.no_log)
    else:
        from cnnexp.report_run import report_run

        name = args.run or args.model.replace("models:/", "").replace("/", "-").replace("@", "-")
        report = report_run(args.run, out or Path("reports") / name, log=not args.no_log, model_uri=args.model)
    print(f"report: {report.markdown}\n        {report.html}")
    if not args.no_log:
        print(f"logged as artifacts under report/ of run {report.run_id}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from cnnexp.runs_table import compare_runs, format_runs

    frame = compare_runs(
        args.experiment,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
        params=tuple(p.strip() for p in args.params.split(",") if p.strip()),
        sort_by=args.sort,
        ascending=args.ascending,
        filter_string=args.filter,
        limit=args.limit,
    )
    print(format_runs(frame))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from cnnexp.reproduce import format_comparison, reproduce

    overrides = {"data.data_dir": args.data_dir} if args.data_dir else None
    result = reproduce(args.run_id, overrides)
    print(f"\nrun {result.result.run_id} reproduces {result.source_run_id} (tag cnnexp.reproduced_from)")
    print(format_comparison(result.comparison))
    return 0


def _add_analysis_parsers(sub) -> None:
    from cnnexp.runs_table import DEFAULT_METRICS, DEFAULT_PARAMS

    p = sub.add_parser("explore", help="explore a dataset: samples, class counts, pixel histogram, mean images")
    _add_config_args(p)
    p.add_argument("--out", default="exploration", help="folder for the files (default: ./exploration)")
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("report", help="Markdown + HTML report of a training run, a registered model or a study")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="training run id")
    which.add_argument("--model", help="registered model version: models:/NAME/VERSION or models:/NAME@ALIAS")
    which.add_argument("--study", help="study name (as given to cnnexp tune --study-name)")
    p.add_argument("--out", help="output folder (default: ./reports/<run id or study>)")
    p.add_argument("--no-log", action="store_true", help="only write the files, do not log them to the run")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("runs", help="table comparing the runs of an experiment by chosen metrics")
    p.add_argument("--experiment", default="cnnexp", help="experiment name (default: cnnexp)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated metric names")
    p.add_argument("--params", default=",".join(DEFAULT_PARAMS), help="comma-separated param names")
    p.add_argument("--sort", help="metric to sort by (default: the first of --metrics), best first")
    p.add_argument("--ascending", action="store_true", help="sort ascending (for losses)")
    p.add_argument("--filter", default="", help="MLflow search filter, e.g. \"params.model.family = 'residual'\"")
    p.add_argument("--limit", type=int, default=20, help="at most this many runs (default 20)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("reproduce", help="re-run a training run from its MLflow record and compare metrics")
    p.add_argument("run_id", help="the training run to re-run")
    p.add_argument("--data-dir", help="where the dataset files are now, if not where they were")
    p.set_defaults(func=cmd_reproduce)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnexp", description="Tracked CNN image-classification experiments.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one model as a tracked MLflow run")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)
    _add_analysis_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from cnnexp.config import ConfigError
    from cnnexp.datasets import DataError
    from cnnexp.run_record import RunError

    try:
        return args.func(args)
    except ConfigError as e:
        print(f"cnnexp: configuration error: {e}", file=sys.stderr)
        return 2
    except DataError as e:
        print(f"cnnexp: data error: {e}", file=sys.stderr)
        return 1
    except RunError as e:
        print(f"cnnexp: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnexp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
