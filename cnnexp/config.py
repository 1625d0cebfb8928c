"""Typed experiment configuration: dataclasses, parsing from dicts/YAML/CLI strings, validation.

Everything that enters the package (CLI flags, MLproject parameters, YAML files, search-space
samples) is turned into an :class:`ExperimentConfig` here and validated once; the rest of the
package trusts it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnexp.errors import ConfigError
from cnnexp.hardware import native_bf16

BUILTIN_DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10")
FOLDER_PREFIX = "folder:"
# Datasets whose classes change meaning under a mirror image (a flipped 2 is not a 2).
NO_FLIP_DATASETS = ("digits", "mnist")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
LR_SCHEDULES = ("none", "cosine", "onecycle", "plateau", "wsd", "linear")
ANNEALING_SCHEDULES = ("cosine", "onecycle", "wsd", "linear")  # per-step schedules that end near zero


@dataclass
class AugmentConfig:
    """Training-time augmentation. ``None`` means "the dataset's default" (see :func:`resolve`)."""

    rotation: float | None = None  # fraction of a full turn, as keras.layers.RandomRotation
    shift: float | None = None  # fraction of height/width, as keras.layers.RandomTranslation
    zoom: float | None = None
    horizontal_flip: bool | None = None


@dataclass
class DataConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2  # only used where the dataset has no official test set
    train_subset: int | None = None  # stratified cap on training examples (quick runs, cheap trials)
    image_size: tuple[int, int] | None = None  # folder datasets: (height, width) to resize to
    channels: int | None = None  # folder datasets: 1 or 3; None = grayscale only if every image is
    skip_bad_images: bool = False  # folder datasets: warn and skip unreadable files instead of failing
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    family: str = "plain"  # plain | residual
    # Defaults chosen for training speed on a CPU: docs/performance.md has the measurements.
    blocks: int = 3
    filters: int = 32  # filters of the first block; each later block doubles it
    kernel_size: int = 3
    convs_per_block: int = 1
    conv_type: str = "standard"  # standard | separable
    batch_norm: bool = True
    dropout: float = 0.1  # after each block (augmentation and label smoothing regularise too)
    pooling: str = "flatten"  # head input: flatten | avg (global average pooling)
    head_units: int = 128
    head_dropout: float = 0.3
    # Flip test-time augmentation: predictions average each image with its mirror image, inside the
    # saved model (so evaluation, serving and the web page all get it). None: on exactly when
    # training flips images, i.e. where a mirror image keeps its class.
    flip_tta: bool | None = None


@dataclass
class TrainConfig:
    optimizer: str = "adam"  # adam | adamw | sgd
    learning_rate: float = 3e-3  # the peak of the one-cycle schedule
    weight_decay: float = 1e-4  # adamw only
    momentum: float = 0.9  # sgd only
    batch_size: int = 128
    epochs: int = 10  # one-cycle anneals over these
    label_smoothing: float = 0.1
    early_stopping_patience: int = 3  # epochs without val_loss improvement; 0 disables
    lr_schedule: str = "onecycle"  # none | cosine | onecycle | plateau | wsd | linear
    # wsd and linear: epochs of linear warm-up to the peak rate (a fixed length, not a share of the run,
    # so every trial of a study is past it at the same epoch; cnnexp/training/schedules.py).
    warmup_epochs: float = 0.5
    # Wall-clock cap on fit; the schedule then anneals by time or steps, whichever runs out first
    # (cnnexp/training/schedules.py). Not bit-reproducible: how many steps fit depends on the machine.
    time_budget_minutes: float | None = None
    seed: int = 42
    deterministic: bool = True  # TensorFlow op determinism: same seed, same result
    # auto | float32 | mixed_bfloat16. bf16 is emulated (far slower) on CPUs without native bf16:
    # auto picks it only where the CPU has it (cnnexp/hardware.py; speeds in docs/performance.md).
    precision: str = "auto"
    # MLflow's system metrics (system/cpu_utilization_percentage, memory, disk, network) sampled
    # alongside the run by a background thread (psutil); off for runs that must not spend a thread on it.
    system_metrics: bool = True


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment_name: str = "cnnexp"
    run_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists, not tuples): the logged ``config.yaml`` is portable YAML."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted keys (``model.blocks``) for MLflow params: one owner per name, no autolog clash."""
        return flatten(self.to_dict())


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
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


# ---------------------------------------------------------------------------- parsing


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (possibly a CLI string) to type ``tp`` or raise a ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, where + ".")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or len(value) != len(typing.get_args(tp)):
            raise ConfigError(f"{where}: expected {len(typing.get_args(tp))} values, got {value!r}")
        return tuple(_coerce(v, t, where) for v, t in zip(value, typing.get_args(tp), strict=True))
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


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key '{prefix}{key}' (known keys: {', '.join(known)})")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
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


