"""Dropout whose masks come from random bits: the same layer as nn.Dropout, ~3x faster on a CPU.

On a CPU, `nn.Dropout` draws its mask with `bernoulli_`, one call of the random generator per
element, and that alone was 24% of a bf16 training step of the default recipe (23 dropout layers,
`python bench/train_speed.py`). Here one 64-bit random word gives four 16-bit uniform integers,
and an element is kept when its integer lands above the drop fraction of the 16-bit range: the drop
probability is p rounded to 1/65536, and the kept elements are scaled by the exact inverse of the
kept fraction, so the layer is still unbiased (E[dropout(x)] = x).

The mask is applied as a multiplication by 0 or 1 in x's own dtype. A bool mask would be smaller,
but torch's CPU kernels that take one (`masked_fill`, `where`, the bool -> float conversion) are
not vectorised: on 2,000 x 1,024 bf16 elements the forward and backward took 6.2 ms with
`masked_fill` and 3.8 ms with the multiplication (`python bench/dropout_speed.py`, 2 cores). The
0/1 mask is built from the random integers with integer arithmetic only (clamp to the two values
around the threshold, subtract), which is vectorised.

The masks come from torch's default generator, so `torch.manual_seed` fixes them and a resumed run
that restores the RNG state draws the same masks. On CUDA (and other devices) `F.dropout` already
runs as one fused kernel, so it is used unchanged there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_WORD_BITS = 16  # random bits per element: the drop probability's resolution is 2**-16
_LEVELS = 2**_WORD_BITS


# The bit pattern of 1.0 in the 16-bit float formats: an int16 0/1 mask times this is, viewed as
# that format, a 0.0/1.0 mask, without a conversion pass.
_ONE_BITS = {torch.bfloat16: 0x3F80, torch.float16: 0x3C00}


def keep_mask(
    shape: torch.Size, dropped_levels: int, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """A mask of `shape` in `dtype`: 0.0 (drop) with probability dropped_levels / 65536, else 1.0
    (that many of a 16-bit word's 65536 values mean "drop")."""
    count = shape.numel()
    words = torch.randint(  # the full int64 range: all 64 bits of each word are random
        -(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64, device=device
    )
    uniform = words.view(torch.int16)[:count].view(shape)  # uniform over [-32768, 32767]
    threshold = dropped_levels - _LEVELS // 2  # drop when uniform < threshold
    # Clamped to [threshold - 1, threshold], every dropped value becomes threshold - 1 and every
    # kept one threshold; minus (threshold - 1), that is 0 or 1.
    keep = uniform.clamp(threshold - 1, threshold).sub_(threshold - 1)  # (*shape) int16 0/1
    if dtype in _ONE_BITS:
        return keep.mul_(_ONE_BITS[dtype]).view(dtype)
    return keep.to(dtype)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """F.dropout(x, p, training), with the fast CPU mask above on a CPU (elsewhere F.dropout)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training)
    dropped_levels = round(p * _LEVELS)  # p rounded to 1/65536
    if dropped_levels == _LEVELS:  # p rounds to 1: everything is dropped
        return torch.zeros_like(x)
    keep = keep_mask(x.shape, dropped_levels, x.dtype, x.device)  # (*x.shape), 0.0 or 1.0
    # Multiplying saves the mask for the backward (grad * keep); the in-place rescale by
    # 1 / kept fraction saves nothing.
    return torch.mul(x, keep).mul_(_LEVELS / (_LEVELS - dropped_levels))


class Dropout(nn.Dropout):
    """nn.Dropout (same `p`, same state dict, same eval behaviour) with the fast CPU mask above."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            return F.dropout(x, self.p, self.training, self.inplace)
        return dropout(x, self.p, self.training)
