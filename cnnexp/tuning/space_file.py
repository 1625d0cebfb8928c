"""Reading a search-space file: YAML parsed into a :class:`~cnnexp.tuning.space.SearchSpace` and checked
before any trial runs (every range end and choice must make a valid config whose model fits the
images). Every error names the file, the key and the reason.
"""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from cnnexp.config import ExperimentConfig
from cnnexp.config_io import read_text_file
from cnnexp.data.sources import input_shape
from cnnexp.errors import ConfigError, SearchSpaceError
from cnnexp.models.cnn import check_spatial
from cnnexp.tuning.space import OBJECTIVES, PARAM_TYPES, Param, SearchSpace

_TOP_KEYS = ("dataset", "objective", "trials", "retrain", "fixed", "params")
_TRIAL_KEYS = ("epochs", "train_subset")
# Config keys the space sets from its own sections; setting them again elsewhere would be ignored.
_RESERVED = {
    "data.dataset": "is set by dataset in this file",
    "train.epochs": "is set by trials.epochs and retrain.epochs in this file",
    "data.train_subset": "is set by trials.train_subset in this file",
    "run_name": "is set by the study: trials are named <study>-trial-N, the retrain <study>-best",
}
_RETRAIN_KEYS = ("epochs", "time_budget_minutes")
_PARAM_KEYS = {
    "float": ("type", "low", "high", "log", "step", "when"),
    "int": ("type", "low", "high", "log", "step", "when"),
    "categorical": ("type", "choices", "when"),
}


def load_space(path: str | Path) -> SearchSpace:
    """Read, parse and fully validate a search-space file (every range end and choice is a valid config)."""
    p = Path(path)
    text = read_text_file(p, "search space file", SearchSpaceError)
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        line = f" (line {e.problem_mark.line + 1})" if e.problem_mark else ""
        raise SearchSpaceError(f"{p}: not valid YAML: {e.problem}{line}") from None
    except yaml.YAMLError as e:
        raise SearchSpaceError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from None
    space = parse_space(doc, str(p), text)
    _check_configs(space)
    return space


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, typing.Hashable):
                continue  # PyYAML's own error follows
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"key {key!r} is written twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_space(doc: Any, where: str, text: str = "") -> SearchSpace:
    def fail(key: str, reason: str) -> SearchSpaceError:
        return SearchSpaceError(f"{where}: {key}: {reason}")

    if not isinstance(doc, dict):
        raise SearchSpaceError(f"{where}: expected a mapping with keys {', '.join(_TOP_KEYS)}")
    _known(doc, _TOP_KEYS, "", fail)
    for required in ("dataset", "trials", "params"):
        if required not in doc:
            raise fail(required, "missing (required)")
    objective = doc.get("objective", "val_accuracy")
    if objective not in OBJECTIVES:
        raise fail("objective", f"{objective!r} is not one of: {', '.join(OBJECTIVES)}")

    trials = _mapping(doc["trials"], "trials", fail)
    _known(trials, _TRIAL_KEYS, "trials.", fail)
    trial_epochs = _positive_int(trials.get("epochs"), "trials.epochs", fail)
    subset = trials.get("train_subset")
    subset = None if subset is None else _positive_int(subset, "trials.train_subset", fail)
    retrain = _mapping(doc.get("retrain") or {}, "retrain", fail)
    _known(retrain, _RETRAIN_KEYS, "retrain.", fail)
    given = retrain.get("epochs")
    retrain_epochs = None if given is None else _positive_int(given, "retrain.epochs", fail)
    budget = retrain.get("time_budget_minutes")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        raise fail("retrain.time_budget_minutes", f"must be a positive number of minutes, got {budget!r}")

    fixed = _mapping(doc.get("fixed") or {}, "fixed", fail)
    params_doc = _mapping(doc["params"], "params", fail)
    if not params_doc:
        raise fail("params", "no parameters to tune")
    params: list[Param] = []
    for key, spec in params_doc.items():
        params.append(_parse_param(str(key), spec, params, fail))
    for key in fixed:
        if key in params_doc:
            raise fail(f"fixed.{key}", "is also a tuned parameter; keep it in one place")
    for section, keys in (("fixed", fixed), ("params", params_doc)):
        for key in keys:
            if key in _RESERVED:
                raise fail(f"{section}.{key}", _RESERVED[key])
    return SearchSpace(
        path=where,
        dataset=str(doc["dataset"]),
        objective=objective,
        trial_epochs=trial_epochs,
        trial_train_subset=subset,
        retrain_epochs=retrain_epochs,
        retrain_time_budget_minutes=None if budget is None else float(budget),
        fixed={str(k): v for k, v in fixed.items()},
        params=params,
        text=text,
    )