def build_config(base: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Merge a base dict (e.g. from YAML) with dotted overrides, parse, resolve defaults, validate."""
    merged: dict[str, Any] = _deepcopy(base or {})
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(merged, key, value)
    cfg = _from_dict(ExperimentConfig, merged)
    return validate(resolve(cfg))


def _deepcopy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}


# ---------------------------------------------------------------------------- defaults

# Augmentation a practitioner would start from, per dataset. Digits stay untouched: at 8x8 a
# one-pixel shift is 12% of the image and the set is already easy.
_AUGMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"rotation": 0.0, "shift": 0.0, "zoom": 0.0, "horizontal_flip": False},
    "mnist": {"rotation": 0.03, "shift": 0.08, "zoom": 0.0, "horizontal_flip": False},
    "fashion_mnist": {"rotation": 0.0, "shift": 0.08, "zoom": 0.0, "horizontal_flip": True},
    "cifar10": {"rotation": 0.0, "shift": 0.1, "zoom": 0.0, "horizontal_flip": True},
    "folder": {"rotation": 0.0, "shift": 0.0, "zoom": 0.0, "horizontal_flip": False},
}


def dataset_kind(name: str) -> str:
    return "folder" if name.startswith(FOLDER_PREFIX) else name


def resolve(cfg: ExperimentConfig) -> ExperimentConfig:
    """Fill every ``None`` default that depends on other values, so the logged config is complete."""
    defaults = _AUGMENT_DEFAULTS.get(dataset_kind(cfg.data.dataset), _AUGMENT_DEFAULTS["folder"])
    aug = cfg.data.augment
    for name, value in defaults.items():
        if getattr(aug, name) is None:
            setattr(aug, name, value)
    if cfg.train.precision == "auto":
        cfg.train.precision = "mixed_bfloat16" if native_bf16() else "float32"
    if cfg.model.flip_tta is None:
        cfg.model.flip_tta = aug.horizontal_flip
    if dataset_kind(cfg.data.dataset) == "folder" and cfg.data.image_size is None:
        cfg.data.image_size = (32, 32)
    if cfg.run_name is None:
        cfg.run_name = f"{dataset_kind(cfg.data.dataset)}-{cfg.model.family}"
    return cfg


# ---------------------------------------------------------------------------- validation


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _one_of(where: str, value: str, choices: tuple[str, ...]) -> None:
    _check(value in choices, f"{where}={value!r} is not one of: {', '.join(choices)}")


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    d, m, t = cfg.data, cfg.model, cfg.train
    kind = dataset_kind(d.dataset)
    _check(
        kind in BUILTIN_DATASETS or kind == "folder",
        f"data.dataset={d.dataset!r} is unknown: use one of {', '.join(BUILTIN_DATASETS)} or folder:PATH",
    )
    _check(kind != "folder" or len(d.dataset) > len(FOLDER_PREFIX), "data.dataset='folder:' needs a path")
    _check(0 < d.val_fraction < 1, f"data.val_fraction={d.val_fraction} must be between 0 and 1")
    _check(0 < d.test_fraction < 1, f"data.test_fraction={d.test_fraction} must be between 0 and 1")
    _check(
        d.val_fraction + d.test_fraction < 1,
        f"data.val_fraction + data.test_fraction = {d.val_fraction + d.test_fraction:g} must be below 1",
    )
    _check(d.train_subset is None or d.train_subset > 0, f"data.train_subset={d.train_subset} must be positive")
    _check(d.channels in (None, 1, 3), f"data.channels={d.channels} must be 1 or 3")
    _check(
        d.image_size is None or min(d.image_size) >= 4,
        f"data.image_size={d.image_size} must be at least 4x4",
    )
    a = d.augment
    for name in ("rotation", "shift", "zoom"):
        value = getattr(a, name)
        _check(0 <= value < 1, f"data.augment.{name}={value} must be in [0, 1)")
    # Training on mirror images and predicting from them share one rule.
    for key, mirrors in (("data.augment.horizontal_flip", a.horizontal_flip), ("model.flip_tta", m.flip_tta)):
        _check(
            not (mirrors and kind in NO_FLIP_DATASETS),
            f"{key}=true is not allowed for {kind}: a mirrored digit is not the same digit",
        )

    _one_of("model.family", m.family, ("plain", "residual"))
    _one_of("model.conv_type", m.conv_type, ("standard", "separable"))
    _one_of("model.pooling", m.pooling, ("flatten", "avg"))
    for name in ("blocks", "filters", "kernel_size", "convs_per_block"):
        _check(getattr(m, name) >= 1, f"model.{name}={getattr(m, name)} must be at least 1")
    _check(m.head_units >= 0, f"model.head_units={m.head_units} must be >= 0 (0: no hidden head layer)")
    for name in ("dropout", "head_dropout"):
        _check(0 <= getattr(m, name) < 1, f"model.{name}={getattr(m, name)} must be in [0, 1)")

    _one_of("train.optimizer", t.optimizer, ("adam", "adamw", "sgd"))
    _one_of("train.lr_schedule", t.lr_schedule, LR_SCHEDULES)
    _one_of("train.precision", t.precision, PRECISIONS)
    _check(t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be positive")
    _check(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay} must be >= 0")
    _check(0 <= t.momentum < 1, f"train.momentum={t.momentum} must be in [0, 1)")
    _check(t.batch_size >= 1, f"train.batch_size={t.batch_size} must be at least 1")
    _check(t.epochs >= 1, f"train.epochs={t.epochs} must be at least 1")
    _check(t.warmup_epochs >= 0, f"train.warmup_epochs={t.warmup_epochs} must be >= 0")
    budget = t.time_budget_minutes
    _check(budget is None or budget > 0, f"train.time_budget_minutes={budget} must be positive")
    _check(0 <= t.label_smoothing < 1, f"train.label_smoothing={t.label_smoothing} must be in [0, 1)")
    _check(t.early_stopping_patience >= 0, f"train.early_stopping_patience={t.early_stopping_patience} must be >= 0")
    _check(bool(cfg.experiment_name), "experiment_name must not be empty")
    return cfg
