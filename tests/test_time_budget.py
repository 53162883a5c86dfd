"""A cosine run with a time budget (train.max_minutes, no train.max_steps) fixes its length from its
pace at the first validation, decays the learning rate to that step, and resumes with the same plan."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_train import final_parameters, run_train

from transformer.training import budget, loop
from transformer.training.budget import steps_for_time_budget
from transformer.training.schedule import learning_rate_factor

# 0.5 minutes of budget at 10 s of setup and 2 s per step (validation included) fit 10 steps.
BUDGET = ("train.schedule=cosine", "train.max_steps=0", "train.max_minutes=0.5")
REAL_TRAIN_STEP = loop.train_step
COMMON = (*BUDGET, "train.warmup_steps=2", "train.validate_every=4", "model.dropout=0.1")


class FakeClock:
    """The run's clock (`budget.now`), moved on by the test instead of by time: `setup` seconds
    pass between the first reading (start_run's start) and the second, then each optimizer step
    takes `seconds_per_step(step)`; validation and saving take no time."""

    def __init__(self, setup: float, seconds_per_step: Callable[[int], float]) -> None:
        self.time: float | None = None
        self.setup = setup
        self.seconds_per_step = seconds_per_step

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
        return REAL_TRAIN_STEP(run, batches)

    monkeypatch.setattr(loop, "train_step", timed_step)
    return clock


def test_steps_for_time_budget_counts_setup_once() -> None:
    # 100 steps took 130 s, 10 of them setup: 1.2 s a step, so 600 s after setup fit 500 steps.
    assert steps_for_time_budget(100, 130.0, 10.0, 610.0) == 500
    assert steps_for_time_budget(100, 130.0, 10.0, 50.0) == 100  # never fewer than already done


def test_cosine_holds_the_peak_until_its_length_is_known() -> None:
    assert learning_rate_factor(50, 10, "cosine", max_steps=0) == 1.0
    assert learning_rate_factor(99, 10, "cosine", max_steps=100) == 0.0


@pytest.mark.parametrize("warmup, measured_steps", [(2, 4), (6, 4), (8, 8)])
def test_time_budget_fixes_the_steps_and_decays_to_them(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    warmup: int,
    measured_steps: int,
) -> None:
    """The plan is made at the last validation before the warmup ends (every 4 steps here)."""
    pace(monkeypatch, setup=10.0, per_step=2.0)
    assert run_train(tmp_path, *COMMON, f"train.warmup_steps={warmup}") == 0
    out = capsys.readouterr().out
    assert f"Time budget: {measured_steps} steps took" in out and "0.5 min fit 10 steps" in out
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == 10 and saved["time_budget"]["planned_steps"] == 10
    assert saved["scheduler"]["_last_lr"][0] == 0.0  # the cosine ended with the budget
    minutes = [entry["minutes"] for entry in saved["train_state"]["history"]]
    assert minutes == pytest.approx([18 / 60, 26 / 60, 30 / 60])  # validations at steps 4, 8, 10


def test_a_resumed_run_keeps_its_plan_and_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pace(monkeypatch, setup=10.0, per_step=2.0)
    assert run_train(tmp_path / "straight", *COMMON) == 0

    pace(monkeypatch, setup=10.0, per_step=2.0)
    clock_step, calls = loop.train_step, []

    def step_then_interrupt(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        stats = clock_step(*args, **kwargs)
        if len(calls) == 6:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C after the plan was made at step 4
        return stats

    monkeypatch.setattr(loop, "train_step", step_then_interrupt)
    assert run_train(tmp_path / "split", *COMMON) == 130
    pace(monkeypatch, setup=0.0, per_step=3.0)  # a slower machine must not change the plan
    assert run_train(tmp_path / "split", *COMMON, flags=("--resume",)) == 0

    split = torch.load(tmp_path / "split" / "checkpoints" / "last.pt", weights_only=True)
    assert split["step"] == 10 and split["time_budget"]["planned_steps"] == 10
    straight = final_parameters(tmp_path / "straight")
    for name, tensor in final_parameters(tmp_path / "split").items():
        assert torch.equal(straight[name], tensor), name
