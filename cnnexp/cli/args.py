"""Argument helpers shared by the ``cnnexp`` subcommands."""

from __future__ import annotations

import argparse

from cnnexp.config import ExperimentConfig
from cnnexp.config_io import parse_bool as parse_value

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
    "time_budget_minutes": "train.time_budget_minutes",
    "seed": "train.seed",
    "experiment_name": "experiment_name",
    "run_name": "run_name",
}


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML file with any of the config sections (data, model, train)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config value by its dotted key, e.g. --set model.dropout=0.3 (repeatable)",
    )
    for flag, key in TRAIN_FLAGS.items():
        # `--batch_size` too: `mlflow run -P batch_size=64` passes an undeclared parameter so (see MLproject).
        names = ["--" + flag.replace("_", "-")] + (["--" + flag] if "_" in flag else [])
        p.add_argument(*names, dest=flag, help=f"sets {key}")


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    from cnnexp.config import build_config
    from cnnexp.config_io import load_yaml
    from cnnexp.errors import ConfigError

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


def parse_bool(text: str) -> bool:
    """A flag's value; empty (``--force`` alone, or MLproject's "") means true."""
    value = True if text.strip() == "" else parse_value(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def add_bool_option(p: argparse.ArgumentParser, flag: str, *, default: bool, help: str) -> None:
    """``--flag`` alone means true; MLproject passes ``--flag true|false`` since it can only pass values."""
    p.add_argument(flag, nargs="?", const=True, default=default, type=parse_bool, help=help)


def bounded(
    tp: type, low: float | None = None, high: float | None = None, *, above: float | None = None, empty_ok: bool = True
):
    """An argparse type: a ``tp`` in [low, high] (or > ``above``), refused at parse time otherwise.
    "" means "not set" (None) if ``empty_ok``: MLproject passes it for an empty parameter."""
    allowed = " and ".join(
        t
        for t in (
            f"at least {low:g}" if low is not None else "",
            f"above {above:g}" if above is not None else "",
            f"at most {high:g}" if high is not None else "",
        )
        if t
    )

    def parse(text: str):
        if text.strip() == "" and empty_ok:
            return None
        try:
            value = tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if tp is int else ''}number") from None
        if (
            (low is not None and value < low)
            or (high is not None and value > high)
            or (above is not None and value <= above)
        ):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed: must be {allowed}")
        return value

    parse.__name__ = tp.__name__
    return parse
