"""Which compute precision MAT runs in: the names users write, and what "auto" means on this machine.

"auto" picks bfloat16 where the hardware computes it natively and it was measured faster than float32
(CUDA GPUs with bf16 support; CPUs whose ATen kernels dispatch to AVX-512 and that have the
`avx512_bf16` or AMX-BF16 instructions), float32 everywhere else. On a CPU without those instructions
bfloat16 is emulated and slower than float32 (see bench/NOTES.md, "bfloat16 on this CPU").
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from matcore.engine import PRECISIONS
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# /proc/cpuinfo flags of instructions that compute bf16 dot products in hardware.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# ATen CPU kernel levels that use those instructions; at "AVX2" or below bf16 is converted in software
# even on a CPU that has them (e.g. ATEN_CPU_CAPABILITY=avx2).
_BF16_KERNEL_LEVELS = ("AVX512", "AVX512_BF16", "AMX")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this process's CPU kernels compute bfloat16 in hardware (avx512_bf16 or AMX)."""
    return _native_bf16(torch.backends.cpu.get_cpu_capability(), cpu_flags())


def _native_bf16(capability: str, flags: frozenset[str]) -> bool:
    return capability.upper() in _BF16_KERNEL_LEVELS and any(flag in flags for flag in NATIVE_BF16_FLAGS)


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The precision name to run in on `device`: `precision` itself, or what "auto" means there.

    Raises ValueError for a name outside PRECISIONS.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return "float32"


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" → CUDA when this process sees a GPU, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
