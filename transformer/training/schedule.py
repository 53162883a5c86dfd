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
    """Multiplier of the peak learning rate after `step` optimiser steps (for LambdaLR).

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
    """`learning_rate_factor` with the run's settings, stepped once per optimiser step.
    `horizon()` is the cosine's length: `train.max_steps`, or the step budget that a time-budgeted
    run fixes at its first validation (a function, so LambdaLR does not pickle the run's state)."""

    def factor(step: int) -> float:
        return learning_rate_factor(
            step, train.warmup_steps, train.schedule, horizon(), train.min_lr_ratio
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_for_time_budget(
    step: int, elapsed_seconds: float, setup_seconds: float, budget_seconds: float
) -> int:
    """How many optimiser steps fit into `budget_seconds` at the pace of the first `step` steps.

    The pace includes the validations so far, so the budget keeps room for the later ones; the
    setup before the first step (data, tokenizers) is paid once, so it is not extrapolated."""
    seconds_per_step = max(elapsed_seconds - setup_seconds, 1e-9) / step
    return max(step, int((budget_seconds - setup_seconds) / seconds_per_step))
