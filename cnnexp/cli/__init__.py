"""The ``cnnexp`` command: thin argument parsing that calls the library."""

from __future__ import annotations

import argparse
import logging
import sys

from cnnexp.cli import analysis, console, deployment, training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnexp", description="Tracked CNN image-classification experiments.")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help=f"debug logging and every TensorFlow/MLflow log line (or set {console.VERBOSE_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (training, deployment, analysis):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose = console.verbose_requested(args.verbose)
    console.configure(args.verbose)
    from cnnexp.errors import CnnexpError

    try:
        if getattr(args, "uses_tensorflow", True) and not args.verbose:
            console.import_tensorflow_quietly()
        return args.func(args)
    except CnnexpError as e:
        # One line naming the problem; --verbose adds the traceback for a bug report.
        if args.verbose:
            logging.exception("cnnexp failed")
        print(f"cnnexp: {e.label}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("cnnexp: interrupted", file=sys.stderr)
        return 130
