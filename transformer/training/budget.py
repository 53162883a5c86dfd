"""A run's clock and its time budget (`train.max_minutes`).

The clock counts the run's wall time across processes (a resumed run adds the time of the ones
before it). With a time budget, a cosine run with no `train.max_steps` cannot know its length in
advance: at every validation it measures its pace since the validation before and plans how many
steps still fit, so that the learning rate reaches the end of its decay when the time runs out,
even when the steps slow down or speed up on the way. The plan and the point its next measurement
starts from go into every checkpoint, so `--resume` follows the same plan.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm import tqdm

from transformer.config import TrainConfig
from transformer.training import distributed
from transformer.training.schedule import StepPlan


def now() -> float:
    """The run's clock in seconds (monotonic). One name for every reading, so that a test can
    replace the clock and make a run's pace whatever it needs."""
    return time.monotonic()


def steps_that_fit(
    step: int,
    elapsed_seconds: float,
    paced_from: tuple[int, float],
    validation_seconds: float,
    validate_every: int,
    budget_seconds: float,
) -> int:
    """The last step that `budget_seconds` reach at the pace of the steps since `paced_from`
    (step, run time then), for a run that has taken `step` steps in `elapsed_seconds`.

    The pace is the recent one (since the last validation), so a run that slows down or speeds up
    plans with the speed it has now. A validation costs `validation_seconds` (the one just made):
    one is kept in hand for the end of the run, and the others are spread over the steps between
    them. The setup before the first step is not in the window, so it is never extrapolated.
    At least one more step is planned, so that a run whose time is up still takes a last step at
    the end of its decay (overrunning the budget by that step)."""
    from_step, from_seconds = paced_from
    train_seconds = max(elapsed_seconds - from_seconds - validation_seconds, 1e-9)
    seconds_per_step = train_seconds / (step - from_step) + validation_seconds / validate_every
    seconds_left = budget_seconds - elapsed_seconds - validation_seconds
    return step + max(1, int(seconds_left / seconds_per_step))


@dataclass
class TimeBudget:
    """The wall time of a run, and the steps planned to fill `train.max_minutes`."""

    train: TrainConfig
    started_at: float = field(default_factory=lambda: now())  # when this process began the run
    seconds_before: float = 0.0  # the run's wall time in earlier processes (resumed runs)
    setup_seconds: float = 0.0  # wall time before the first step, every process's together
    plan: StepPlan = field(default_factory=StepPlan)  # last_step 0: not planned yet
    paced_from_step: int = 0  # the next plan measures the pace from this step...
    paced_from_seconds: float = 0.0  # ...when the run had taken this long

    def elapsed_seconds(self) -> float:
        """Wall time of the whole run so far, setup and validation included."""
        return self.seconds_before + now() - self.started_at

    def out_of_time(self) -> bool:
        """True once this process has run for `train.max_minutes` (data preparation included)."""
        minutes = self.train.max_minutes
        return minutes > 0 and now() > self.started_at + 60 * minutes

    def setup_done(self) -> None:
        """Note the wall time this process spent before its first step: the pace leaves it out."""
        setup = self.elapsed_seconds() - self.seconds_before
        self.setup_seconds += setup
        self.paced_from_seconds += setup

    def plans_steps(self) -> bool:
        """Only a cosine run with a time budget and no step count plans its own length."""
        train = self.train
        return train.schedule == "cosine" and train.max_minutes > 0 and not train.max_steps

    def replan(self, step: int, validation_seconds: float) -> bool:
        """Plan the run's last step again from its pace since the last plan (called after each
        validation, which took `validation_seconds`). The decay that is left is spread over the
        new number of steps from where it stands, so the learning rate never jumps
        (`StepPlan.replanned`). A run at its planned last step is done: nothing to plan. True when
        it planned."""
        if (
            not self.plans_steps()
            or step <= self.paced_from_step
            or 0 < self.plan.last_step <= step
        ):
            return False
        train = self.train
        elapsed = self.elapsed_seconds()
        window = (self.paced_from_step, self.paced_from_seconds)
        budget = 60 * train.max_minutes
        # Rank 0's clock decides for every rank: all must stop at the same step.
        last_step = distributed.from_main(
            lambda: steps_that_fit(
                step, elapsed, window, validation_seconds, train.validate_every, budget
            )
        )
        self.plan = self.plan.replanned(step, last_step, train.warmup_steps)
        self.paced_from_step, self.paced_from_seconds = step, elapsed
        minutes = (elapsed - window[1]) / 60
        tqdm.write(
            f"Time budget: steps {window[0]}-{step} took {minutes:.1f} min with validation; "
            f"{train.max_minutes:g} min fit {last_step} steps in all, and the learning rate "
            "decays to that step."
        )
        return True

    # --- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "elapsed_seconds": self.elapsed_seconds(),
            "setup_seconds": self.setup_seconds,
            "plan": asdict(self.plan),
            "paced_from_step": self.paced_from_step,
            "paced_from_seconds": self.paced_from_seconds,
        }

    @classmethod
    def resumed(
        cls, train: TrainConfig, started_at: float, saved: dict[str, Any], step: int
    ) -> TimeBudget:
        """The budget of a run resumed at `step` by the process that started at `started_at`: the
        wall time of the processes before it and its plan, as saved. Checkpoints from before
        re-planning hold `planned_steps` only: the plan then goes on from the saved step."""
        elapsed = float(saved["elapsed_seconds"])
        if "plan" in saved:
            plan = StepPlan(**saved["plan"])
        else:
            plan = StepPlan(last_step=int(saved["planned_steps"]))
        return cls(
            train,
            started_at,
            seconds_before=elapsed,
            setup_seconds=float(saved["setup_seconds"]),
            plan=plan,
            paced_from_step=int(saved.get("paced_from_step", step)),
            paced_from_seconds=float(saved.get("paced_from_seconds", elapsed)),
        )