def _parse_param(key: str, spec: Any, earlier: list[Param], fail) -> Param:
    where = f"params.{key}"
    spec = _mapping(spec, where, fail)
    kind = spec.get("type")
    if kind not in PARAM_TYPES:
        raise fail(f"{where}.type", f"unknown type {kind!r} (use one of: {', '.join(PARAM_TYPES)})")
    _known(spec, _PARAM_KEYS[kind], where + ".", fail)
    when = _parse_when(spec.get("when") or {}, where, earlier, fail)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise fail(f"{where}.choices", "must be a non-empty list")
        for choice in choices:
            if not isinstance(choice, (str, int, float, bool)):
                raise fail(f"{where}.choices", f"{choice!r} is not a plain value (text, number, true/false)")
        return Param(key, kind, choices=choices, when=when)

    low, high = spec.get("low"), spec.get("high")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail(f"{where}.{name}", f"must be a number, got {value!r}{_number_hint(value)}")
        if kind == "int" and value != int(value):
            raise fail(f"{where}.{name}", f"must be a whole number for an int parameter, got {value!r}")
    if low > high:
        raise fail(where, f"low ({low}) > high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise fail(f"{where}.log", f"must be true or false, got {log!r}")
    if log and low <= 0:
        raise fail(f"{where}.low", f"must be positive on a log scale, got {low}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise fail(f"{where}.step", f"must be a positive number, got {step!r}")
        if log:
            raise fail(f"{where}.step", "cannot be combined with log: true (Optuna samples one or the other)")
        if kind == "int" and step != int(step):
            raise fail(f"{where}.step", f"must be a whole number for an int parameter, got {step!r}")
    if kind == "int":
        low, high = int(low), int(high)
        step = None if step is None else int(step)
    return Param(key, kind, low=low, high=high, log=log, step=step, when=when)


def _parse_when(when: Any, where: str, earlier: list[Param], fail) -> dict[str, list[Any]]:
    when = _mapping(when, f"{where}.when", fail)
    out: dict[str, list[Any]] = {}
    by_key = {p.key: p for p in earlier}
    for key, values in when.items():
        parent = by_key.get(key)
        if parent is None or parent.type != "categorical":
            raise fail(f"{where}.when.{key}", "must name an earlier categorical parameter")
        values = values if isinstance(values, list) else [values]
        if not values:
            raise fail(f"{where}.when.{key}", "is an empty list: the parameter would never be sampled")
        for v in values:
            if v not in parent.choices:
                raise fail(f"{where}.when.{key}", f"{v!r} is not one of its choices {parent.choices}")
        out[key] = values
    return out


def _number_hint(value: Any) -> str:
    try:
        float(value)
    except (TypeError, ValueError):
        return ""
    # YAML 1.1 (PyYAML) reads 1e-3 as text: a float needs a dot in its mantissa
    mantissa, _, exponent = str(value).lower().partition("e")
    return f" (YAML reads it as text: write {mantissa}.0e{exponent})" if exponent and "." not in mantissa else ""


def _field_type(key: str) -> Any:
    """The type of the config field a dotted key sets (Optional unwrapped)."""
    cls: Any = ExperimentConfig
    for part in key.split("."):
        cls = typing.get_type_hints(cls)[part]
    args = [a for a in typing.get_args(cls) if a is not type(None)]
    return args[0] if typing.get_origin(cls) in (typing.Union, types.UnionType) else cls


# Which parameter types can set a config field of each type (categorical sets any: its choices are checked).
_TYPES_FOR_FIELD = {int: ("int", "categorical"), float: ("float", "int", "categorical")}


def _check_configs(space: SearchSpace) -> None:
    """Every range end and every choice must make a valid config on its own, before any trial runs."""
    where = space.path
    defaults = {p.key: p.values_to_check()[0] for p in space.params if not p.when}
    known = set(ExperimentConfig().flat())
    for p in space.params:
        if p.key not in known:
            raise SearchSpaceError(f"{where}: params.{p.key}: not a config key (known: see cnnexp/config.py)")
        field_type = _field_type(p.key)
        allowed = _TYPES_FOR_FIELD.get(field_type, ("categorical",))
        if p.type not in allowed:
            name = getattr(field_type, "__name__", str(field_type))
            raise SearchSpaceError(
                f"{where}: params.{p.key}.type: {p.type} cannot set it ({p.key} is {name}: use {' or '.join(allowed)})"
            )
    for key in space.fixed:
        if key not in known:
            raise SearchSpaceError(f"{where}: fixed.{key}: not a config key (known: see cnnexp/config.py)")
    for retrain in (False, True):
        _try_config(space, defaults, retrain, f"{where}: fixed/trials/retrain")
    for p in space.params:
        for value in p.values_to_check():
            _try_config(space, {**defaults, p.key: value}, False, f"{where}: params.{p.key}={value!r}")


def _try_config(space: SearchSpace, sampled: dict[str, Any], retrain: bool, where: str) -> None:
    try:
        cfg = space.config(sampled, retrain=retrain)
        check_spatial(cfg.model, input_shape(cfg.data))  # the model each trial builds must fit the images
    except ConfigError as e:
        raise SearchSpaceError(f"{where}: {e}") from None


def _known(d: dict, keys: tuple[str, ...], prefix: str, fail) -> None:
    for key in d:
        if key not in keys:
            raise fail(f"{prefix}{key}", f"unknown key (known: {', '.join(keys)})")


def _mapping(value: Any, key: str, fail) -> dict:
    if not isinstance(value, dict):
        raise fail(key, f"expected a mapping, got {value!r}")
    return value


def _positive_int(value: Any, key: str, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(key, f"must be a positive whole number, got {value!r}")
    return value
