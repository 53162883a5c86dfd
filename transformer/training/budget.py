"""A run's clock and its time budget (`train.max_minutes`).

The clock counts the run's wall time across processes (a resumed run adds the time of the ones
before it). With a time budget, a cosine run with no `train.max_steps` cannot know its length in
advance: it measures its own pace and plans how many steps fit, so that the learning rate reaches
the end of its decay when the time runs out. The plan goes into every checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from transformer.config import TrainConfig
from transformer.training import distributed


def now() -> float:
    """The run's clock in seconds (monotonic). One name for every reading, so that a test can
    replace the clock and make a run's pace whatever it needs."""
    return time.monotonic()


def steps_for_time_budget(
    step: int, elapsed_seconds: float, setup_seconds: float, budget_seconds: float
) -> int:
    """How many optimizer steps fit into `budget_seconds` at the pace of the first `step` steps.

    The pace includes the validations so far, so the budget keeps room for the later ones; the
    setup before the first step (data, tokenizers) is paid once, so it is not extrapolated."""
    seconds_per_step = max(elapsed_seconds - setup_seconds, 1e-9) / step
    return max(step, int((budget_seconds - setup_seconds) / seconds_per_step))


@dataclass
class TimeBudget:
    """The wall time of a run, and the steps planned to fill `train.max_minutes`."""

    train: TrainConfig
    started_at: float = field(default_factory=lambda: now())  # when this process began the run
    seconds_before: float = 0.0  # the run's wall time in earlier processes (resumed runs)
    setup_seconds: float = 0.0  # wall time before the first step (data, tokenizers, model)
    planned_steps: int = 0  # steps that fit the budget, fixed once (0: not planned yet)

    def elapsed_seconds(self) -> float:
        """Wall time of the whole run so far, setup and validation included."""
        return self.seconds_before + now() - self.started_at

    def out_of_time(self) -> bool:
        """True once this process has run for `train.max_minutes` (data preparation included)."""
        minutes = self.train.max_minutes
        return minutes > 0 and now() > self.started_at + 60 * minutes

    def setup_done(self) -> None:
        """Note the wall time before the first step of a new run: the plan does not extrapolate it."""
        self.setup_seconds = self.elapsed_seconds()

    def plans_steps(self) -> bool:
        """Only a cosine run with a time budget and no step count plans its own length."""
        train = self.train
        return train.schedule == "cosine" and train.max_minutes > 0 and not train.max_steps

    def plan(self, step: int) -> None:
        """Fix the run's length once, from the pace measured so far (validation included), so
        that the learning rate reaches its end when the time does. It measures as long as the
        warmup allows: at the last validation before the warmup ends (or the first, if the warmup
        is shorter), since the decay needs the length from then on. The number goes into every
        checkpoint: a resumed run keeps it and never re-derives it from another clock."""
        train = self.train
        if self.planned_steps or not self.plans_steps():
            return
        if step + train.validate_every <= train.warmup_steps:
            return
        budget = 60 * train.max_minutes
        elapsed = self.elapsed_seconds()
        # Rank 0's clock decides for every rank: all must stop at the same step.
        self.planned_steps = distributed.from_main(
            lambda: steps_for_time_budget(step, elapsed, self.setup_seconds, budget)
        )
        tqdm.write(
            f"Time budget: {step} steps took {elapsed / 60:.1f} min with setup and "
            f"validation, so {train.max_minutes:g} min fit {self.planned_steps} steps; the "
            "learning rate decays to that step."
        )

    # --- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "elapsed_seconds": self.elapsed_seconds(),
            "setup_seconds": self.setup_seconds,
            "planned_steps": self.planned_steps,
        }

    @classmethod
    def resumed(cls, train: TrainConfig, started_at: float, saved: dict[str, Any]) -> TimeBudget:
        """The budget of a run resumed by the process that started at `started_at`: the wall time
        of the processes before it and its plan, as saved."""
        return cls(
            train,
            started_at,
            seconds_before=float(saved["elapsed_seconds"]),
            setup_seconds=float(saved["setup_seconds"]),
            planned_steps=int(saved["planned_steps"]),
        )
