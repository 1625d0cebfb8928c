"""The ``cnnexp`` command: thin argument parsing that calls the library."""

from __future__ import annotations

import argparse
import logging
import os
import sys

# TensorFlow's C++ start-up chatter hides our own output; users can still raise it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cnnexp.cli import analysis, deployment, training  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnexp", description="Tracked CNN image-classification experiments.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (training, deployment, analysis):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from cnnexp.errors import CnnexpError

    try:
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
