import gzip

import numpy as np
import pytest
from formats import write_cifar_batches, write_idx_dataset, write_image_folder

from cnnexp.config import build_config
from cnnexp.data import sources as datasets
from cnnexp.data.sources import FASHION_MNIST_CLASSES, load_dataset, read_idx
from cnnexp.errors import DataError


def _data(**overrides):
    return build_config(overrides={f"data.{k}": v for k, v in overrides.items()}).data


def test_digits_is_always_there():
    ds = load_dataset(_data())
    assert ds.x_train.shape == (1797, 8, 8, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_train.max() == 255 and ds.x_test is None
    assert ds.class_names == tuple("0123456789")


@pytest.mark.parametrize("name", ["fashion_mnist", "mnist"])
def test_idx_files_from_data_dir(tmp_path, name, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    arrays = write_idx_dataset(tmp_path / name.replace("_", "-"))
    ds = load_dataset(_data(dataset=name, data_dir=str(tmp_path)))
    assert ds.x_train.shape == (60, 28, 28, 1) and ds.x_test.shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
    assert len(ds.class_names) == 10
    if name == "fashion_mnist":
        assert ds.class_names == FASHION_MNIST_CLASSES and ds.class_names[9] == "Ankle boot"


def test_idx_lookup_uses_environment_variable(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path / "fashion-mnist")
    monkeypatch.setenv("CNNEXP_DATA_DIR", str(tmp_path))
    assert len(load_dataset(_data(dataset="fashion_mnist")).y_train) == 60


def test_truncated_idx_file_is_named(tmp_path):
    arrays = write_idx_dataset(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.open(path).read()
    with gzip.open(path, "wb") as f:
        f.write(raw[: len(raw) - 100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: truncated or corrupt"):
        read_idx(path)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: cannot read"):
        read_idx(path)
    assert arrays["x_train"].shape == (60, 28, 28)


def test_offline_without_files_gives_clear_error(tmp_path, monkeypatch):
    """Absent files fall through to Keras' real download; when it fails, say where to put the files."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv("CNNEXP_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "search_dirs", lambda data_dir, subdir: [tmp_path / "nowhere"])
    calls = []

    def offline(*args, **kwargs):
        calls.append(1)
        raise OSError("network is unreachable")

    import keras

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    with pytest.raises(DataError) as err:
        load_dataset(_data(dataset="fashion_mnist"))
    message = str(err.value)
    assert calls == [1]
    assert "network is unreachable" in message and "train-images-idx3-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message and "nowhere" in message


@pytest.mark.parametrize("archive", [False, True])
def test_cifar10_batches(tmp_path, archive, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    write_cifar_batches(tmp_path, per_batch=20, archive=archive)
    ds = load_dataset(_data(dataset="cifar10", data_dir=str(tmp_path)))
    assert ds.x_train.shape == (100, 32, 32, 3) and ds.x_test.shape == (20, 32, 32, 3)
    assert ds.class_names[0] == "airplane" and set(ds.y_train) == set(range(10))


def test_cifar_loader_refuses_foreign_pickles(tmp_path):
    import pickle

    batches = write_cifar_batches(tmp_path)
    (batches / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros(3), "x": complex(1, 2)}))
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR-10 python batch.*refusing"):
        load_dataset(_data(dataset="cifar10", data_dir=str(tmp_path)))


def test_image_folder_mixed_sizes_and_modes(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    ds = load_dataset(_data(dataset=f"folder:{root}", image_size="24x20"))
    assert ds.x_train.shape == (18, 24, 20, 3)
    assert ds.class_names == ("cats", "dogs", "owls")
    assert np.bincount(ds.y_train).tolist() == [6, 6, 6]


def test_image_folder_grayscale_only_gives_one_channel(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("L", (10 + i, 12), color=40 * i).save(tmp_path / c / f"{i}.png")
    ds = load_dataset(_data(dataset=f"folder:{tmp_path}", image_size="16x16"))
    assert ds.x_train.shape == (6, 16, 16, 1)


def test_corrupt_image_is_named_or_skipped(tmp_path):
    root = write_image_folder(tmp_path / "pets", per_class=4)
    bad = root / "dogs" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="broken.png: unreadable image"):
        load_dataset(_data(dataset=f"folder:{root}"))
    with pytest.warns(UserWarning, match="broken.png"):
        ds = load_dataset(_data(dataset=f"folder:{root}", skip_bad_images=True))
    assert len(ds.y_train) == 12


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(_data(dataset=f"folder:{tmp_path / 'nope'}"))
