"""The learning-rate schedule: a pure function of the step, handed to `LambdaLR`.

Kept apart from the loop so that it can be read, plotted and tested on its own (the Annotated
Transformer's `rate`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from transformer.config import TrainConfig


def learning_rate_factor(
    step: int, warmup_steps: int, schedule: str, max_steps: int = 0, min_ratio: float = 0.0
) -> float:
    """Multiplier of the peak learning rate after `step` optimizer steps (for LambdaLR).

    Both schedules warm up linearly over `warmup_steps`. inverse_sqrt then decays as
    sqrt(warmup / step), the paper's schedule up to a constant; cosine decays to `min_ratio` at
    `max_steps`; while a time-budgeted cosine run does not know its length yet (`max_steps` 0), the
    rate stays at its peak after warmup."""
    step = step + 1  # LambdaLR asks for step 0 before the first update
    if step <= warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "inverse_sqrt":
        return math.sqrt(warmup_steps / step)
    if max_steps <= 0:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainConfig, horizon: Callable[[], int]
) -> torch.optim.lr_scheduler.LambdaLR:
    """`learning_rate_factor` with the run's settings, stepped once per optimizer step.
    `horizon()` is the cosine's length, read from the run at every step (`TrainingRun.last_step`:
    `train.max_steps`, or the steps a time-budgeted run planned); a function, so LambdaLR does not
    pickle the run into its state dict."""

    def factor(step: int) -> float:
        return learning_rate_factor(
            step, train.warmup_steps, train.schedule, horizon(), train.min_lr_ratio
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
