"""Helpers shared by test modules (not fixtures): the tiny config as command-line arguments."""

from __future__ import annotations

from conftest import TINY


def tiny_cli_args() -> list[str]:
    """``--set KEY=VALUE`` for every value of the tiny config: trains on any small dataset in seconds."""
    return [arg for key, value in TINY.items() if key != "data.dataset" for arg in ("--set", f"{key}={value}")]
