"""Dataset loaders: scikit-learn digits, MNIST / Fashion-MNIST (IDX), CIFAR-10 (python batches), folders.

Every loader returns a :class:`Dataset` of uint8 images in NHWC layout (0-255, scaling happens
inside the model) with class names. Files are looked up in, in order: the configured data
directory, ``$CNNEXP_DATA_DIR``, the Keras cache and Debian's ``/usr/share/datasets``; when absent,
Keras' own download is tried, and if that fails too the error says where to put the files.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import struct
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np

from cnnexp.config import FOLDER_PREFIX, DataConfig
from cnnexp.data.dataset import Dataset
from cnnexp.data.folder import load_folder
from cnnexp.errors import DataError

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def search_dirs(data_dir: str | None, subdir: str) -> list[Path]:
    """Where to look for a dataset's files, most specific first."""
    roots = [data_dir, os.environ.get("CNNEXP_DATA_DIR")]
    dirs: list[Path] = []
    for root in roots:
        if root:
            dirs += [Path(root) / subdir, Path(root)]
    dirs += [keras_datasets() / subdir, Path("/usr/share/datasets") / subdir]
    return dirs


def keras_datasets() -> Path:
    """Keras' download cache (``keras.datasets.*.load_data()``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def load_dataset(cfg: DataConfig) -> Dataset:
    name = cfg.dataset
    if name.startswith(FOLDER_PREFIX):
        return load_folder(
            Path(name[len(FOLDER_PREFIX) :]), cfg.image_size or (32, 32), cfg.channels, cfg.skip_bad_images
        )
    loaders = {
        "digits": lambda: load_digits(),
        "fashion_mnist": lambda: load_idx_dataset("fashion_mnist", cfg.data_dir),
        "mnist": lambda: load_idx_dataset("mnist", cfg.data_dir),
        "cifar10": lambda: load_cifar10(cfg.data_dir),
    }
    return loaders[name]()


# The image shape of each built-in dataset, known without loading it: checks run before any training.
INPUT_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


def input_shape(cfg: DataConfig) -> tuple[int, int, int]:
    """(height, width, channels) of the images ``cfg`` loads; a folder's come from data.image_size."""
    if cfg.dataset.startswith(FOLDER_PREFIX):
        height, width = cfg.image_size or (32, 32)
        return (height, width, cfg.channels or 3)
    return INPUT_SHAPES[cfg.dataset]


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    # 0-16 intensities scaled to the 0-255 range every other dataset uses.
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    source = str(resources.files("sklearn.datasets.data") / "digits.csv.gz")  # scikit-learn ships the file
    return Dataset("digits", x, bunch.target.astype(np.int64), DIGIT_CLASSES, source=source)


# ---------------------------------------------------------------------------- IDX (MNIST family)


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) into a uint8 array, checking its declared size."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read gzip IDX file ({e}); delete it and download it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(">" + "I" * ndim, raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: truncated or corrupt: header declares {expected} bytes of data, "
            f"file holds {len(raw) - header}; delete it and download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx_dir(name: str, data_dir: str | None) -> Path | None:
    subdir = name.replace("_", "-")  # Keras' cache and Debian both say fashion-mnist
    for d in search_dirs(data_dir, subdir):
        if all((d / f).is_file() for f in IDX_FILES.values()):
            return d
    return None


def load_idx_dataset(name: str, data_dir: str | None) -> Dataset:
    classes = FASHION_MNIST_CLASSES if name == "fashion_mnist" else DIGIT_CLASSES
    found = _find_idx_dir(name, data_dir)
    if found is not None:
        log.info("loading %s from %s", name, found)
        arrays = {key: read_idx(found / fname) for key, fname in IDX_FILES.items()}
    else:
        files = "the four IDX files " + ", ".join(IDX_FILES.values())
        downloaded = _keras_download(name, data_dir, files, name.replace("_", "-"))
        arrays = dict(zip(("x_train", "y_train", "x_test", "y_test"), downloaded, strict=True))
        found = keras_datasets() / name.replace("_", "-")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise DataError(f"{name}: {len(x)} {split} images but {len(y)} labels")
    return Dataset(
        name,
        arrays["x_train"][..., None],
        arrays["y_train"].astype(np.int64),
        classes,
        arrays["x_test"][..., None],
        arrays["y_test"].astype(np.int64),
        source=str(found),
    )


def _keras_download(name: str, data_dir: str | None, files: str, subdir: str) -> tuple[np.ndarray, ...]:
    """Keras' own download and parse (works online); offline, a clear error saying what to do."""
    import keras

    module = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as e:  # noqa: BLE001 - any download failure gets the same advice
        looked = ", ".join(str(d) for d in search_dirs(data_dir, subdir))
        hint = (
            "On Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist."
            if name == "fashion_mnist"
            else "Download them from the dataset's home page."
        )
        raise DataError(
            f"{name} is not on this machine and Keras could not download it ({type(e).__name__}: {e}). "
            f"Put {files} in one of: {looked} "
            f"(or set data.data_dir / CNNEXP_DATA_DIR). {hint}"
        ) from None
    return x_train, y_train, x_test, y_test


# ---------------------------------------------------------------------------- CIFAR-10


class _SafeUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only the numpy array reconstruction they need, nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle API
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _SafeUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as e:  # noqa: BLE001 - every way a batch can be broken gets the same message
        raise DataError(f"{path}: not a readable CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if len(images) != len(labels):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _find_cifar_dir(data_dir: str | None) -> Path | None:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for d in search_dirs(data_dir, "cifar-10-batches-py"):
        if all((d / n).is_file() for n in names):
            return d
        archive = d / "cifar-10-python.tar.gz"
        if archive.is_file():
            target = d / "cifar-10-batches-py"
            with tarfile.open(archive) as tar:
                tar.extractall(d, filter="data")
            if all((target / n).is_file() for n in names):
                return target
    return None


def load_cifar10(data_dir: str | None) -> Dataset:
    found = _find_cifar_dir(data_dir)
    if found is None:
        files = "cifar-10-python.tar.gz or its extracted data_batch_1..5 and test_batch"
        x_train, y_train, x_test, y_test = _keras_download("cifar10", data_dir, files, "cifar-10-batches-py")
        y_train, y_test = y_train.reshape(-1), y_test.reshape(-1)
        found = keras_datasets()
    else:
        parts = [read_cifar_batch(found / f"data_batch_{i}") for i in range(1, 6)]
        x_train = np.concatenate([p[0] for p in parts])
        y_train = np.concatenate([p[1] for p in parts])
        x_test, y_test = read_cifar_batch(found / "test_batch")
    return Dataset(
        "cifar10", x_train, y_train.astype(np.int64), CIFAR10_CLASSES, x_test, y_test.astype(np.int64), str(found)
    )
