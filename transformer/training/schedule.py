"""The learning-rate schedule: a pure function of the step, handed to `LambdaLR`.

Kept apart from the loop so that it can be read, plotted and tested on its own (the Annotated
Transformer's `rate`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from transformer.config import TrainConfig


@dataclass(frozen=True)
class StepPlan:
    """Where a run ends and how its cosine gets there.

    Normally the decay runs evenly from the end of the warmup to `last_step`. A time-budgeted run
    plans its length again at every validation; a new length then takes over from where the decay
    stands (`from_step`, `from_progress`) and spreads the rest evenly up to the new `last_step`,
    so the learning rate never jumps: it only falls faster or slower from there. The progress is
    linear in the step between plans and the cosine is taken of it, so the rate stays on one
    smooth curve however often the plan changes."""

    last_step: int = 0  # the step the run ends at and the cosine reaches its end; 0: not known
    from_step: int = 0  # the step from which the rest of the decay is spread (0: the warmup's end)
    from_progress: float = 0.0  # how far the decay had come at `from_step` (0 to 1)

    def replanned(self, step: int, last_step: int, warmup_steps: int) -> StepPlan:
        """The plan that ends at `last_step` instead, made after `step` steps: the decay goes on
        from where the rate of step `step` left it (set the next step's rate again afterwards:
        `refresh_learning_rate`)."""
        from_step = max(step, warmup_steps)
        progress = cosine_progress(from_step, warmup_steps, self) if self.last_step else 0.0
        return StepPlan(max(last_step, step), from_step, progress)


def cosine_progress(step: int, warmup_steps: int, plan: StepPlan) -> float:
    """How far (0 to 1) the cosine has decayed at optimizer step `step` (counted from 1)."""
    start = max(warmup_steps, plan.from_step)
    done = plan.from_progress
    return min(1.0, done + (1.0 - done) * (step - start) / max(1, plan.last_step - start))


def learning_rate_factor(
    step: int,
    warmup_steps: int,
    schedule: str,
    max_steps: int | StepPlan = 0,
    min_ratio: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate after `step` optimizer steps (for LambdaLR).

    Both schedules warm up linearly over `warmup_steps`. inverse_sqrt then decays as
    sqrt(warmup / step), the paper's schedule up to a constant; cosine decays to `min_ratio` at
    `max_steps` (a number, or the `StepPlan` of a run that re-plans its length); while a
    time-budgeted cosine run does not know its length yet, the rate stays at its peak after
    warmup."""
    plan = max_steps if isinstance(max_steps, StepPlan) else StepPlan(last_step=max_steps)
    step = step + 1  # LambdaLR asks for step 0 before the first update
    if step <= warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "inverse_sqrt":
        return math.sqrt(warmup_steps / step)
    if plan.last_step <= 0:
        return 1.0
    progress = cosine_progress(step, warmup_steps, plan)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainConfig, plan: Callable[[], StepPlan]
) -> torch.optim.lr_scheduler.LambdaLR:
    """`learning_rate_factor` with the run's settings, stepped once per optimizer step.
    `plan()` is the cosine's length, read from the run at every step (`TrainingRun.step_plan`:
    `train.max_steps`, or the plan of a time-budgeted run); a function, so LambdaLR does not
    pickle the run into its state dict."""

    def factor(step: int) -> float:
        return learning_rate_factor(
            step, train.warmup_steps, train.schedule, plan(), train.min_lr_ratio
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def refresh_learning_rate(scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Set the rate of the next step again, after the plan it depends on changed: LambdaLR
    computes it once, as the step before ends, and the plan changes after that step."""
    scheduler.last_epoch -= 1
    scheduler.step()  # the same step again: the factor and the optimizer's rate, from the new plan
