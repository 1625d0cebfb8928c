"""``cnnexp explore``, ``report``, ``runs`` and ``reproduce``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnexp.cli.args import add_config_args, bounded, config_from_args


def cmd_explore(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from cnnexp.analysis.explore import explore

    result = explore(cfg, Path(args.out))
    print(result.counts.to_string(index=False))
    print(f"\nexploration files in {result.out_dir}, logged to run {result.run_id} (tag cnnexp.kind=exploration)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if args.study:
        from cnnexp.reports.study import report_study

        report = report_study(args.study, out or Path("reports") / f"study-{args.study}", log=not args.no_log)
    else:
        from cnnexp.reports.run import report_run

        name = args.run or args.model.replace("models:/", "").replace("/", "-").replace("@", "-")
        report = report_run(args.run, out or Path("reports") / name, log=not args.no_log, model_uri=args.model)
    print(f"report: {report.markdown}\n        {report.html}")
    if not args.no_log:
        print(f"logged as artifacts under {report.artifact_path}/ of run {report.run_id}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from cnnexp.reports.runs_table import compare_runs, format_runs

    frame = compare_runs(
        args.experiment,
        metrics=_names(args.metrics),
        params=_names(args.params),
        sort_by=args.sort,
        ascending=args.ascending,
        filter_string=args.filter,
        limit=args.limit,
        kind=args.kind,
    )
    print(format_runs(frame))
    return 0


def _names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(n.strip() for n in text.split(",") if n.strip())


def cmd_reproduce(args: argparse.Namespace) -> int:
    from cnnexp.training.reproduce import format_comparison, reproduce

    overrides = {"data.data_dir": args.data_dir} if args.data_dir else None
    result = reproduce(args.run_id, overrides)
    print(f"\nrun {result.result.run_id} reproduces {result.source_run_id} (tag cnnexp.reproduced_from)")
    print(format_comparison(result.comparison))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from cnnexp.reports.runs_table import DEFAULT_METRICS, DEFAULT_PARAMS, KINDS

    p = sub.add_parser("explore", help="explore a dataset: samples, class counts, pixel histogram, mean images")
    add_config_args(p)
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
    p.add_argument("--metrics", help=f"comma-separated metric names (default: {','.join(DEFAULT_METRICS)})")
    p.add_argument("--params", help=f"comma-separated param names (default: {','.join(DEFAULT_PARAMS)})")
    p.add_argument("--sort", help="metric to sort by, best first (default: the first of --metrics); shown as a column")
    order = p.add_mutually_exclusive_group()
    order.add_argument(
        "--ascending", action="store_true", default=None, help="sort ascending (default for losses, errors, ECE)"
    )
    order.add_argument("--descending", dest="ascending", action="store_false", default=None, help="sort descending")
    p.add_argument("--filter", default="", help="MLflow search filter, e.g. \"params.`model.family` = 'residual'\"")
    p.add_argument("--limit", type=bounded(int, 1, empty_ok=False), default=20, help="at most this many runs (20)")
    p.add_argument(
        "--kind", choices=tuple(KINDS), default="training", help="which runs: training (default), exploration, all"
    )
    p.set_defaults(func=cmd_runs, uses_tensorflow=False)

    p = sub.add_parser("reproduce", help="re-run a training run from its MLflow record and compare metrics")
    p.add_argument("run_id", help="the training run to re-run")
    p.add_argument("--data-dir", help="where the dataset files are now, if not where they were")
    p.set_defaults(func=cmd_reproduce)
