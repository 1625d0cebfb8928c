"""One CNN builder, driven by :class:`~cnnexp.config.ModelConfig`: plain conv/pool stacks and a
small residual family. Pure: the same config, shape and class count give the same architecture."""

from __future__ import annotations

import keras
from keras import layers

from cnnexp.config import ModelConfig
from cnnexp.errors import ConfigError
from cnnexp.models.norm import FusedBatchNormalization
from cnnexp.models.tta import AverageViews, TestTimeViews

# Keras' default 0.99 needs hundreds of steps before inference statistics settle; short runs
# and small datasets (digits: 10 steps an epoch) need them settled within an epoch or two.
BN_MOMENTUM = 0.9


class _Layers:
    """Each named layer made once: building the network a second time (inside test-time
    augmentation) reuses the first build's layers, so the two models share every weight."""

    def __init__(self) -> None:
        self.made: dict[str, layers.Layer] = {}

    def __call__(self, layer: layers.Layer) -> layers.Layer:
        return self.made.setdefault(layer.name, layer)


def _conv(make: _Layers, cfg: ModelConfig, filters: int, name: str) -> layers.Layer:
    if cfg.conv_type == "separable":
        return make(
            layers.SeparableConv2D(filters, cfg.kernel_size, padding="same", use_bias=not cfg.batch_norm, name=name)
        )
    return make(layers.Conv2D(filters, cfg.kernel_size, padding="same", use_bias=not cfg.batch_norm, name=name))


def _batch_norm(make: _Layers, cfg: ModelConfig, name: str) -> layers.Layer:
    norm = FusedBatchNormalization if cfg.fused_batch_norm else layers.BatchNormalization
    return make(norm(momentum=BN_MOMENTUM, scale=cfg.bn_scale, name=name))


def _conv_bn_relu(
    make: _Layers, x, cfg: ModelConfig, filters: int, name: str, activate: bool = True, pool: bool = False
):
    x = _conv(make, cfg, filters, name)(x)
    if pool:  # conv -> pool -> BN -> ReLU: the same function as pooling last, on a quarter of the pixels
        x = make(layers.MaxPooling2D(2, name=f"{name}_pool"))(x)
    if cfg.batch_norm:
        x = _batch_norm(make, cfg, f"{name}_bn")(x)
    return make(layers.Activation("relu", name=f"{name}_relu"))(x) if activate else x


def _plain_block(make: _Layers, x, cfg: ModelConfig, filters: int, name: str):
    pool_first = cfg.block_order == "conv_pool_bn"
    for j in range(cfg.convs_per_block):
        x = _conv_bn_relu(make, x, cfg, filters, f"{name}_conv{j + 1}", pool=pool_first and j == 0)
    return x if pool_first else make(layers.MaxPooling2D(2, name=f"{name}_pool"))(x)


def _residual_block(make: _Layers, x, cfg: ModelConfig, filters: int, name: str):
    shortcut = x
    for j in range(cfg.convs_per_block):
        last = j == cfg.convs_per_block - 1
        x = _conv_bn_relu(make, x, cfg, filters, f"{name}_conv{j + 1}", activate=not last)
    if shortcut.shape[-1] != filters:
        # 1x1 projection so the shortcut matches the block's channel count.
        shortcut = make(layers.Conv2D(filters, 1, use_bias=not cfg.batch_norm, name=f"{name}_proj"))(shortcut)
        if cfg.batch_norm:
            shortcut = _batch_norm(make, cfg, f"{name}_proj_bn")(shortcut)
    x = make(layers.Add(name=f"{name}_add"))([x, shortcut])
    x = make(layers.Activation("relu", name=f"{name}_out"))(x)
    return make(layers.MaxPooling2D(2, name=f"{name}_pool"))(x)


def _network(make: _Layers, x, cfg: ModelConfig, num_classes: int):
    """Scaled pixels to class probabilities."""
    block = _residual_block if cfg.family == "residual" else _plain_block
    if cfg.family == "residual":
        x = _conv_bn_relu(make, x, cfg, cfg.filters, "stem")
    for i in range(cfg.blocks):
        x = block(make, x, cfg, cfg.filters * 2**i, f"block{i + 1}")  # halves height and width
        if cfg.dropout:
            x = make(layers.Dropout(cfg.dropout, name=f"block{i + 1}_drop"))(x)
    head_input = layers.GlobalAveragePooling2D(name="gap") if cfg.pooling == "avg" else layers.Flatten(name="flatten")
    x = make(head_input)(x)
    if cfg.head_units:
        x = make(layers.Dense(cfg.head_units, use_bias=not cfg.batch_norm, name="head"))(x)
        if cfg.batch_norm:
            x = _batch_norm(make, cfg, "head_bn")(x)
        x = make(layers.Activation("relu", name="head_relu"))(x)
        if cfg.head_dropout:
            x = make(layers.Dropout(cfg.head_dropout, name="head_drop"))(x)
    # float32 whatever the precision policy: a bf16 softmax loses the small probabilities.
    return make(layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities"))(x)


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


def build_models(
    cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int
) -> tuple[keras.Model, keras.Model]:
    """(trained, saved): the network, and the same network (the same layers and weights) inside
    test-time augmentation. Training and its validation passes run the first, one view per image;
    the test set, serving and the web page get the second. Raw 0-255 pixels in, probabilities out."""
    check_spatial(cfg, input_shape)
    make = _Layers()
    inputs = keras.Input(shape=input_shape, name="image")
    x = make(layers.Rescaling(1.0 / 255, name="scale"))(inputs)
    name = f"cnnexp_{cfg.family}"
    trained = keras.Model(inputs, _network(make, x, cfg, num_classes), name=name)
    if not (cfg.flip_tta or cfg.tta_shift):
        return trained, trained
    tta = {"flip": bool(cfg.flip_tta), "shift": cfg.tta_shift or 0}  # None (unresolved): off
    views = TestTimeViews(**tta, name="tta_views")(x)
    outputs = AverageViews(**tta, dtype="float32", name="tta_average")(_network(make, views, cfg, num_classes))
    return trained, keras.Model(inputs, outputs, name=name)


def build_model(cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """The model as saved: :func:`build_models`' second, test-time augmentation included."""
    return build_models(cfg, input_shape, num_classes)[1]
