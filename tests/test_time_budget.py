"""A cosine run with a time budget (train.max_minutes, no train.max_steps) plans its length again at
every validation from its recent pace, decays the learning rate to the planned step without a jump,
ends there within the budget even when its steps slow down, and resumes with the same plan."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_train import final_parameters, run_train

from transformer.config import TrainConfig
from transformer.training import budget, loop
from transformer.training.budget import TimeBudget, steps_that_fit
from transformer.training.schedule import StepPlan, learning_rate_factor

# 0.5 minutes of budget at 10 s of setup and 2 s per step fit 10 steps.
BUDGET = ("train.schedule=cosine", "train.max_steps=0", "train.max_minutes=0.5")
REAL_TRAIN_STEP = loop.train_step
# Validation decodes at most 2 tokens a sentence: the fake clock gives it no time anyway, and an
# untrained model would otherwise run every sentence to the length limit (most of the test time).
COMMON = (
    *BUDGET,
    "train.warmup_steps=2",
    "train.validate_every=4",
    "model.dropout=0.1",
    "decode.max_len_a=0",
    "decode.max_len_b=2",
)


class FakeClock:
    """The run's clock (`budget.now`), moved on by the test instead of by time: `setup` seconds
    pass between the first reading (start_run's start) and the second, then each optimizer step
    takes `seconds_per_step(step)`; validation and saving take no time."""

    def __init__(self, setup: float, seconds_per_step: Callable[[int], float]) -> None:
        self.time: float | None = None
        self.setup = setup
        self.seconds_per_step = seconds_per_step
        self.learning_rates: list[float] = []  # the rate each step used

    def read(self) -> float:
        if self.time is None:
            self.time = self.setup
            return 0.0
        return self.time


def pace(
    monkeypatch: pytest.MonkeyPatch, setup: float, per_step: float | Callable[[int], float]
) -> FakeClock:
    """Run on a FakeClock: `setup` seconds before the first step, then `per_step` seconds a step
    (a number, or a function of the step)."""
    seconds = per_step if callable(per_step) else (lambda step: per_step)
    clock = FakeClock(setup, seconds)
    monkeypatch.setattr(budget, "now", clock.read)

    def timed_step(run, batches):  # noqa: ANN001, ANN202
        clock.time += clock.seconds_per_step(run.state.step + 1)
        stats = REAL_TRAIN_STEP(run, batches)
        clock.learning_rates.append(stats.learning_rate)
        return stats

    monkeypatch.setattr(loop, "train_step", timed_step)
    return clock


def test_steps_that_fit_take_the_recent_pace_and_keep_a_validation_in_hand() -> None:
    # Steps 0-100 took 120 s after 10 s of setup: 1.2 s a step, so 480 s more fit 400 steps.
    assert steps_that_fit(100, 130.0, (0, 10.0), 0.0, 100, 610.0) == 500
    # Steps 100-200 took 130 s, 10 of them a validation: 1.2 s a step, 1.3 s with the
    # validations; 340 s are left after keeping 10 s for the last validation: 261 more steps.
    assert steps_that_fit(200, 260.0, (100, 130.0), 10.0, 100, 610.0) == 461
    assert steps_that_fit(100, 130.0, (0, 10.0), 0.0, 100, 50.0) == 101  # one step at the end


def test_a_new_plan_takes_the_decay_on_from_where_it_stands() -> None:
    first = StepPlan(last_step=100)
    shorter = first.replanned(40, 60, warmup_steps=10)
    rate = lambda plan, step: learning_rate_factor(step - 1, 10, "cosine", plan)  # noqa: E731
    assert rate(shorter, 40) == pytest.approx(rate(first, 40))  # no jump where the plan changes
    assert rate(first, 41) > rate(shorter, 41) > rate(shorter, 42)  # it then falls faster
    assert rate(shorter, 60) == 0.0 and rate(first, 60) > 0.1  # and ends at the new last step
    during_warmup = StepPlan().replanned(4, 60, warmup_steps=10)  # nothing decayed yet
    assert [rate(during_warmup, s) for s in (10, 60)] == [rate(StepPlan(60), s) for s in (10, 60)]


def test_cosine_holds_the_peak_until_its_length_is_known() -> None:
    assert learning_rate_factor(50, 10, "cosine", max_steps=0) == 1.0
    assert learning_rate_factor(99, 10, "cosine", max_steps=100) == 0.0


@pytest.mark.parametrize("warmup", [2, 8])
def test_a_steady_pace_plans_the_same_length_at_every_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, warmup: int
) -> None:
    pace(monkeypatch, setup=10.0, per_step=2.0)
    assert run_train(tmp_path, *COMMON, f"train.warmup_steps={warmup}") == 0
    out = capsys.readouterr().out
    assert "Time budget: steps 0-4 took 0.1 min" in out and "steps 4-8 took 0.1 min" in out
    assert out.count("0.5 min fit 10 steps in all") == 2  # at steps 4 and 8 (10 is the end)
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 10 and saved["time_budget"]["plan"]["last_step"] == 10
    assert saved["scheduler"]["_last_lr"][0] == 0.0  # the cosine ended with the budget
    minutes = [entry["minutes"] for entry in saved["train_state"]["history"]]
    assert minutes == pytest.approx([18 / 60, 26 / 60, 30 / 60])


# Steps 1-8 take 1 s, then 3 s: a plan made from the first pace alone (40 steps in 50.4 s) would
# run out of time at step 19 with the cosine not half-way down.
SLOWING = (*COMMON, "train.max_minutes=0.84")


def slowing_down(step: int) -> float:
    return 1.0 if step <= 8 else 3.0


def slowing_twice(step: int) -> float:
    return 1.0 if step <= 8 else 2.0 if step <= 12 else 4.0


@pytest.mark.parametrize(
    "seconds_per_step, minutes, last_step, end_seconds, steepest",
    [
        # Planned at step 12 from 3 s a step: 20.4 s left fit 6 steps more, ending at 48 s. The
        # plan shrank from 40 to 18 steps, yet no step lowers the rate by a quarter of its peak:
        # the rest of the decay is spread over the steps left, without a jump.
        (slowing_down, 0.84, 18, 48.0, 0.25),
        # Planned 21 at step 12; at step 16, 4 s a step and 2.4 s left: one last step at the
        # end of the decay, 1.6 s over the budget (that step takes the rest of the decay).
        (slowing_twice, 0.74, 17, 46.0, 1.0),
    ],
)
def test_a_run_that_slows_down_still_ends_its_schedule_within_the_budget(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seconds_per_step: Callable[[int], float],
    minutes: float,
    last_step: int,
    end_seconds: float,
    steepest: float,
) -> None:
    clock = pace(monkeypatch, setup=10.0, per_step=seconds_per_step)
    assert run_train(tmp_path, *COMMON, f"train.max_minutes={minutes}") == 0
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == last_step and saved["time_budget"]["plan"]["last_step"] == last_step
    assert saved["scheduler"]["_last_lr"][0] == 0.0  # the learning rate at its final value
    assert clock.time == end_seconds
    rates = clock.learning_rates
    peak = max(rates)
    assert all(later <= earlier for earlier, later in zip(rates[1:], rates[2:], strict=False))
    assert max(a - b for a, b in zip(rates, rates[1:], strict=False)) < steepest * peak


def test_a_resumed_run_follows_the_same_plans_and_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pace(monkeypatch, setup=10.0, per_step=slowing_down)
    assert run_train(tmp_path / "straight", *SLOWING) == 0

    pace(monkeypatch, setup=10.0, per_step=slowing_down)
    clock_step, calls = loop.train_step, []

    def step_then_interrupt(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        stats = clock_step(*args, **kwargs)
        if len(calls) == 14:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C two steps after the re-plan at step 12
        return stats

    monkeypatch.setattr(loop, "train_step", step_then_interrupt)
    assert run_train(tmp_path / "split", *SLOWING) == 130
    # The same pace after the resume (its setup left out): the same plans, step for step.
    pace(monkeypatch, setup=0.0, per_step=slowing_down)
    assert run_train(tmp_path / "split", *SLOWING, flags=("--resume",)) == 0

    split = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    assert split["step"] == straight["step"] == 18
    assert split["time_budget"]["plan"] == straight["time_budget"]["plan"]
    assert split["scheduler"]["_last_lr"] == straight["scheduler"]["_last_lr"]
    straight_weights = final_parameters(tmp_path / "straight")
    for name, tensor in final_parameters(tmp_path / "split").items():
        assert torch.equal(straight_weights[name], tensor), name


def test_a_checkpoint_from_before_replanning_resumes_with_its_plan() -> None:
    saved = {"elapsed_seconds": 120.0, "setup_seconds": 10.0, "planned_steps": 500}
    resumed = TimeBudget.resumed(TrainConfig(), started_at=0.0, saved=saved, step=200)
    assert resumed.plan == StepPlan(last_step=500)  # the decay from the warmup's end, as before
    assert (resumed.paced_from_step, resumed.paced_from_seconds) == (200, 120.0)
