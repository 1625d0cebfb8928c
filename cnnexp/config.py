"""Typed experiment configuration: the dataclasses, their defaults and their validation.

Everything that enters the package (CLI flags, MLproject parameters, YAML files, search-space
samples) is turned into an :class:`ExperimentConfig` by :func:`build_config` and validated once;
the rest of the package trusts it. Reading YAML and coercing strings is :mod:`cnnexp.config_io`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from cnnexp.config_io import deepcopy_dict, flatten, from_dict, plain, set_dotted
from cnnexp.errors import ConfigError
from cnnexp.hardware import native_bf16

BUILTIN_DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10")
FOLDER_PREFIX = "folder:"
# Datasets whose classes change meaning under a mirror image (a flipped 2 is not a 2).
NO_FLIP_DATASETS = ("digits", "mnist")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
LR_SCHEDULES = ("none", "cosine", "onecycle", "plateau", "wsd", "linear")
ANNEALING_SCHEDULES = ("cosine", "onecycle", "wsd", "linear")  # per-step schedules that end near zero
DEFAULT_EPOCHS = 10  # without a time budget
BLOCK_ORDERS = ("conv_bn_pool", "conv_pool_bn")


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
    # conv_pool_bn: each block's first conv is max-pooled before its batch norm and ReLU, which then
    # run on a quarter of the pixels (Page, "How to train your ResNet" 8; airbench). Plain family only.
    block_order: str = "conv_pool_bn"  # conv_pool_bn | conv_bn_pool (pool last, before 0.2.0)
    bn_scale: bool = True  # false: batch norm learns a shift only (the following ReLU/conv absorb the scale)
    # No dropout by default: augmentation, label smoothing and the annealed schedule regularise
    # enough, and dropout cost budgeted runs 0.8-1.2 points (docs/performance.md, section 1).
    dropout: float = 0.0  # after each block
    pooling: str = "flatten"  # head input: flatten | avg (global average pooling)
    head_units: int = 128
    head_dropout: float = 0.0
    # Flip test-time augmentation: predictions average each image with its mirror image, inside the
    # saved model (so evaluation, serving and the web page all get it). None: on exactly when
    # training flips images, i.e. where a mirror image keeps its class.
    flip_tta: bool | None = None
    # Translation TTA: also average the image shifted this many pixels up-left and down-right (airbench).
    # None: 1 where training shifts images (data.augment.shift > 0), else 0.
    tta_shift: int | None = None
    # airbench's initialisations (cnnexp/models/init.py): the first convolution's first filters start
    # as whitening filters of the training images' patches, every later convolution as the identity
    # on its input channels. Whitening measured +0.25 point (3 seeds of 3) and Dirac +0.21 in a
    # 3-minute budget, not additive (docs/performance.md, section 1). None: whitening on wherever the
    # convolution is standard (a separable one has no full kernel to set).
    whiten_init: bool | None = None
    dirac_init: bool = False
    # Batch norm after a convolution trains through TensorFlow's fused kernel (cnnexp/models/norm.py):
    # the same function as Keras' layer, a faster train step (docs/performance.md, section 1).
    fused_batch_norm: bool = True


@dataclass
class TrainConfig:
    optimizer: str = "adam"  # adam | adamw | sgd
    learning_rate: float = 3e-3  # the peak of the one-cycle schedule
    weight_decay: float = 1e-4  # adamw only
    momentum: float = 0.9  # sgd only
    batch_size: int = 128
    # One-cycle anneals over these. None: DEFAULT_EPOCHS, or with a time budget as many as fit in it
    # at the measured speed (cnnexp/training/budget.py); a number given with a budget wins, capped by it.
    epochs: int | None = None
    label_smoothing: float = 0.1
    # > 0: validation, test and the saved model use an exponential moving average of the weights
    # (Keras' optimizer use_ema, with SwapEMAWeights for validation); 0 turns it off.
    ema_momentum: float = 0.0
    early_stopping_patience: int = 3  # epochs without val_loss improvement; 0 disables
    lr_schedule: str = "onecycle"  # none | cosine | onecycle | plateau | wsd | linear
    # wsd and linear: epochs of linear warm-up to the peak rate (a fixed length, not a share of the run,
    # so every trial of a study is past it at the same epoch; cnnexp/training/schedules.py).
    warmup_epochs: float = 0.5
    # Wall-clock budget for fit; the schedule then anneals by the clock (cnnexp/training/budget.py).
    # Not bit-reproducible: how many steps fit depends on the machine.
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
        return plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted keys (``model.blocks``) for MLflow params: one owner per name, no autolog clash."""
        return flatten(self.to_dict())


