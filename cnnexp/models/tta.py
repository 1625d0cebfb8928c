"""Test-time augmentation as Keras layers inside the saved model.

Serving, evaluation and the web page all run the saved model, so they all get the averaged
prediction without any code of their own. The layers are registered under the package name
``cnnexp`` (``cnnexp>MirrorBatch``): saved models find them by that name, whatever module holds them.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="cnnexp")
class MirrorBatch(layers.Layer):
    """Flip TTA, part 1: at inference, appends each image's mirror to the batch.

    Kept for models saved by cnnexp 0.1.0; newer ones hold :class:`TestTimeViews`.
    """

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


class _Views(layers.Layer):
    """What both halves of test-time augmentation agree on: mirror images or not, and the shift."""

    def __init__(self, flip: bool = True, shift: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.flip, self.shift = bool(flip), int(shift)

    def get_config(self) -> dict:
        return {**super().get_config(), "flip": self.flip, "shift": self.shift}


@keras.saving.register_keras_serializable(package="cnnexp")
class TestTimeViews(_Views):
    """Test-time augmentation, part 1: at inference, stacks each image's views along the batch.

    The views are the image and, with ``shift``, the image moved ``shift`` pixels up-left and
    down-right (reflect padding), each followed by its mirror image when ``flip`` is on: airbench's
    ``infer_mirror_translate``. :class:`AverageViews` weighs them back into one prediction.
    """

    def call(self, x, training=None):
        if training:
            return x
        views = [x]
        if self.shift:
            s, h, w = self.shift, x.shape[1], x.shape[2]
            padded = keras.ops.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="reflect")
            views += [padded[:, :h, :w], padded[:, 2 * s : h + 2 * s, 2 * s : w + 2 * s]]
        if self.flip:
            views += [keras.ops.flip(v, axis=2) for v in views]
        return keras.ops.concatenate(views, axis=0)


@keras.saving.register_keras_serializable(package="cnnexp")
class AverageViews(_Views):
    """Test-time augmentation, part 2: one probability per image from its :class:`TestTimeViews`.

    The unshifted views weigh half, the two shifted ones a quarter each (airbench); an image and
    its mirror weigh alike.
    """

    def call(self, x, training=None):
        if training:
            return x
        weights = [0.5, 0.25, 0.25] if self.shift else [1.0]
        if self.flip:
            weights = [w / 2 for w in weights] * 2
        n = keras.ops.shape(x)[0] // len(weights)
        return sum(w * x[i * n : (i + 1) * n] for i, w in enumerate(weights))
