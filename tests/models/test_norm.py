import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from cnnexp.config import ModelConfig
from cnnexp.models.cnn import build_model
from cnnexp.models.norm import FusedBatchNormalization


@pytest.fixture
def kernel_calls(monkeypatch):
    """The fused kernel's calls (each input's shape without the batch axis), so a test knows which
    path ran, not only that the results match."""
    calls = []
    kernel = tf.compat.v1.nn.fused_batch_norm

    def counted(x, *args, **kwargs):
        calls.append(tuple(x.shape[1:]))
        return kernel(x, *args, **kwargs)

    monkeypatch.setattr(tf.compat.v1.nn, "fused_batch_norm", counted)
    return calls


def _pair(shape, **kwargs):
    keras_bn, fused = layers.BatchNormalization(momentum=0.9, **kwargs), FusedBatchNormalization(momentum=0.9, **kwargs)
    keras_bn.build(shape)
    fused.build(shape)
    return keras_bn, fused


def _step(layer, x):
    """One training forward pass and the gradients of a randomly weighted loss on it."""
    weights = tf.constant(np.random.default_rng(9).normal(size=x.shape), "float32")
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.cast(layer(x, training=True), "float32")
        loss = tf.reduce_sum((y + tf.square(y)) * weights)
    return y, tape.gradient(loss, [x, *layer.trainable_weights])


@pytest.mark.parametrize("scale, center", [(True, True), (False, True), (True, False)])
def test_fused_training_step_matches_keras(scale, center, kernel_calls):
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (16, 7, 7, 5)), "float32")
    keras_bn, fused = _pair(x.shape, scale=scale, center=center)
    (y_keras, g_keras), (y_fused, g_fused) = _step(keras_bn, x), _step(fused, x)
    assert kernel_calls == [(7, 7, 5)]
    np.testing.assert_allclose(y_fused, y_keras, atol=1e-5)
    for a, b in zip(g_fused, g_keras, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    # Moving statistics as Keras keeps them: the biased batch variance, not the kernel's unbiased one.
    np.testing.assert_allclose(fused.moving_mean, keras_bn.moving_mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance, keras_bn.moving_variance, rtol=1e-5)
    assert not np.allclose(fused.moving_mean, 0.0)  # the update ran


def test_fused_keeps_bfloat16_and_falls_back_off_its_kernel(kernel_calls):
    x = tf.constant(np.random.default_rng(1).normal(size=(8, 4, 4, 3)), "bfloat16")
    keras_bn, fused = _pair(x.shape, dtype="mixed_bfloat16")
    y = fused(x, training=True)
    assert y.dtype == tf.bfloat16 and kernel_calls == [(4, 4, 3)]
    np.testing.assert_allclose(tf.cast(y, "float32"), tf.cast(keras_bn(x, training=True), "float32"), atol=0.05)
    # Inference, 2-D inputs and a frozen layer are Keras' own code path: identical results, no kernel.
    fused.set_weights(keras_bn.get_weights())
    np.testing.assert_array_equal(fused(x, training=False), keras_bn(x, training=False))
    flat = tf.constant(np.random.default_rng(2).normal(size=(8, 3)), "float32")
    keras_2d, fused_2d = _pair(flat.shape)
    np.testing.assert_array_equal(fused_2d(flat, training=True), keras_2d(flat, training=True))
    fused.trainable = False
    before = fused.get_weights()
    np.testing.assert_array_equal(fused(x, training=True), keras_bn(x, training=False))
    for a, b in zip(fused.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)  # frozen: moving statistics untouched
    assert kernel_calls == [(4, 4, 3)]


def test_built_model_uses_it_and_saves(tmp_path, kernel_calls):
    cfg = ModelConfig(filters=4, blocks=2, head_units=8, whiten_init=False, fused_batch_norm=True)
    model = build_model(cfg, (8, 8, 1), 3)
    fused = [layer.name for layer in model.layers if isinstance(layer, FusedBatchNormalization)]
    assert fused == ["block1_conv1_bn", "block2_conv1_bn", "head_bn"]  # the head's (2-D) runs Keras' code
    x = np.random.default_rng(3).uniform(0, 255, (6, 8, 8, 1)).astype("float32")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.train_on_batch(x, np.arange(6) % 3)
    # The two convolutions' batch norms, as often as Keras traces the step; never the head's (2-D).
    assert set(kernel_calls) == {(4, 4, 4), (2, 2, 8)}
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.get_layer("block1_conv1_bn"), FusedBatchNormalization)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))

    plain = build_model(ModelConfig(filters=4, blocks=2, whiten_init=False, fused_batch_norm=False), (8, 8, 1), 3)
    assert not any(isinstance(layer, FusedBatchNormalization) for layer in plain.layers)
