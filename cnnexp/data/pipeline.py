"""tf.data input pipelines and training-only augmentation built from Keras preprocessing layers."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cnnexp.config import AugmentConfig


def build_augmenter(cfg: AugmentConfig, seed: int) -> keras.Sequential | None:
    """The augmentation layers the config asks for, or None when it asks for none."""
    layers: list[keras.layers.Layer] = []
    if cfg.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="constant", seed=seed + 1))
    if cfg.shift:
        layers.append(keras.layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="constant", seed=seed + 2))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="constant", seed=seed + 3))
    return keras.Sequential(layers, name="augment") if layers else None


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    training: bool = False,
    augmenter: keras.Sequential | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of (float32 raw pixels, int labels); shuffled and augmented only when training.

    Augmentation runs per batch (vectorised) in tf.data's threads, overlapping the model step.
    """
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        ds = ds.cache().shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda xb, yb: (tf.cast(xb, tf.float32), yb), num_parallel_calls=tf.data.AUTOTUNE)
    if not training:
        ds = ds.cache()  # evaluation batches are identical every epoch: build them once
    if training and augmenter is not None:
        ds = ds.map(lambda xb, yb: (augmenter(xb, training=True), yb), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    # MLflow's Keras autolog reads the batch size from this attribute (a plain BatchDataset has it);
    # without it autolog records batch_size=None, which also clashes with `mlflow run`'s own param.
    ds._batch_size = batch_size
    return ds
