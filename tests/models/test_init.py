import keras
import numpy as np
import pytest

from cnnexp.config import ModelConfig, build_config
from cnnexp.errors import ConfigError
from cnnexp.models.cnn import build_models
from cnnexp.models.init import WHITEN_EPS, initialise, patch_moment, whitening_kernel


def _images(n=40, size=8, channels=3, seed=0):
    """Smooth random images (neighbouring pixels correlate, as in photos): a whitening bank has work to do."""
    noise = np.random.default_rng(seed).random((n, size, size, channels))
    smooth = np.cumsum(np.cumsum(noise, axis=1), axis=2)
    return (255 * smooth / smooth.max()).astype(np.uint8)


def test_the_whitening_bank_decorrelates_the_patches_the_convolution_sees():
    images = _images()
    bank = whitening_kernel(images, 3, 64)  # 27-dim patches: 27 filters and their negatives fit
    assert bank.shape == (3, 3, 3, 54)
    conv = keras.layers.Conv2D(54, 3, use_bias=False, padding="valid")
    conv.build((None, 8, 8, 3))
    conv.kernel.assign(bank)
    out = np.asarray(conv(images.astype(np.float32) / 255.0)).reshape(-1, 54).astype(np.float64)
    moment = out.T @ out / len(out)
    values = np.linalg.eigvalsh(patch_moment(images, 3))[::-1]
    expected = values / (values + WHITEN_EPS)  # ~1 for every direction with signal
    np.testing.assert_allclose(np.diag(moment)[:27], expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(moment[:27, :27] - np.diag(np.diag(moment)[:27]), 0, atol=1e-3)
    np.testing.assert_allclose(bank[..., 27:], -bank[..., :27])


def test_a_narrow_first_convolution_keeps_the_largest_directions():
    images = _images(channels=1)
    full, narrow = whitening_kernel(images, 3, 18), whitening_kernel(images, 3, 6)
    np.testing.assert_allclose(narrow, np.concatenate([full[..., :3], full[..., 9:12]], axis=-1))


def test_initialise_whitens_the_first_convolution_and_makes_the_rest_identities():
    cfg = ModelConfig(filters=8, blocks=2, whiten_init=True, dirac_init=True)
    keras.utils.set_random_seed(0)
    trained, saved = build_models(cfg, (8, 8, 1), 3)
    first, second = (layer for layer in trained.layers if isinstance(layer, keras.layers.Conv2D))
    before = np.asarray(second.kernel).copy()
    images = _images(channels=1)
    initialise(trained, cfg, images)
    np.testing.assert_allclose(np.asarray(first.kernel), whitening_kernel(images, 3, 8), rtol=1e-6)
    # The second convolution's first 8 filters pass their input channel through; the other 8 keep their start.
    x = np.random.default_rng(1).random((2, 4, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(keras.ops.conv(x, second.kernel, padding="same"))[..., :8], x, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(second.kernel)[..., 8:], before[..., 8:])
    assert saved.get_layer(second.name) is second  # the saved model holds the same weights


def test_no_init_leaves_the_random_start():
    cfg = ModelConfig(filters=4, blocks=2, whiten_init=False)
    trained, _ = build_models(cfg, (8, 8, 1), 3)
    before = [np.asarray(w).copy() for w in trained.weights]
    initialise(trained, cfg, _images(channels=1))
    for old, new in zip(before, trained.weights, strict=True):
        np.testing.assert_array_equal(old, np.asarray(new))


@pytest.mark.parametrize("key", ["whiten_init", "dirac_init"])
def test_the_inits_need_a_full_convolution_kernel(key):
    with pytest.raises(ConfigError, match=f"model.{key}=true needs model.conv_type=standard"):
        build_config(overrides={f"model.{key}": True, "model.conv_type": "separable"})


def test_whitening_is_on_by_default_where_the_convolution_is_standard():
    assert build_config().model.whiten_init is True
    assert build_config().model.dirac_init is False
    assert build_config(overrides={"model.conv_type": "separable"}).model.whiten_init is False  # no error


def test_the_covariance_does_not_depend_on_how_it_is_chunked(monkeypatch):
    import cnnexp.models.init as init

    images = _images(n=12, size=10)
    whole = patch_moment(images, 3)
    monkeypatch.setattr(init, "_CHUNK_PATCHES", 100)  # 64 patches an image: one image a chunk
    np.testing.assert_allclose(patch_moment(images, 3), whole, rtol=1e-10)
