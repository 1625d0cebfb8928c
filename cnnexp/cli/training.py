"""``cnnexp train``, ``cnnexp tune`` and ``cnnexp dashboard``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnexp.cli.args import add_bool_option, add_config_args, bounded, config_from_args


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from cnnexp.training.train import train

    result = train(cfg)
    print(f"\nrun {result.run_id} finished ({cfg.data.dataset}, split {result.split.split_hash})")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name:20s} {value:.4f}")
    print(where_to_look(result.run_id))
    return 0


def where_to_look(run_id: str) -> str:
    """How to open the run in the MLflow UI, and its model."""
    import mlflow

    from cnnexp.tracking.ui import ui_page

    uri = mlflow.get_tracking_uri()
    page = ui_page(mlflow.get_run(run_id).info.experiment_id, run_id)
    if uri.startswith(("http://", "https://")):
        ui = f"open {uri.rstrip('/')}/{page}"
    else:
        ui = f"mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000/{page}"
    return (
        f"\nthe run in the MLflow UI: {ui}\n"
        f"its model: runs:/{run_id}/model   (register it: cnnexp promote --run {run_id} --model-name NAME)"
    )


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
    print(f"  live view: cnnexp dashboard --study {result.study.study_name}")
    if result.best is not None:
        print(f"  best trial {result.best.number}: value {result.best.value:.4f}")
        for key, value in sorted(result.best.params.items()):
            print(f"    {key} = {value}")
    if result.retrained is not None:
        print(f"  retrained best: run {result.retrained.run_id}, model runs:/{result.retrained.run_id}/model")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from cnnexp.errors import ConfigError
    from cnnexp.tuning.dashboard import open_study_storage, recorded_storage, serve_dashboard
    from cnnexp.tuning.storage import display_url

    if not (args.study or args.storage):
        raise ConfigError("give --study NAME (its recorded storage is opened) or --storage URL")
    url = args.storage or recorded_storage(args.study)
    storage, study_id = open_study_storage(url, args.study)
    page = f"http://{args.host}:{args.port}/dashboard" + (f"/studies/{study_id}" if study_id is not None else "")
    print(f"optuna-dashboard on {display_url(url)}: open {page}   (Ctrl-C stops it)", flush=True)
    serve_dashboard(storage, host=args.host, port=args.port)
    return 0


def _add_tune_args(p: argparse.ArgumentParser) -> None:
    from cnnexp.tuning.storage import DEFAULT_STORAGE, HEARTBEAT_INTERVAL, PRUNERS, SAMPLERS

    p.add_argument("--space", required=True, help="search-space YAML file (see search_spaces/)")
    p.add_argument(
        "--study-name", help="Optuna study name (default: the space file's name); the same name resumes the study"
    )
    p.add_argument(
        "--n-trials",
        type=bounded(int, 0),
        help="trials this process runs (0: only report/retrain); with --time-budget-minutes, at most this many, "
        "the timed first one included",
    )
    p.add_argument(
        "--timeout", type=bounded(float, above=0), help="stop starting new trials after this many seconds (> 0)"
    )
    p.add_argument(
        "--time-budget-minutes",
        type=bounded(float, above=0),
        help="end the whole study (trials and the retrain) within this many minutes: a new study's first trial "
        "(the package defaults, where the space allows them) is timed, then the study is planned to fit; the plan "
        "is printed and logged on the parent run",
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
    p.add_argument("--seed", type=bounded(int), help="sampler seed (reproducible studies)")
    # `--retrain-best`, `--retrain-best false` (MLproject) and `--no-retrain-best` all work.
    add_bool_option(
        p,
        "--retrain-best",
        default=True,
        help="retrain the best config on the full training data and test it once (default: on)",
    )
    p.add_argument("--no-retrain-best", dest="retrain_best", action="store_false")
    p.add_argument(
        "--experiment-name",
        help="MLflow experiment of a new study's runs (default: the space's fixed experiment_name, else cnnexp)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=bounded(int, 1, empty_ok=False),
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
    p = sub.add_parser("dashboard", help="optuna-dashboard on a study's storage: live trials, plots, importances")
    p.add_argument("--study", help="study name: opens the storage its parent run recorded (tag cnnexp.storage)")
    p.add_argument("--storage", help="Optuna storage URL or journal:PATH (default: the study's recorded one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.set_defaults(func=cmd_dashboard, uses_tensorflow=False)
