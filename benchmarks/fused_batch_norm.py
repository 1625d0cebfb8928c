"""Is Keras 3's unfused batch norm a measurable cost on the TensorFlow backend?

Keras 3 normalises with ``tf.nn.moments`` + ``tf.nn.batch_normalization`` (several element-wise
ops, each with its gradient); TensorFlow's ``FusedBatchNormV3`` does it in one kernel. Both are
timed in one process, interleaved, on cnnexp's conv -> pool -> BN CNN (32/64/128 filters, 28x28x1,
batch 128): the fused variant is cnnexp's own ``FusedBatchNormalization`` (``cnnexp/models/norm.py``)
in place of the convolutions' batch norms (JSONs before it shipped timed a copy of it here without
its variance conversion). The head's 2-D batch norm has no fused kernel and stays Keras' in both.

    python -m benchmarks.fused_batch_norm --repeats 8 [--precision mixed_bfloat16]
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

from benchmarks import common


def _models() -> dict[str, Any]:
    import keras
    from keras import layers

    from cnnexp.models.norm import FusedBatchNormalization

    def model(norm) -> keras.Model:
        inputs = keras.Input((28, 28, 1))
        x = layers.Rescaling(1 / 255)(inputs)
        for filters in (32, 64, 128):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.MaxPooling2D(2)(x)
            x = layers.Activation("relu")(norm(momentum=0.9)(x))
        x = layers.Dense(128, use_bias=False)(layers.Flatten()(x))
        x = layers.Activation("relu")(layers.BatchNormalization(momentum=0.9)(x))
        m = keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
        m.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        return m

    return {"keras batch norm": model(layers.BatchNormalization), "fused batch norm": model(FusedBatchNormalization)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import numpy as np

    p = common.parser(__doc__.splitlines()[0], repeats=8)
    p.add_argument(
        "--precision", default="float32", help="Keras dtype policy, e.g. mixed_bfloat16 (cnnexp's auto on bf16 CPUs)"
    )
    args = p.parse_args(argv)
    import keras

    keras.config.set_dtype_policy(args.precision)
    steps = 2 if args.smoke else 20
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 255, (128, 28, 28, 1)).astype("float32"), np.arange(128) % 10
    models = _models()
    for m in models.values():
        for _ in range(3):  # tracing
            m.train_on_batch(x, y)

    def timed(m) -> dict[str, float]:
        began = time.perf_counter()
        for _ in range(steps):
            m.train_on_batch(x, y)
        return {"step_ms": 1000 * (time.perf_counter() - began) / steps}

    samples = common.interleave({name: (lambda m=m: timed(m)) for name, m in models.items()}, args.repeats)
    med = {name: statistics.median(s["step_ms"] for s in runs) for name, runs in samples.items()}
    ratio = med["keras batch norm"] / med["fused batch norm"]
    print(f"median step: {med}; Keras / fused = {ratio:.3f}")
    payload = {
        "precision": args.precision,
        "samples": samples,
        "median_step_ms": med,
        "keras_over_fused": ratio,
        "smoke": args.smoke,
    }
    common.write_result(args.out, "fused_batch_norm", payload)
    return payload


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
