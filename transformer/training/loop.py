"""The training loop: plain functions you can read top to bottom, counting optimiser steps.

    train(config)  ->  start_run (data, model, optimiser, resume)  ->  for each optimiser step:
        train_step (forward, loss, backward, clip, AdamW, schedule)  ->  log  ->  validate + save

The jobs around the loop live in their own files: `start.py` builds a run, `run.py`
holds it (checkpoints, validation), `log.py` shows it (progress bar, TensorBoard, Ctrl-C),
`schedule.py` is the learning rate, `device.py` the device and precision, and `divergence.py`
the guard that skips non-finite steps and stops a diverged run. Under torchrun, `distributed.py`
joins the processes; the loop is the same on every rank (see that file).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from transformer.batching import Batch
from transformer.config import Config
from transformer.device import autocast_context
from transformer.model import count_parameters
from transformer.training import distributed
from transformer.training.divergence import step_unless_bad
from transformer.training.log import StopRequest, TrainingLog, closing_on_error
from transformer.training.loss import batch_loss_sum, token_loss_sum
from transformer.training.run import TrainingRun, TrainState
from transformer.training.schedule import learning_rate_factor
from transformer.training.start import RunDirLock, start_run
from transformer.training.validation import ValidationResult

# Re-exported: tests and older callers reach them through `transformer.training.loop`.
__all__ = ["learning_rate_factor", "token_loss_sum"]


@dataclass
class TrainResult:
    state: TrainState
    run_dir: Path
    last_validation: ValidationResult | None
    interrupted: bool = False


# --- one optimiser step ------------------------------------------------------------------------------


@dataclass
class StepStats:
    loss_sum: Tensor  # summed loss over the step's target tokens (on the device; no sync)
    tokens: int  # real target tokens in the step, on all ranks together
    grad_norm: Tensor
    learning_rate: float  # the rate this step used


def train_step(run: TrainingRun, batches: list[Batch]) -> StepStats:
    """Forward and backward over `batches` (gradient accumulation), then one update.

    The loss is summed over tokens and divided by the step's token count, so every target token
    weighs the same however the tokens fall into batches. Under torchrun the count is over all
    ranks, and DDP averages the ranks' gradients (divides their sum by the world size), so each
    rank's loss is scaled by world_size / tokens: N ranks make the same step as one process
    accumulating their N batches."""
    train, device = run.config.train, run.device
    run.model.train()
    local_tokens = sum(batch.n_tgt_tokens for batch in batches)
    tokens = int(distributed.sum_across_ranks([local_tokens]).item())
    world_size = distributed.world_size()
    loss_total = torch.zeros((), device=device)
    for i, batch in enumerate(batches):
        batch = batch.to(device)
        with distributed.gradient_sync(run.ddp, sync=i == len(batches) - 1):
            with autocast_context(device, train.precision):
                loss = batch_loss_sum(
                    run.token_logits, batch.src, batch.tgt_in, batch.labels, train.label_smoothing
                )
            run.scaler.scale(loss * world_size / tokens).backward()
        loss_total += loss.detach()
    run.scaler.unscale_(run.optimizer)
    max_norm = train.clip_norm if train.clip_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), max_norm)
    learning_rate = run.scheduler.get_last_lr()[0]
    bad_step = run.guard.bad_step_flag(loss_total, grad_norm)  # on the device: no sync
    step_unless_bad(run.optimizer, run.scaler, bad_step)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    return StepStats(loss_total, tokens, grad_norm.detach(), learning_rate)


def optimiser_steps(loader: Iterable[Batch], accumulate: int) -> Iterator[list[Batch]]:
    """Group the batches of one epoch into lists of `accumulate`, one list per optimiser step."""
    group: list[Batch] = []
    for batch in loader:
        group.append(batch)
        if len(group) == accumulate:
            yield group
            group = []
    if group:
        yield group


# --- the loop ----------------------------------------------------------------------------------------


def train(config: Config, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train a translation model as `config` says; see the module docstring. Under torchrun this
    joins the process group first and leaves it at the end. One process at a time per run
    directory; a resumed run that is already finished returns at once."""
    with (
        distributed.process_group(config.train.device, config.train.dist_timeout_s),
        RunDirLock(Path(config.train.run_dir)),
    ):
        run = start_run(config, resume, overwrite)
        if run.finished():
            print(
                f"The run in {run.run_dir} is already finished at step {run.state.step}; nothing "
                "to train. Raise train.max_steps (or max_epochs, patience) to continue it."
            )
            return TrainResult(run.state, run.run_dir, last_validation=None)
        return run_training(run)


def run_training(run: TrainingRun) -> TrainResult:
    """The loop: optimiser steps until a limit, validating and saving on the way."""
    config, state, train_config = run.config, run.state, run.config.train
    print(
        f"Model: {count_parameters(run.model):,} parameters on {run.device}, "
        f"{train_config.precision}; {len(run.sampler)} batches per epoch of "
        f"<= {config.data.max_tokens} tokens."
    )
    # train.max_minutes counts from the start of this process's run, data preparation included.
    minutes = train_config.max_minutes
    deadline = run.started_at + 60 * minutes if minutes else math.inf
    log = TrainingLog(
        str(run.run_dir), train_config.max_steps, state.step, train_config.log_every, run.device
    )
    last_validation: ValidationResult | None = None
    finished = stopping = False
    with StopRequest() as stop, closing_on_error(log):
        while not finished:
            for batches in optimiser_steps(run.loader, train_config.accumulate):
                stats = train_step(run, batches)
                state.step += 1
                if run.moving_average:
                    run.moving_average.update(state.step)
                log.record_step(state.step, stats)
                if state.step % train_config.log_every == 0:
                    run.guard.check(state.step)  # stops a diverged run (DivergenceError)
                # Every rank must leave the loop at the same step, or the others wait forever.
                out_of_time, stopping = distributed.any_rank(
                    time.monotonic() > deadline, stop.requested
                )
                finished = run.reached_max_steps() or out_of_time
                if finished or state.step % train_config.validate_every == 0:
                    with log.paused():
                        last_validation = run.validate_and_save(log.writer)
                    finished = finished or run.should_stop_early()
                if finished or stopping:
                    break
            else:  # the epoch ran to its end
                finished = run.end_epoch()
                if finished and state.step % train_config.validate_every != 0:
                    last_validation = run.validate_and_save(log.writer)
            finished = finished or stopping
        if stopping:
            save_interrupted(run)
    log.close(config, validated=last_validation is not None)
    return TrainResult(state, run.run_dir, last_validation, interrupted=stopping)


def save_interrupted(run: TrainingRun) -> None:
    """After Ctrl-C: save `last.pt` once (every rank stops at the same step) and say how to
    continue."""
    run.save("last.pt")
    if not distributed.is_main():
        return
    launcher = "torchrun ... train.py" if distributed.world_size() > 1 else "python train.py"
    tqdm.write(
        f"Interrupted at step {run.state.step}; saved {run.run_dir / 'checkpoints' / 'last.pt'}.\n"
        f"Resume with: {launcher} --config {run.run_dir / 'config.yaml'} --resume",
        file=sys.stderr,
    )
