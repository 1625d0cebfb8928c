"""One error hierarchy. Every error cnnexp raises on purpose is a :class:`CnnexpError` whose message
names the value, file or run that is wrong and what to do; the CLI prints it as one line and
exits with ``exit_code``. Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class CnnexpError(Exception):
    """Base class: a message for the user, printed by the CLI as ``cnnexp: <label>: <message>``."""

    label = "error"
    exit_code = 1


class ConfigError(CnnexpError, ValueError):
    """A configuration value or key is invalid; the message names it."""

    label = "configuration error"
    exit_code = 2


class SearchSpaceError(ConfigError):
    """A search-space file is malformed; the message names the file, the key and the reason."""


class DataError(CnnexpError):
    """A dataset is missing, truncated or unreadable; the message names the file and the fix."""

    label = "data error"


class DataChanged(DataError):
    """The data on this machine is not the data a run was trained on."""


class RunError(CnnexpError):
    """A run, model version or one of its records cannot be found or used; the message says which."""

    label = "run error"


class TrainingDiverged(CnnexpError):
    """The loss became NaN or infinite: the run (or trial) fails with this reason."""

    label = "training diverged"


class PromotionError(CnnexpError):
    """A promotion cannot go ahead; the message says why and what to do."""

    label = "promotion error"


class AppError(CnnexpError):
    """The web app cannot start; the message says why."""

    label = "app error"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a container platform or job scheduler), raised as an interrupt
    so every open run ends KILLED as with Ctrl-C; the CLI installs the handler and exits 143."""

    def __str__(self) -> str:
        return "SIGTERM"
