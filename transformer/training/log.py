"""What a user sees while a run trains: the tqdm bar, the training scalars sent to the run's
trackers (TensorBoard, W&B, MLflow: trackers.py), and Ctrl-C handling.

Loss and speed are averaged over a window of `train.log_every` steps. The loss stays on the device
until it is logged (no host sync per step), and validation time is left out of the speed. Under
torchrun only rank 0 shows the bar and has trackers; the loss and the tokens/s it shows are those
of all ranks together.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from transformer.training import distributed
from transformer.training.trackers import Trackers


@dataclass
class StepStats:
    """What one optimizer step reports to the log."""

    loss_sum: Tensor  # summed loss over the step's target tokens (on the device; no sync)
    tokens: int  # real target tokens in the step, on all ranks together
    grad_norm: Tensor
    learning_rate: float  # the rate this step used


class StopRequest:
    """Turns Ctrl-C into a flag the loop checks between steps, so the run can save and exit
    cleanly instead of dying mid-update. A second Ctrl-C exits at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._first_at = 0.0

    def __enter__(self) -> StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C cannot reach us anyway
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        # Under torchrun one Ctrl-C arrives twice: from the terminal and relayed by torchrun.
        if self.requested and time.monotonic() - self._first_at > 1.0:
            raise KeyboardInterrupt
        if self.requested:
            return
        self.requested, self._first_at = True, time.monotonic()
        tqdm.write("\nStopping after this step (Ctrl-C again to quit without saving)...")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class TrainingLog:
    """The progress bar and the trackers of a run, and the window that averages the training
    loss and speed between two logged steps."""

    def __init__(
        self,
        trackers: Trackers,
        total_steps: int,
        initial_step: int,
        log_every: int,
        device: torch.device,
    ) -> None:
        self.trackers = trackers
        self.progress = tqdm(
            total=total_steps or None,
            initial=initial_step,
            desc="train",
            dynamic_ncols=True,
            disable=not distributed.is_main(),
        )
        self.log_every = log_every
        self.device = device
        self._start_window()

    def _start_window(self) -> None:
        self.window_loss = torch.zeros((), device=self.device)
        self.window_tokens = 0
        self.window_start = time.perf_counter()

    def record_step(self, step: int, stats: StepStats) -> None:
        """Add one optimizer step to the window; every `log_every` steps show and log it."""
        self.progress.update(1)
        self.window_loss += stats.loss_sum
        self.window_tokens += stats.tokens
        if step % self.log_every != 0:
            return
        speed = self.window_tokens / (time.perf_counter() - self.window_start)
        loss = (distributed.sum_across_ranks(self.window_loss) / self.window_tokens).item()
        lr = stats.learning_rate
        self.progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{speed:.0f}")
        self._start_window()
        if not self.trackers:
            return
        scalars = {
            "train/loss": loss,
            "train/learning_rate": lr,
            "train/grad_norm": stats.grad_norm.item(),
            "train/tokens_per_second": speed,
        }
        self.trackers.scalars(scalars, step)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave what runs inside (validation) out of the training speed."""
        start = time.perf_counter()
        yield
        self.window_start += time.perf_counter() - start

    def close(self, failed: bool = False) -> None:
        """Close the bar, and finish every tracker's run (`failed`: stopped by an error)."""
        self.progress.close()
        self.trackers.close(failed)


@contextmanager
def closing_on_error(log: TrainingLog) -> Iterator[None]:
    """Flush and close the log when training stops with an error (e.g. divergence), so the
    curves that explain it reach the trackers, and their runs are marked failed."""
    try:
        yield
    except BaseException:
        log.close(failed=True)
        raise
