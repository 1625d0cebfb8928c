"""What the ``cnnexp`` command prints: Keras' epoch lines, cnnexp's own messages and real warnings.

TensorFlow's C++ start-up chatter (``I0000 ... cudart_stub.cc``, ``E0000 ... cuInit``), MLflow's
INFO lines and its artifact-download progress bars say nothing a user can act on, and bury the
epoch lines. ``-v``/``--verbose`` or ``CNNEXP_VERBOSE=1`` keeps all of it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

VERBOSE_ENV = "CNNEXP_VERBOSE"

# A line of absl's C++ log format ("I0000 00:00:1796124483.046263   11045 cudart_stub.cc:31] ..."), and the
# notice absl prints before its logging is initialised.
_ABSL_LINE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |^WARNING: All log messages before absl")


def verbose_requested(flag: bool) -> bool:
    return flag or os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def configure(verbose: bool) -> None:
    """Set up logging for one command; in quiet mode also silence TensorFlow and MLflow chatter.

    Environment variables are only defaulted: a user's own TF_CPP_MIN_LOG_LEVEL or MLFLOW_LOGGING_LEVEL wins.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if verbose:
        return
    # TF reads this when it is imported; 3 also hides the C++ ERROR lines it prints on a machine
    # without a GPU (cuInit) and about graph attributes (node_def_util): real errors raise in Python.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported ...
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())  # ... if it already was


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its pre-initialisation C++ log lines dropped (nothing else on stderr is).

    TensorFlow prints them while its libraries load, before TF_CPP_MIN_LOG_LEVEL is applied, so only
    catching file descriptor 2 during the import removes them. Every other line is written back.
    """
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if not _ABSL_LINE.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()
