"""Flip test-time augmentation as two Keras layers inside the saved model.

Serving, evaluation and the web page all run the saved model, so they all get the averaged
prediction without any code of their own. The layers are registered under the package name
``cnnexp`` (``cnnexp>MirrorBatch``): saved models find them by that name, whatever module holds them.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="cnnexp")
class MirrorBatch(layers.Layer):
    """Flip test-time augmentation, part 1: at inference, appends each image's mirror to the batch."""

    def call(self, x, training=None):
        if training:
            return x
        return keras.ops.concatenate([x, keras.ops.flip(x, axis=2)], axis=0)


@keras.saving.register_keras_serializable(package="cnnexp")
class MirrorAverage(layers.Layer):
    """Flip test-time augmentation, part 2: averages each image's probabilities with its mirror's."""

    def call(self, x, training=None):
        if training:
            return x
        half = keras.ops.shape(x)[0] // 2
        return (x[:half] + x[half:]) / 2
