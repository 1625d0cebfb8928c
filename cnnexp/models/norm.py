"""Batch normalisation through TensorFlow's fused kernel.

Keras 3 normalises with separate moments, subtract, scale and shift ops, each with its own
gradient; TensorFlow's ``FusedBatchNormV3`` does a training step's forward pass in one kernel and
its backward pass in another, which made cnnexp's default CNN train faster on a CPU
(docs/performance.md, section 1, "Fused batch norm"). Everything else is Keras'
``BatchNormalization``: the weights, the config, inference (the moving statistics) and the moving
statistics' update, so a saved model holds the same numbers and loads as
``cnnexp>FusedBatchNormalization``.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="cnnexp")
class FusedBatchNormalization(layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training step runs the fused kernel where it can:
    the TensorFlow backend, a 4-D channels-last input, no mask, renorm or cross-replica sync.
    Anywhere else (inference included) it is Keras' layer unchanged."""

    def _fusable(self, inputs, training, mask) -> bool:
        return (
            bool(training)
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        scale = self.gamma if self.scale else tf.ones((channels,), "float32")
        offset = self.beta if self.center else tf.zeros((channels,), "float32")
        # A bfloat16 input stays bfloat16: the kernel accumulates in float32 itself, and casting
        # first (as Keras does) would add the pass over the activations that fusing saves.
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=self.epsilon, is_training=True
        )
        # The kernel returns the unbiased (n - 1) batch variance; Keras' moving variance tracks the
        # biased one, so the saved statistics match a model trained with Keras' layer.
        n = tf.cast(tf.size(inputs) // channels, "float32")
        variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
        m = self.momentum
        self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
        self.moving_variance.assign(self.moving_variance * m + variance * (1.0 - m))
        return tf.cast(outputs, self.compute_dtype)
