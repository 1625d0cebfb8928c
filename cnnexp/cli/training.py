"""``cnnexp train`` and ``cnnexp tune``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnexp.cli.args import add_bool_option, add_config_args, config_from_args, optional


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from cnnexp.training.train import train

    result = train(cfg)
    print(f"\nrun {result.run_id} finished ({cfg.data.dataset}, split {result.split.split_hash})")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name:20s} {value:.4f}")
    print("compare runs: mlflow ui   (then open http://127.0.0.1:5000)")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from cnnexp.errors import ConfigError
    from cnnexp.tuning.plan import NO_CAP
    from cnnexp.tuning.tune import TuneOptions, tune

    n_trials = args.n_trials
    if n_trials is None:
        if args.time_budget_minutes is None:
            raise ConfigError("give --n-trials N, or --time-budget-minutes M to let the study plan itself")
        n_trials = NO_CAP  # the deadline decides
    opts = TuneOptions(
        space=args.space,
        study_name=args.study_name or Path(args.space).stem,
        n_trials=n_trials,
        timeout=args.timeout,
        storage=args.storage or TuneOptions.storage,
        sampler=args.sampler,
        pruner=args.pruner,
        seed=args.seed,
        retrain_best=args.retrain_best,
        experiment_name=args.experiment_name,
        heartbeat_interval=args.heartbeat_interval,
        time_budget_minutes=args.time_budget_minutes,
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
    from cnnexp.tuning.storage import DEFAULT_STORAGE, HEARTBEAT_INTERVAL, PRUNERS, SAMPLERS

    p.add_argument("--space", required=True, help="search-space YAML file (see search_spaces/)")
    p.add_argument(
        "--study-name", help="Optuna study name (default: the space file's name); the same name resumes the study"
    )
    p.add_argument(
        "--n-trials",
        type=optional(int),
        help="trials this process runs (0: only report/retrain); with --time-budget-minutes, at most this many",
    )
    p.add_argument("--timeout", type=optional(float), help="stop starting new trials after this many seconds")
    p.add_argument(
        "--time-budget-minutes",
        type=optional(float),
        help="end the whole study (trials and the retrain) within this many minutes: the first trial is timed, "
        "then the study is planned to fit; the plan is printed and logged on the parent run",
    )
    p.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"Optuna storage: an RDB URL (default {DEFAULT_STORAGE}) or journal:PATH for parallel workers",
    )
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    p.add_argument(
        "--pruner",
        default="median",
        choices=PRUNERS,
        help="median (default), hyperband, sha (successive halving; pair it with train.lr_schedule: wsd), none",
    )
    p.add_argument("--seed", type=optional(int), help="sampler seed (reproducible studies)")
    # `--retrain-best`, `--retrain-best false` (MLproject) and `--no-retrain-best` all work.
    add_bool_option(
        p,
        "--retrain-best",
        default=True,
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model as a tracked MLflow run")
    add_config_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("tune", help="run (or resume) an Optuna study of tracked trainings")
    _add_tune_args(p)
    p.set_defaults(func=cmd_tune)
