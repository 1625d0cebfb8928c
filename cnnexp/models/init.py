"""airbench's two initialisations (Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024),
applied to a built network: the first convolution starts as a patch-whitening filter bank of the
training images, every later one as the identity on its input channels (Dirac). Neither changes
the architecture, so a saved model carries them as ordinary weights and nothing is needed to load it.
"""

from __future__ import annotations

import keras
import numpy as np

from cnnexp.config import ModelConfig

WHITEN_EPS = 5e-4  # airbench's: keeps the near-zero eigenvalues (flat patches) from blowing up
WHITEN_IMAGES = 5000  # airbench estimates the covariance on the first 5,000 training images
_CHUNK_PATCHES = 250_000  # patches per covariance update: bounds memory (~150 MB for 5x5 RGB patches)


def patch_moment(images: np.ndarray, kernel_size: int) -> np.ndarray:
    """Second moment of every k x k patch of the images, as the first convolution sees them (pixels
    scaled to [0, 1]); flattened in Keras' kernel order (row, column, channel)."""
    k, channels = kernel_size, images.shape[-1]
    total, count = np.zeros((k * k * channels,) * 2), 0
    chunk = max(1, _CHUNK_PATCHES // max(1, (images.shape[1] - k + 1) * (images.shape[2] - k + 1)))
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].astype(np.float32) / 255.0
        windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # (n, h', w', c, k, k)
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * channels).astype(np.float64)
        total += patches.T @ patches
        count += len(patches)
    return total / count


def whitening_kernel(images: np.ndarray, kernel_size: int, filters: int) -> np.ndarray:
    """The (k, k, channels, n) whitening bank that fits in ``filters``: the patch moment's eigenvectors,
    largest first, each scaled by 1/sqrt(eigenvalue + eps), followed by the same filters negated
    (the ReLU after the convolution would otherwise drop half of each one's signal)."""
    values, vectors = np.linalg.eigh(patch_moment(images, kernel_size))  # ascending
    n = min(len(values), filters // 2)
    bank = vectors[:, ::-1][:, :n] / np.sqrt(values[::-1][:n] + WHITEN_EPS)
    bank = np.concatenate([bank, -bank], axis=1)
    return bank.reshape(kernel_size, kernel_size, images.shape[-1], 2 * n).astype(np.float32)


def _dirac(kernel: np.ndarray) -> np.ndarray:
    """The kernel with its first (input-channel count) filters replaced by identities: filter i passes
    input channel i through its centre tap. The other filters keep their random start."""
    kh, kw, c_in, c_out = kernel.shape
    kernel = kernel.copy()
    for i in range(min(c_in, c_out)):
        kernel[..., i] = 0.0
        kernel[kh // 2, kw // 2, i, i] = 1.0
    return kernel


def initialise(model: keras.Model, cfg: ModelConfig, train_images: np.ndarray) -> None:
    """Apply ``cfg.whiten_init`` and ``cfg.dirac_init`` to a network fresh from ``build_models`` (its
    weights are shared with the saved model, so that gets them too)."""
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs or not (cfg.whiten_init or cfg.dirac_init):
        return
    first, rest = convs[0], convs[1:]
    if cfg.whiten_init:
        kernel = keras.ops.convert_to_numpy(first.kernel).copy()
        bank = whitening_kernel(train_images[:WHITEN_IMAGES], kernel.shape[0], kernel.shape[-1])
        kernel[..., : bank.shape[-1]] = bank
        first.kernel.assign(kernel)
    if cfg.dirac_init:
        for layer in rest:
            layer.kernel.assign(_dirac(keras.ops.convert_to_numpy(layer.kernel)))
