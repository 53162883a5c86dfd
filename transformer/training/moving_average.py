"""An exponential moving average (EMA) of the model's weights: the weights validation and inference use.

The weights after any one step carry that step's noise; an average over the last few hundred steps
sits nearer the middle of the valley the optimizer is bouncing around in, and usually translates
better, most of all while the learning rate is still high. Checkpoint averaging
(`transformer average`) does the same from a handful of saved points; the
moving average does it at every step, during training, so validation, `best.pt` and early stopping
all see the averaged weights.

With `train.ema_decay` set, every checkpoint's "model" holds the averaged weights (so translate.py,
averaging and export need nothing new), and "training_weights" holds the weights the optimizer is
moving, which only a resumed run reads.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

# The first updates use a smaller decay, (1 + n) / (10 + n) after n updates, so that the average
# does not stay anchored to the random initial weights for thousands of steps.
WARMUP_OFFSET = 10


def decay_at(step: int, decay: float) -> float:
    """The decay of the update after optimizer step `step` (counted from 1)."""
    return min(decay, (1 + step) / (WARMUP_OFFSET + step))


class WeightMovingAverage:
    """A copy of `model` whose floating-point parameters follow the live ones as
    `average = decay * average + (1 - decay) * live` after every optimizer step.

    The update is one fused `torch._foreach_lerp_` over all parameters (no Python loop per
    tensor), and the decay is a function of the step, which every checkpoint already records, so a
    resumed run continues the same average."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        # Same module tree, so parameters() pairs them up in the same order (tied weights once).
        self._averaged = list(self.model.parameters())
        self._live = list(model.parameters())

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the live weights, after optimizer step `step`."""
        torch._foreach_lerp_(self._averaged, self._live, 1.0 - decay_at(step, self.decay))
