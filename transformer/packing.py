"""Packing: run the position-wise parts of the model on real tokens only, never on padding.

Everything in a Transformer except attention treats each position on its own: embeddings, layer
norms, the attention projections, the feed-forward block, dropout, residual sums and the output
projection. Those can run on the N real tokens of a padded (B, T) batch gathered into one (N, D)
matrix. Attention is the one place where sentences matter; it unpacks to (B, T, .), attends under
the padding mask, and packs its output again.

Why bother: a batch is padded to its longest sentence, so in batches of 64 random Multi30k sentences
only 47% of the source + target positions are real tokens (`python bench/train_speed.py` prints
this ratio); packing skips the other 53% of the matmuls, including the 8,000-way output projection
and the softmax over it, which are the largest per-token cost. Length-bucketed batches are ~95% real,
so there packing gains less, and it costs only two copies per attention layer.

Training uses it through `Transformer.token_states`; decoding does not need it, because the target
prefixes of a decoding batch all have the same length.

Rows rounded up (bf16 on a CPU with AMX): oneDNN, which runs torch's bf16 matmuls on a CPU, builds
(JIT-compiles) a kernel for every new matrix shape and keeps a limited number of them. Packed
batches give every matmul a new row count N at almost every step, so kernels are built again and
again: on an Intel Xeon with AMX one bf16 matmul took 4.40 ms instead of 0.49 ms when N changed at
every call, and a bf16 training step of the recipe was 1.5x faster (4,700 -> 7,100 target tokens/s,
steady state) with the rows rounded up to a multiple of 64 (issue 24; docs/history.md). With
`row_multiple` the packing appends a few zero rows, so that the row count is a multiple of it and
a step meets one of a handful of shapes. (Taking padding positions instead is not enough: token
batches are ~97% real tokens, so they often lack the padding to round up with.) The extra rows
belong to no position: attention never sees them, and the loss gives them no weight. On a 2-core
AMD EPYC (avx512_bf16, no AMX) the kernels are cheap to build and the extra rows only cost: bf16
steps 3% slower with 64 (interleaved in one process, docs/history.md), so rows are rounded on AMX
CPUs only. Float32 matmuls run through MKL, which builds nothing per shape.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

# Rows of a packed bf16 batch on an AMX CPU are a multiple of this (see above); 64 is the block size
# of the AMX bf16 kernels (16 rows x 4 tiles).
AMX_BF16_ROW_MULTIPLE = 64


@functools.cache
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles for bf16 (Linux: /proc/cpuinfo's `amx_bf16` flag)."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def row_multiple(device: torch.device, precision: str, amx: bool | None = None) -> int:
    """What training rounds packed row counts up to on `device` in `precision` ('fp32', 'bf16',
    'fp16'): 64 for bf16 on a CPU with AMX (`amx`: detected when None), else 1 (exactly the real
    tokens)."""
    if device.type != "cpu" or precision != "bf16":
        return 1
    return AMX_BF16_ROW_MULTIPLE if (cpu_has_amx() if amx is None else amx) else 1


class Packing:
    """Where the real tokens of a padded batch sit: the row-major order of `ids[keep]`; with
    `row_multiple` > 1, followed by as many extra rows as round the row count up to a multiple of
    it. The extra rows are zeros that belong to no position: they run through the position-wise
    layers like any row, the unpacking drops them, and the loss gives them PAD labels.

    keep: (B, T) bool, True at real tokens."""

    def __init__(self, keep: Tensor, row_multiple: int = 1) -> None:
        self.batch_size, self.length = keep.shape
        # One host sync per batch (the row count must be known); nothing else in the model syncs.
        self.index = keep.flatten().nonzero().squeeze(1)  # (N,) flat positions in B * T
        n_real = self.index.numel()
        self.n_extra = -(-n_real // row_multiple) * row_multiple - n_real
        positions = self.index % self.length  # (N,) position of each token in its sentence
        self.positions = self._with_extra_rows(positions)  # (R,)

    @property
    def n_rows(self) -> int:
        """The real tokens, plus the extra rows that round their count up."""
        return self.index.numel() + self.n_extra

    def _with_extra_rows(self, rows: Tensor) -> Tensor:
        """(N, ...) -> (R, ...): zeros appended (a copy only when there are extra rows)."""
        if self.n_extra == 0:
            return rows
        return torch.cat([rows, rows.new_zeros(self.n_extra, *rows.shape[1:])])

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, ...) -> (R, ...): the real tokens, in row-major order, then any extra rows."""
        return self._with_extra_rows(x.flatten(0, 1).index_select(0, self.index))

    def unpack(self, x: Tensor) -> Tensor:
        """(R, ...) -> (B, T, ...) with zeros at the padding positions (attention masks them out
        anyway); the extra rows are dropped."""
        padded = x.new_zeros(self.batch_size * self.length, *x.shape[1:])  # (B * T, ...)
        real = x[: self.index.numel()]  # (N, ...)
        return padded.index_copy(0, self.index, real).view(
            self.batch_size, self.length, *x.shape[1:]
        )


def unpack(x: Tensor, packing: Packing | None) -> Tensor:
    """x in the padded layout (B, T, ...): unpacked when `packing` is given, else already so."""
    return x if packing is None else packing.unpack(x)


def pack(x: Tensor, packing: Packing | None) -> Tensor:
    """The inverse of `unpack`: (B, T, ...) -> (N, ...) when `packing` is given."""
    return x if packing is None else packing.pack(x)
