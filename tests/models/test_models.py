import subprocess
import sys

import keras
import numpy as np
import pytest

from cnnexp.config import ModelConfig, build_config
from cnnexp.errors import ConfigError
from cnnexp.models.cnn import build_model


def _model_cfg(**overrides):
    return build_config(overrides={f"model.{k}": v for k, v in overrides.items()}).model


@pytest.mark.parametrize("family", ["plain", "residual"])
@pytest.mark.parametrize("shape, classes", [((8, 8, 1), 10), ((32, 32, 3), 4)])
def test_families_adapt_to_shape_and_classes(family, shape, classes):
    model = build_model(_model_cfg(family=family, filters=4, head_units=8), shape, classes)
    out = model(np.full((3, *shape), 255.0, dtype=np.float32))
    assert out.shape == (3, classes)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)
    assert model.layers[1].name == "scale"  # raw 0-255 pixels in, scaling inside the model


def test_residual_blocks_have_shortcuts():
    model = build_model(_model_cfg(family="residual", filters=4, blocks=2), (16, 16, 1), 3)
    names = [layer.name for layer in model.layers]
    assert "block1_add" in names and "block2_add" in names and "block2_proj" in names


def test_config_drives_architecture():
    small = build_model(_model_cfg(filters=4, blocks=1, batch_norm=False, head_units=0), (8, 8, 1), 10)
    big = build_model(_model_cfg(filters=16, blocks=2), (8, 8, 1), 10)
    assert small.count_params() < big.count_params()
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in small.layers)
    sep = build_model(_model_cfg(conv_type="separable", filters=8), (8, 8, 1), 10)
    assert any(isinstance(layer, keras.layers.SeparableConv2D) for layer in sep.layers)


def test_build_is_pure():
    cfg = _model_cfg(filters=4)
    a, b = build_model(cfg, (8, 8, 1), 10), build_model(cfg, (8, 8, 1), 10)
    assert [layer.name for layer in a.layers] == [layer.name for layer in b.layers]
    assert a.count_params() == b.count_params()


def test_pooling_below_one_pixel_is_refused():
    with pytest.raises(ConfigError, match=r"model.blocks=4 pools the 8x8 input below 1x1.*at most 3 blocks"):
        build_model(_model_cfg(blocks=4), (8, 8, 1), 10)


def test_flip_tta_averages_each_image_with_its_mirror(tmp_path):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 1)).astype(np.float32)
    mirrored = x[:, :, ::-1]
    plain = build_model(ModelConfig(filters=4, flip_tta=False), (8, 8, 1), 3)
    tta = build_model(ModelConfig(filters=4, flip_tta=True), (8, 8, 1), 3)
    tta.set_weights(plain.get_weights())  # same network; TTA adds no weights
    # Random weights tell an image from its mirror; the TTA model cannot: it averages both.
    assert not np.allclose(plain.predict_on_batch(x), plain.predict_on_batch(mirrored), atol=1e-4)
    expected = (plain.predict_on_batch(x) + plain.predict_on_batch(mirrored)) / 2
    np.testing.assert_allclose(tta.predict_on_batch(x), expected, atol=1e-5)
    np.testing.assert_allclose(tta.predict_on_batch(mirrored), expected, atol=1e-5)
    # The saved model keeps it (serving loads this file).
    tta.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(loaded.predict_on_batch(mirrored), expected, atol=1e-5)
    # A serving process imports only the pyfunc's module; that must be enough to load the file.
    load = (
        "import sys, keras, cnnexp.serving.pyfunc; "
        "keras.saving.load_model(sys.argv[1], compile=False).get_layer('tta_views')"
    )
    subprocess.run([sys.executable, "-c", load, str(tmp_path / "m.keras")], check=True, capture_output=True)
    # Training sees one prediction per image, not a doubled batch (last: it moves batch-norm statistics).
    assert tta(x, training=True).shape == (4, 3)


def test_translation_tta_in_the_saved_model_matches_the_views_averaged_in_process(tmp_path):
    """flip x one-pixel shifts (airbench): the saved model's prediction is the weighted mean of its views."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(1).uniform(0, 255, (5, 8, 8, 1)).astype(np.float32)
    plain = build_model(ModelConfig(filters=4, flip_tta=False), (8, 8, 1), 3)
    tta = build_model(ModelConfig(filters=4, flip_tta=True, tta_shift=1), (8, 8, 1), 3)
    tta.set_weights(plain.get_weights())
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    views = [x, padded[:, :8, :8], padded[:, 2:, 2:]]

    def flip_mean(v):
        return (plain.predict_on_batch(v) + plain.predict_on_batch(v[:, :, ::-1])) / 2

    expected = 0.5 * flip_mean(views[0]) + 0.25 * flip_mean(views[1]) + 0.25 * flip_mean(views[2])
    assert not np.allclose(expected, flip_mean(x), atol=1e-4)  # the shifts change the answer
    np.testing.assert_allclose(tta.predict_on_batch(x), expected, atol=1e-5)
    tta.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(x, batch_size=2, verbose=0), expected, atol=1e-5)
    assert tta(x, training=True).shape == (5, 3)


def test_conv_pool_bn_order_pools_before_the_batch_norm():
    cfg = ModelConfig(filters=4, block_order="conv_pool_bn", bn_scale=False)
    model = build_model(cfg, (8, 8, 1), 3)
    names = [layer.name for layer in model.layers]
    assert names.index("block1_conv1_pool") < names.index("block1_conv1_bn") < names.index("block1_conv1_relu")
    assert model.get_layer("block1_conv1_bn").output.shape[1:3] == (4, 4)  # normalises a quarter of the pixels
    assert not model.get_layer("block1_conv1_bn").scale  # a shift only
    pool_last = build_model(ModelConfig(filters=4, block_order="conv_bn_pool"), (8, 8, 1), 3)
    assert pool_last.get_layer("block1_conv1_bn").output.shape[1:3] == (8, 8)
    assert model.output.shape == pool_last.output.shape


def test_the_trained_and_the_saved_model_share_one_network():
    """Training and validation run one view per image; the saved model wraps the same weights in TTA."""
    from cnnexp.models.cnn import build_models

    trained, saved = build_models(ModelConfig(filters=4, flip_tta=True, tta_shift=1), (8, 8, 1), 3)
    assert "tta_views" in [layer.name for layer in saved.layers]
    assert "tta_views" not in [layer.name for layer in trained.layers]
    assert trained.get_layer("block1_conv1") is saved.get_layer("block1_conv1")
    trained.get_layer("probabilities").bias.assign([5.0, 0.0, 0.0])  # a change made by training ...
    x = np.zeros((2, 8, 8, 1), np.float32)
    assert (saved.predict_on_batch(x).argmax(1) == 0).all()  # ... is the saved model's too
    plain, same = build_models(ModelConfig(filters=4, flip_tta=False, tta_shift=0), (8, 8, 1), 3)
    assert plain is same  # nothing to wrap
