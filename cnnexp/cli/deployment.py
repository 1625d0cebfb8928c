"""``cnnexp promote`` and ``cnnexp app``."""

from __future__ import annotations

import argparse

from cnnexp.cli.args import add_bool_option, bounded


def cmd_promote(args: argparse.Namespace) -> int:
    from cnnexp.deploy.registry import promote

    # MLproject passes "" for an unused option; treat it as absent.
    run_id, study = args.run or None, args.study or None
    decision = promote(
        args.model_name,
        run_id=run_id,
        study=study,
        force=args.force,
        metric=args.metric,
        alpha=args.alpha,
        min_margin=args.min_margin,
        max_latency_ms=args.max_latency_ms,
    )
    print(decision.summary())
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from cnnexp.deploy.webapp import serve

    serve(
        args.model,
        host=args.host,
        port=args.port,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        follow_interval=args.follow_interval if args.follow_alias else None,
    )
    return 0


def _optional_float(text: str) -> float | None:
    # MLproject passes "" for an unused option.
    return float(text) if text.strip() else None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("promote", help="register a run's model and make it champion if it beats the champion")
    p.add_argument("--run", help="id of the training run whose model to promote")
    p.add_argument("--study", help="promote the retrained best run of this Optuna study")
    p.add_argument("--model-name", required=True, help="registered model name")
    add_bool_option(
        p, "--force", default=False, help="make it champion even if it is not better (tagged on the version)"
    )
    p.add_argument("--metric", default="test_accuracy", help="test_accuracy (default), test_macro_f1 or test_loss")
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="significance level of the paired test the challenger must pass (default 0.05)",
    )
    p.add_argument(
        "--min-margin",
        type=float,
        default=0.0,
        help="and it must be ahead by at least this much, in the metric's units (default 0; 0.005 = half a point)",
    )
    p.add_argument(
        "--max-latency-ms",
        type=_optional_float,
        default=None,
        help="refuse a challenger whose single-image predict takes longer (median, measured here; default: no limit)",
    )
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("app", help="web page and JSON endpoint that classify uploaded images")
    p.add_argument("--model", required=True, help='model URI, e.g. "models:/NAME@champion"')
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=bounded(int, 1, 65535), default=8000, help="port, 1-65535 (default 8000)")
    p.add_argument(
        "--max-upload-mb", type=bounded(float, above=0), default=5.0, help="largest accepted image file (default 5 MB)"
    )
    add_bool_option(
        p,
        "--follow-alias",
        default=False,
        help="re-read the models:/NAME@ALIAS alias and serve the version it moves to (see /health)",
    )
    p.add_argument(
        "--follow-interval", type=bounded(float, above=0), default=30.0, help="seconds between alias checks (30)"
    )
    p.set_defaults(func=cmd_app)
