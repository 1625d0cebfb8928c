import numpy as np
import pytest
from formats import write_idx_dataset
from PIL import Image

from cnnexp.config import build_config
from cnnexp.data.sources import load_dataset
from cnnexp.data.split import split_dataset
from cnnexp.errors import DataError


def _split(seed=0, **overrides):
    cfg = build_config(overrides=overrides)
    return split_dataset(load_dataset(cfg.data), cfg.data, seed)


def test_digits_split_is_stratified_and_sized():
    s = _split(**{"data.val_fraction": 0.1, "data.test_fraction": 0.2})
    sizes = s.sizes()
    assert sum(sizes.values()) == 1797
    assert abs(sizes["test"] - 0.2 * 1797) <= 1 and abs(sizes["val"] - 0.1 * 1797) <= 2
    # every class keeps (close to) its share in every part
    full = np.bincount(np.concatenate([s.y_train, s.y_val, s.y_test])) / 1797
    for y in (s.y_train, s.y_val, s.y_test):
        assert np.abs(np.bincount(y, minlength=10) / len(y) - full).max() < 0.02


def test_same_seed_same_hash_other_seed_other_hash():
    a, b, c = _split(seed=1), _split(seed=1), _split(seed=2)
    assert a.split_hash == b.split_hash
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert a.split_hash != c.split_hash
    assert a.data_hash == c.data_hash


def test_official_test_set_stays_the_test_set(tmp_path):
    arrays = write_idx_dataset(tmp_path / "mnist", n_train=100, n_test=30)
    s = _split(**{"data.dataset": "mnist", "data.data_dir": str(tmp_path), "data.val_fraction": 0.2})
    np.testing.assert_array_equal(s.x_test[..., 0], arrays["x_test"])
    assert s.sizes() == {"train": 80, "val": 20, "test": 30}


def test_train_subset_caps_only_training():
    full, small = _split(), _split(**{"data.train_subset": 200})
    assert small.sizes()["train"] == 200
    assert small.sizes()["val"] == full.sizes()["val"] and small.sizes()["test"] == full.sizes()["test"]
    assert set(small.y_train) == set(range(10))
    assert small.split_hash != full.split_hash


def test_a_class_too_small_to_split_is_named_by_its_folder(tmp_path):
    for name, count in (("cats", 6), ("dogs", 6), ("zebras", 1)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.new("L", (4, 4), 40 * i).save(tmp_path / name / f"{i}.png")
    with pytest.raises(DataError, match="each class needs at least 2 images here: 'zebras' has 1") as err:
        _split(**{"data.dataset": f"folder:{tmp_path}"})
    assert "[2]" not in str(err.value)
