"""The ``cnnexp`` command: thin argument parsing that calls the library."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
    for command in sub.choices.values():
        command.set_defaults(command_parser=command)
    return parser


def _terminate(signum: int, frame: object) -> None:
    from cnnexp.errors import Terminated

    # Once: a second SIGTERM must not cut short the cleanup that ends the runs KILLED.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`~cnnexp.errors.Terminated` (a KeyboardInterrupt) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:
        # The subcommand's own usage (`mlflow run -P foo=bar` appends `--foo bar` to `cnnexp train`).
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.verbose = console.verbose_requested(args.verbose)
    console.configure(args.verbose)
    from cnnexp.errors import CnnexpError, Terminated

    try:
        with sigterm_interrupts():
            if getattr(args, "uses_tensorflow", True) and not args.verbose:
                console.import_tensorflow_quietly()
            return args.func(args)
    except CnnexpError as e:
        # One line naming the problem; --verbose adds the traceback for a bug report.
        if args.verbose:
            logging.exception("cnnexp failed")
        print(f"cnnexp: {e.label}: {e}", file=sys.stderr)
        return e.exit_code
    except Terminated:
        print("cnnexp: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("cnnexp: interrupted", file=sys.stderr)
        return 130
