"""One CNN builder, driven by :class:`~cnnexp.config.ModelConfig`: plain conv/pool stacks and a
small residual family. Pure: the same config, shape and class count give the same architecture."""

from __future__ import annotations

import keras
from keras import layers

from cnnexp.config import ModelConfig
from cnnexp.errors import ConfigError
from cnnexp.models.tta import AverageViews, TestTimeViews

# Keras' default 0.99 needs hundreds of steps before inference statistics settle; short runs
# and small datasets (digits: 10 steps an epoch) need them settled within an epoch or two.
BN_MOMENTUM = 0.9


def _conv(cfg: ModelConfig, filters: int, name: str, kernel_size: int | None = None) -> layers.Layer:
    size = kernel_size or cfg.kernel_size
    if cfg.conv_type == "separable":
        return layers.SeparableConv2D(filters, size, padding="same", use_bias=not cfg.batch_norm, name=name)
    return layers.Conv2D(filters, size, padding="same", use_bias=not cfg.batch_norm, name=name)


def _batch_norm(cfg: ModelConfig, name: str) -> layers.Layer:
    return layers.BatchNormalization(momentum=BN_MOMENTUM, scale=cfg.bn_scale, name=name)


def _conv_bn_relu(x, cfg: ModelConfig, filters: int, name: str, activate: bool = True, pool: bool = False):
    x = _conv(cfg, filters, name)(x)
    if pool:  # conv -> pool -> BN -> ReLU: the same function as pooling last, on a quarter of the pixels
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    if cfg.batch_norm:
        x = _batch_norm(cfg, f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if activate else x


def _plain_block(x, cfg: ModelConfig, filters: int, name: str):
    pool_first = cfg.block_order == "conv_pool_bn"
    for j in range(cfg.convs_per_block):
        x = _conv_bn_relu(x, cfg, filters, f"{name}_conv{j + 1}", pool=pool_first and j == 0)
    return x if pool_first else layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def _residual_block(x, cfg: ModelConfig, filters: int, name: str):
    shortcut = x
    for j in range(cfg.convs_per_block):
        last = j == cfg.convs_per_block - 1
        x = _conv_bn_relu(x, cfg, filters, f"{name}_conv{j + 1}", activate=not last)
    if shortcut.shape[-1] != filters:
        # 1x1 projection so the shortcut matches the block's channel count.
        shortcut = layers.Conv2D(filters, 1, use_bias=not cfg.batch_norm, name=f"{name}_proj")(shortcut)
        if cfg.batch_norm:
            shortcut = _batch_norm(cfg, f"{name}_proj_bn")(shortcut)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    x = layers.Activation("relu", name=f"{name}_out")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def max_blocks(input_shape: tuple[int, ...]) -> int:
    """The most blocks an input of this (height, width, ...) allows: each halves it, down to 1x1."""
    return max(0, min(int(input_shape[0]), int(input_shape[1]))).bit_length() - 1


def check_spatial(cfg: ModelConfig, input_shape: tuple[int, int, int]) -> None:
    """Each block halves height and width; refuse a config that pools below 1x1."""
    h, w = input_shape[0], input_shape[1]
    sizes = [f"{h}x{w}"]
    for _ in range(cfg.blocks):
        h, w = h // 2, w // 2
        sizes.append(f"{h}x{w}")
    if h < 1 or w < 1:
        raise ConfigError(
            f"model.blocks={cfg.blocks} pools the {input_shape[0]}x{input_shape[1]} input below 1x1 "
            f"({' -> '.join(sizes)}); use at most {max_blocks(input_shape)} blocks for this input"
        )


def build_model(cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """Raw 0-255 pixels in, class probabilities out; scaling to [0, 1] is the first layer."""
    check_spatial(cfg, input_shape)
    block = _residual_block if cfg.family == "residual" else _plain_block
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="scale")(inputs)
    tta = {"flip": bool(cfg.flip_tta), "shift": cfg.tta_shift or 0}  # None (unresolved): off
    if cfg.flip_tta or cfg.tta_shift:
        x = TestTimeViews(**tta, name="tta_views")(x)
    if cfg.family == "residual":
        x = _conv_bn_relu(x, cfg, cfg.filters, "stem")
    for i in range(cfg.blocks):
        x = block(x, cfg, cfg.filters * 2**i, f"block{i + 1}")  # halves height and width
        if cfg.dropout:
            x = layers.Dropout(cfg.dropout, name=f"block{i + 1}_drop")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x) if cfg.pooling == "avg" else layers.Flatten(name="flatten")(x)
    if cfg.head_units:
        x = layers.Dense(cfg.head_units, use_bias=not cfg.batch_norm, name="head")(x)
        if cfg.batch_norm:
            x = _batch_norm(cfg, "head_bn")(x)
        x = layers.Activation("relu", name="head_relu")(x)
        if cfg.head_dropout:
            x = layers.Dropout(cfg.head_dropout, name="head_drop")(x)
    # float32 whatever the precision policy: a bf16 softmax loses the small probabilities.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    if cfg.flip_tta or cfg.tta_shift:
        outputs = AverageViews(**tta, dtype="float32", name="tta_average")(outputs)
    return keras.Model(inputs, outputs, name=f"cnnexp_{cfg.family}")
