"""Where and in which precision a run computes: device names, native bf16, autocast."""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from transformer.config import ConfigError


def resolve_device(name: str, setting: str = "train.device") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else is checked to exist. `setting` is
    the config key or command-line flag the name came from, for the messages."""
    use_cpu = f"{setting} cpu" if setting.startswith("-") else f"{setting}=cpu"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"{setting} {name!r} is not a device; use auto, cpu, cuda or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting} asks for cuda but no CUDA GPU is visible; use {use_cpu}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{setting} asks for mps but it is not available; use {use_cpu}")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls in hardware (AVX512-BF16 or AMX). Without them,
    PyTorch emulates bf16 and autocast makes training many times slower than fp32 (measured on
    an AVX2-only AMD EPYC: 63 vs 1,997 target tokens/s at d_model 256)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: cannot tell, so do not warn
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """The precision to train in, and why. 'auto' takes bf16 autocast where the hardware computes
    bf16 natively (a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX) and fp32 elsewhere:
    emulated bf16 is many times slower than fp32, native bf16 ~1.3x faster on such CPUs."""
    if precision != "auto":
        return precision, "set by train.precision"
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16", "auto: this CUDA GPU supports bf16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16", "auto: this CPU has native bf16 (AVX512-BF16 or AMX)"
    return "fp32", f"auto: no native bf16 on this {device.type}"


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse fp16 off CUDA; warn when bf16 would be emulated (slow, not wrong)."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "train.precision=bf16 on a CPU without native bf16 (AVX512-BF16/AMX) is emulated and "
            "much slower than fp32; use train.precision=fp32 on this machine",
            stacklevel=3,
        )


def autocast_context(device: torch.device, precision: str) -> Any:
    """bf16/fp16 autocast for the forward pass, or nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
