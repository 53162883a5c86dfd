"""Dropout whose masks come from random bits: the same layer as nn.Dropout, ~4x faster on a CPU.

On a CPU, `nn.Dropout` draws its mask with `bernoulli_`, one call of the random generator per
element, and that alone was 24% of a bf16 training step of the default recipe (23 dropout layers,
`python bench/train_speed.py`). Here one 64-bit random word gives eight 8-bit (or four 16-bit)
uniform integers, and an element is kept when its integer lands above the drop fraction of the
integer range: the drop probability is p rounded to 1/256 (or 1/65536), and the kept elements are
scaled by the exact inverse of the kept fraction, so the layer is still unbiased (E[dropout(x)] = x).

Eight bits per element whenever that moves p (and 1 - p) by at most 2% of itself (0.1 -> 26/256
= 0.1016, 0.2 -> 51/256 = 0.1992, 0.3 -> 77/256 = 0.3008: every p from 0.09 to 0.91), else
sixteen (0.01 -> 655/65536). The random generator is what costs: half the bits made a dropout
layer's forward and backward 1.3x faster (p 0.1, (2,176, 1,024) bf16: 3.9 -> 3.0 ms; `python
bench/experiments/dropout_speed.py --rows 2176`) and the recipe's training step 6% faster (issue 24,
docs/history.md).

The mask is applied as a multiplication by 0 or 1 in x's own dtype. A bool mask would be smaller,
but torch's CPU kernels that take one (`masked_fill`, `where`, the bool -> float conversion) are
not vectorised: on 2,000 x 1,024 bf16 elements the forward and backward took 6.2 ms with
`masked_fill` and 3.8 ms with the multiplication (`python bench/experiments/dropout_speed.py`, 2 cores). The
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

# The integer types whose values are the uniform draws, by random bits per element.
_UNIFORM_DTYPES = {8: torch.int8, 16: torch.int16}
# Eight bits per element when rounding p to 1/256 moves it (and 1 - p) by at most this fraction.
_EIGHT_BIT_TOLERANCE = 0.02

# The bit pattern of 1.0 in the 16-bit float formats: an int16 0/1 mask times this is, viewed as
# that format, a 0.0/1.0 mask, without a conversion pass.
_ONE_BITS = {torch.bfloat16: 0x3F80, torch.float16: 0x3C00}


def drop_levels(p: float) -> tuple[int, int]:
    """(bits, dropped_levels): how many random bits each element gets, and how many of their
    2**bits values mean "drop" (p rounded to 1/2**bits). Eight bits unless that moves p or the
    kept fraction 1 - p by more than 2% of itself, which only some p below 0.09 or above 0.91 do."""
    eight_bit = round(p * 2**8)
    if abs(eight_bit / 2**8 - p) <= _EIGHT_BIT_TOLERANCE * min(p, 1 - p):
        return 8, eight_bit
    return 16, round(p * 2**16)


def keep_mask(
    shape: torch.Size, dropped_levels: int, dtype: torch.dtype, device: torch.device, bits: int = 16
) -> Tensor:
    """A mask of `shape` in `dtype`: 0.0 (drop) with probability dropped_levels / 2**bits, else 1.0
    (that many of a `bits`-bit word's values mean "drop"; bits is 8 or 16)."""
    count, per_word = shape.numel(), 64 // bits
    words = torch.randint(  # the full int64 range: all 64 bits of each word are random
        -(2**63), 2**63 - 1, ((count + per_word - 1) // per_word,), dtype=torch.int64, device=device
    )
    uniform = words.view(_UNIFORM_DTYPES[bits])[:count].view(shape)  # uniform over the int range
    threshold = dropped_levels - 2 ** (bits - 1)  # drop when uniform < threshold
    # Clamped to [threshold - 1, threshold], every dropped value becomes threshold - 1 and every
    # kept one threshold; minus (threshold - 1), that is 0 or 1.
    keep = uniform.clamp(threshold - 1, threshold).sub_(threshold - 1)  # (*shape) int 0/1
    if dtype in _ONE_BITS:
        return keep.to(torch.int16).mul_(_ONE_BITS[dtype]).view(dtype)
    return keep.to(dtype)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """F.dropout(x, p, training), with the fast CPU mask above on a CPU (elsewhere F.dropout)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training)
    bits, dropped_levels = drop_levels(p)
    if dropped_levels == 2**bits:  # p rounds to 1: everything is dropped
        return torch.zeros_like(x)
    keep = keep_mask(x.shape, dropped_levels, x.dtype, x.device, bits)  # (*x.shape), 0.0 or 1.0
    # Multiplying saves the mask for the backward (grad * keep); the in-place rescale by
    # 1 / kept fraction saves nothing.
    return torch.mul(x, keep).mul_(2**bits / (2**bits - dropped_levels))


class Dropout(nn.Dropout):
    """nn.Dropout (same `p`, same state dict, same eval behaviour) with the fast CPU mask above."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            return F.dropout(x, self.p, self.training, self.inplace)
        return dropout(x, self.p, self.training)
