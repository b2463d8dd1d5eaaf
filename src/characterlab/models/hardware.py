"""Which device and dtype to compute in.

On CPUs with native bf16 (AVX512-BF16 or AMX on x86, the BF16 extension on Arm) bf16 matmuls
run several times faster than fp32 (about 4x on the 2-core development machine), so we use bf16
there; elsewhere bf16 is emulated and slower than fp32, so we stay in fp32.
"""

from __future__ import annotations

import functools
import platform

import torch


@functools.cache
def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        return False
    flags: set[str] = set()
    for line in info.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in flags
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device | str | None = None) -> torch.dtype:
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def parse_dtype(name: str | None, device: torch.device | None = None) -> torch.dtype:
    """``auto`` (or None) picks :func:`default_dtype`; otherwise bf16/fp16/fp32."""
    if name in (None, "auto"):
        return default_dtype(device)
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; use auto, bf16, fp16 or fp32")
    return table[name]
