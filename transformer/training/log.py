"""What a user sees while a run trains: the tqdm bar, TensorBoard scalars, and Ctrl-C handling.

Loss and speed are averaged over a window of `train.log_every` steps. The loss stays on the device
until it is logged (no host sync per step), and validation time is left out of the speed. Under
torchrun only rank 0 shows the bar and writes TensorBoard events; the loss and the tokens/s it
shows are those of all ranks together.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from tqdm import tqdm

from transformer.config import Config, config_to_dict
from transformer.training import distributed

# The hparams dashboard reads these scalars (their last value) as the run's results.
HPARAM_METRICS = ("valid/bleu", "valid/chrf", "valid/loss", "valid/perplexity")
# TensorBoard's Custom Scalars tab: the validation results on one page, the two losses on one chart.
SCALAR_LAYOUT = {
    "validation": {
        "BLEU and chrF": ["Multiline", ["valid/bleu", "valid/chrf"]],
        "loss: train and validation": ["Multiline", ["train/loss", "valid/loss"]],
        "perplexity": ["Multiline", ["valid/perplexity"]],
    }
}


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
    """The progress bar and the TensorBoard writer of a run, and the window that averages the
    training loss and speed between two logged steps."""

    def __init__(
        self,
        log_dir: str,
        total_steps: int,
        initial_step: int,
        log_every: int,
        device: torch.device,
    ) -> None:
        # A resumed run hides the events an earlier process wrote after the checkpoint it
        # resumes from (a crash between two checkpoints), so the curves do not overlap.
        purge_step = initial_step + 1 if initial_step else None
        self.writer = tensorboard_writer(log_dir, purge_step) if distributed.is_main() else None
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
        if self.writer is None:
            return
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/learning_rate", lr, step)
        self.writer.add_scalar("train/grad_norm", stats.grad_norm.item(), step)
        self.writer.add_scalar("train/tokens_per_second", speed, step)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Leave what runs inside (validation) out of the training speed."""
        start = time.perf_counter()
        yield
        self.window_start += time.perf_counter() - start

    def close(self, config: Config, validated: bool) -> None:
        """Close the bar; write the run's settings with its final scores for the hparams tab."""
        self.progress.close()
        if self.writer is None:
            return
        if validated:
            log_hparams(self.writer, _flat_hparams(config))
        self.writer.close()


@contextmanager
def closing_on_error(log: TrainingLog) -> Iterator[None]:
    """Flush and close the log when training stops with an error (e.g. divergence), so the
    curves that explain it reach TensorBoard."""
    try:
        yield
    except BaseException:
        log.progress.close()
        if log.writer is not None:
            log.writer.close()
        raise


def _flat_hparams(config: Config) -> dict[str, Any]:
    """TensorBoard's hparams plugin takes flat scalars and strings only."""
    flat = {}
    for section, values in config_to_dict(config).items():
        for key, value in values.items():
            if isinstance(value, (int, float, str, bool)):
                flat[f"{section}.{key}"] = value
    return flat


def tensorboard_writer(run_dir: str | Path, purge_step: int | None = None) -> SummaryWriter:
    """The run's SummaryWriter, with the Custom Scalars layout that gathers the validation charts
    (the Scalars and Time Series tabs list them after the train/* charts, in a group per prefix).
    `purge_step` hides events an earlier process wrote at or after that step."""
    writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
    writer.add_custom_scalars(SCALAR_LAYOUT)
    return writer


def log_hparams(writer: SummaryWriter, flat_hparams: dict[str, int | float | str | bool]) -> None:
    """The run's settings for TensorBoard's hparams dashboard, its metrics the valid/* scalars.

    Written into the run's own event file. SummaryWriter.add_hparams would instead open a second
    writer and log every metric again as a scalar: one-point charts at step 0 beside the real ones.
    """
    # hparams() uses the metric dict's keys only (as names of existing scalar tags).
    for summary in hparams(flat_hparams, dict.fromkeys(HPARAM_METRICS, 0.0)):
        writer.file_writer.add_summary(summary)
    writer.flush()