def build_config(base: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Merge a base dict (e.g. from YAML) with dotted overrides, parse, resolve defaults, validate."""
    merged: dict[str, Any] = deepcopy_dict(base or {})
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(merged, key, value)
    cfg = from_dict(ExperimentConfig, merged)
    return validate(resolve(cfg))


# Keys added after cnnexp 0.1.0, with the value that rebuilds what a config logged before them trained.
LEGACY_VALUES = {
    "model.block_order": "conv_bn_pool",
    "model.bn_scale": True,
    "model.tta_shift": 0,
    "model.whiten_init": False,
    "model.fused_batch_norm": False,
    "train.ema_momentum": 0.0,
}


def logged_config(data: dict[str, Any]) -> ExperimentConfig:
    """A logged run's config: keys it predates take their :data:`LEGACY_VALUES`, not today's defaults."""
    merged = deepcopy_dict(data)
    for dotted, value in LEGACY_VALUES.items():
        section, key = dotted.split(".")
        node = merged.get(section)
        if isinstance(node, dict) and key not in node:
            node[key] = value
    return build_config(merged)


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
    if cfg.train.epochs is None and not cfg.train.time_budget_minutes:
        cfg.train.epochs = DEFAULT_EPOCHS
    if cfg.train.precision == "auto":
        cfg.train.precision = "mixed_bfloat16" if native_bf16() else "float32"
    if cfg.model.flip_tta is None:
        cfg.model.flip_tta = aug.horizontal_flip
    if cfg.model.tta_shift is None:
        cfg.model.tta_shift = 1 if aug.shift else 0
    if cfg.model.whiten_init is None:
        cfg.model.whiten_init = cfg.model.conv_type == "standard"
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
    _one_of("model.block_order", m.block_order, BLOCK_ORDERS)
    for name in ("blocks", "filters", "kernel_size", "convs_per_block"):
        _check(getattr(m, name) >= 1, f"model.{name}={getattr(m, name)} must be at least 1")
    _check(0 <= m.tta_shift < 4, f"model.tta_shift={m.tta_shift} must be 0 (off) to 3 pixels")
    _check(m.head_units >= 0, f"model.head_units={m.head_units} must be >= 0 (0: no hidden head layer)")
    for name in ("whiten_init", "dirac_init"):
        _check(
            not getattr(m, name) or m.conv_type == "standard",
            f"model.{name}=true needs model.conv_type=standard (a separable convolution has no full kernel to set)",
        )
    for name in ("dropout", "head_dropout"):
        _check(0 <= getattr(m, name) < 1, f"model.{name}={getattr(m, name)} must be in [0, 1)")

    _one_of("train.optimizer", t.optimizer, ("adam", "adamw", "sgd"))
    _one_of("train.lr_schedule", t.lr_schedule, LR_SCHEDULES)
    _one_of("train.precision", t.precision, PRECISIONS)
    _check(t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be positive")
    _check(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay} must be >= 0")
    _check(0 <= t.momentum < 1, f"train.momentum={t.momentum} must be in [0, 1)")
    _check(0 <= t.ema_momentum < 1, f"train.ema_momentum={t.ema_momentum} must be in [0, 1) (0: no averaging)")
    _check(t.batch_size >= 1, f"train.batch_size={t.batch_size} must be at least 1")
    _check(t.epochs is None or t.epochs >= 1, f"train.epochs={t.epochs} must be at least 1")
    _check(t.warmup_epochs >= 0, f"train.warmup_epochs={t.warmup_epochs} must be >= 0")
    budget = t.time_budget_minutes
    _check(budget is None or budget > 0, f"train.time_budget_minutes={budget} must be positive")
    _check(0 <= t.label_smoothing < 1, f"train.label_smoothing={t.label_smoothing} must be in [0, 1)")
    _check(t.early_stopping_patience >= 0, f"train.early_stopping_patience={t.early_stopping_patience} must be >= 0")
    _check(bool(cfg.experiment_name), "experiment_name must not be empty")
    return cfg
