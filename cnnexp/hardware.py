"""What this machine's processor does natively: the input to defaults that depend on hardware."""

from __future__ import annotations

from functools import cache
from pathlib import Path

# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic: Intel AMX (Sapphire Rapids and
# later), AVX512-BF16 (Cooper Lake, AMD Zen 4 and later). Without them TensorFlow emulates bf16.
# Measured: a training step 1.26x faster than fp32 on a Xeon with AMX, 1.34x on a Zen 4 and 1.27x
# on a Zen 5 with AVX512-BF16 and no AMX, accuracy unchanged within seed noise (docs/performance.md,
# sections 1 and 2).
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags; empty where /proc/cpuinfo does not exist (macOS, Windows)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16() -> bool:
    return bool(BF16_FLAGS & cpu_flags())
