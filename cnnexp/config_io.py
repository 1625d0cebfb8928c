"""Reading configs: YAML text and files, dotted keys, and typed coercion into dataclasses.

Generic over the dataclasses of :mod:`cnnexp.config` (which says what a config holds and checks
its values); a CLI string, a YAML value or a search-space sample all pass through :func:`coerce`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from cnnexp.errors import ConfigError


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (possibly a CLI string) to type ``tp`` or raise a ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        return coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where + ".")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or len(value) != len(typing.get_args(tp)):
            raise ConfigError(f"{where}: expected {len(typing.get_args(tp))} values, got {value!r}")
        return tuple(coerce(v, t, where) for v, t in zip(value, typing.get_args(tp), strict=True))
    if tp is bool:
        parsed = parse_bool(value)
        if parsed is None:
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return parsed
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if tp is int:
            if number != int(number):
                raise ConfigError(f"{where}: expected a whole number, got {value!r}")
            return int(number)
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover - programming error


def parse_bool(value: Any) -> bool | None:
    """true/false, yes/no, on/off, 1/0 (any case) as a bool; None for anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    return None


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key '{prefix}{key}' (known keys: {', '.join(known)})")
    kwargs = {k: coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``d['model']['blocks'] = value`` from ``'model.blocks'``."""
    *parents, leaf = dotted.split(".")
    node = d
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{dotted}': '{p}' is a value, not a section")
    node[leaf] = value


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML plus the one Python tag cnnexp 0.1.0 wrote into logged configs (image_size as a tuple)."""


_ConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))


def parse_yaml(text: str, where: str) -> dict[str, Any]:
    """A config mapping from YAML text; ``where`` (a file, a run's artifact) names it in every error."""
    try:
        data = yaml.load(text, Loader=_ConfigLoader) or {}  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        reason = " ".join(str(e).split())
        raise ConfigError(f"{where}: not valid YAML: {reason}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    return data


def read_text_file(path: str | Path, what: str = "config file", error: type[ConfigError] = ConfigError) -> str:
    """A config or search-space file's UTF-8 text; ``error`` names the file when it is missing or not text."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    return parse_yaml(read_text_file(path), str(path))


def deepcopy_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {k: deepcopy_dict(v) if isinstance(v, dict) else v for k, v in d.items()}
