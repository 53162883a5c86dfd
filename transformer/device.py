"""Where and in which precision a run computes: device names, native bf16, autocast; and how the
C library's malloc keeps or returns the CPU memory that tensors free."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from transformer.config import ConfigError
from transformer.packing import cpu_has_amx


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


# glibc's mallopt() parameters (malloc.h) and the largest mmap threshold it accepts on 64 bits.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_LARGEST_MMAP_THRESHOLD = 32 * 1024 * 1024


def keep_freed_cpu_memory(device: torch.device) -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the system,
    when `device` is the CPU (elsewhere the large tensors are not in malloc's memory).

    A training step allocates and frees the same large tensors every time (activations, logits,
    gradients: 1-64 MB each). By default glibc gives blocks above a threshold back to the kernel
    when they are freed, so the next step's tensors are fresh pages, and every 4 KB page faults on
    first touch. Keeping them (blocks up to 32 MB from the heap, which is never trimmed) made CPU
    training steps 3-5% faster on an Intel Xeon (bf16 6,760 -> 7,108 target tokens/s, fp32 +3%;
    docs/history.md); the process keeps its peak memory instead of shrinking between steps.
    Decoding repeats itself the same way (translate.py and serve.py call it too): a batched beam-5
    search 548 -> 522-529 ms. Returns whether both settings took (False off the CPU, and off glibc,
    e.g. macOS or musl: nothing changes)."""
    libc = glibc()
    if device.type != "cpu" or libc is None:
        return False
    trim = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    mmap = libc.mallopt(_M_MMAP_THRESHOLD, _LARGEST_MMAP_THRESHOLD)
    return trim == 1 and mmap == 1


def return_freed_memory() -> None:
    """Give the memory of freed temporaries back to the operating system (glibc's malloc_trim).

    Sorting millions of pairs makes a few temporary arrays of tens of MB. glibc keeps freed
    blocks of that size in the process's heap for reuse (its mmap threshold rises to 32 MB after
    the first such free), so they would stay resident for the whole run: measured on 3M pairs,
    +170 MB per process after 50 batches, against +21 MB (the epoch's order) with this call.
    Elsewhere (macOS, musl) it does nothing."""
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the one with mallopt and malloc_trim), else None: macOS,
    musl and Windows keep their own allocators' defaults."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc only: AttributeError elsewhere)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


# oneDNN's kernel caches, the environment variables that size them (read once, when the first
# kernel is built), and the size train.py gives them on a CPU without AMX.
KERNEL_CACHES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
KERNEL_CACHE_ENTRIES = 128


def reserve_search_threads(requested: int | None) -> int:
    """The CPU threads a search will use (`requested`, else torch's count, one per core), after
    leaving torch a single thread until the model is loaded; the caller then gives them to torch's
    search (torch.set_num_threads) or to the CTranslate2 engine.

    Why: torch's OpenMP runtime keeps a team of threads for every thread that starts parallel work
    and counts them all against the cores, and CTranslate2 in the same process binds to that
    runtime too (ctranslate2_engine.py). A model loaded with 2 threads on the main thread, then
    searched with 2 more in the server's worker thread, gave the runtime more threads than cores
    and every wait became a sleep: greedy, one sentence a call, 100 sentences 3.4 s instead of 1.5 s
    on 2 cores; CTranslate2 beside a started torch pool 5.3 s instead of 0.8 s for 200. Call it
    before torch's first parallel operation: a pool torch has started stays counted."""
    threads = requested or torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


def limit_kernel_caches(device: torch.device) -> bool:
    """Keep oneDNN's kernel caches small on a CPU without AMX; call before the first bf16 matmul.

    oneDNN (torch's bf16 matmuls on a CPU; decoding's packed float32 layers) builds a kernel for
    each new matrix shape and keeps the last 1,024 in each of two caches, its own and ideep's. A
    training batch's row count is its number of real tokens, new at almost every step (~28 new
    kernels a step), so the caches fill within ~40 steps and then only hold memory. Measured on an
    AMD EPYC (avx512_bf16), the multi30k recipe in bf16, 98 steps and 4 validations: malloc's bytes
    in use 893 -> 369 MB with 128 entries, and the heap around them, which the long-lived entries
    fragment, shrank as much again: the run's peak RSS 2.59 -> 1.63 GB, 1.19x the peak of its first
    25 steps (was 1.52x). The steps alone plateau at 1.34 GB from step 20 (were still growing at
    2.34 GB after 60). The kernels cost little to build there (128 entries: about 1 more build a
    step, <1 ms; a validation's decoding builds ~190 either way, ~0.1 s). With AMX, training rounds
    its rows so that shapes come back (packing.py) and a kernel costs 1-17 ms to build: the caches
    are left as they are. A value set in the environment is kept. Returns whether the caches were limited."""
    if device.type != "cpu" or cpu_has_amx():
        return False
    for name in KERNEL_CACHES:
        os.environ.setdefault(name, str(KERNEL_CACHE_ENTRIES))
    return True


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run trains in, why, and what was measured to choose it."""

    precision: str
    reason: str
    step_seconds: dict[str, float] = field(default_factory=dict)  # per precision, when timed


# bf16 is kept unless its step is more than this much slower than fp32: a short probe cannot tell
# a few percent apart, and bf16 halves the activations' memory.
BF16_TIE = 1.05
# `measure(precisions)` -> seconds of one training step in each (see training/precision.py).
StepTimer = Callable[[list[str]], dict[str, float]]


def resolve_precision(
    precision: str, device: torch.device, measure: StepTimer | None = None
) -> PrecisionChoice:
    """The precision to train in, and why. 'auto' takes bf16 autocast on a CUDA GPU with bf16, and
    fp32 where bf16 would be emulated (many times slower than fp32). On a CPU with native bf16
    (AVX512-BF16 or AMX) it times a training step in each with `measure` and takes the faster:
    native is not always much faster, nor faster at all (the recipe's bf16 step was 2.2x its fp32
    step on an AMD EPYC with AVX512-BF16 but 1.35x on an Intel Xeon with AMX, and the ratio moves
    with the model's shapes), and only this CPU can tell. A near tie (`BF16_TIE`) goes to bf16.
    Without `measure` it takes bf16."""
    if precision != "auto":
        return PrecisionChoice(precision, "set by train.precision")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return PrecisionChoice("bf16", "auto: this CUDA GPU supports bf16")
    if device.type != "cpu" or not cpu_has_native_bf16():
        return PrecisionChoice("fp32", f"auto: no native bf16 on this {device.type}")
    if measure is None:
        return PrecisionChoice("bf16", "auto: this CPU has native bf16 (AVX512-BF16 or AMX)")
    seconds = measure(["bf16", "fp32"])
    timings = (
        f"a training step took {seconds['bf16']:.3f} s in bf16, {seconds['fp32']:.3f} s in fp32"
    )
    if seconds["bf16"] > BF16_TIE * seconds["fp32"]:
        return PrecisionChoice("fp32", f"auto: the faster here; {timings}", seconds)
    return PrecisionChoice("bf16", f"auto: not slower here; {timings}", seconds)


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
