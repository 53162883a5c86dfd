"""The training loop: plain functions you can read top to bottom, counting optimizer steps.

    train(config)  ->  start_run (data, model, optimizer, resume)  ->  for each optimizer step:
        train_step (forward, loss, backward, clip, AdamW, schedule)  ->  log  ->  validate + save

The jobs around the loop live in their own files: `start.py` builds a run, `run.py` holds it,
`run_checkpoint.py` saves and restores it, `budget.py` is its clock and time budget, `log.py` shows
it (progress bar, Ctrl-C), `trackers.py` logs it (TensorBoard, W&B, MLflow), `validation.py` scores
it, `schedule.py` is the learning rate, `device.py` the device and precision, and `divergence.py` the guard that skips non-finite
steps and stops a diverged run. Under torchrun, `distributed.py`
joins the processes; the loop is the same on every rank (see that file).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from transformer.config import Config
from transformer.data.batching import Batch
from transformer.device import autocast_context
from transformer.model import count_parameters
from transformer.training import budget, distributed, run_checkpoint
from transformer.training.divergence import step_unless_bad
from transformer.training.log import StepStats, StopRequest, TrainingLog, closing_on_error
from transformer.training.loss import batch_loss_sum
from transformer.training.run import TrainingRun, TrainState
from transformer.training.schedule import refresh_learning_rate
from transformer.training.start import RunDirLock, start_run
from transformer.training.trackers import Trackers, check_installed, open_trackers
from transformer.training.validation import ValidationResult, validate


@dataclass
class TrainResult:
    state: TrainState
    run_dir: Path
    last_validation: ValidationResult | None
    interrupted: bool = False


# --- one optimizer step ------------------------------------------------------------------------------


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
                    run.token_states,
                    run.model.projection.linear,
                    batch.src,
                    batch.tgt_in,
                    batch.labels,
                    train.label_smoothing,
                )
            run.scaler.scale(loss * world_size / tokens).backward()
        loss_total += loss.detach()
    run.scaler.unscale_(run.optimizer)
    max_norm = train.clip_norm if train.clip_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), max_norm)
    learning_rate = run.scheduler.get_last_lr()[0]
    bad_step = run.guard.bad_step_flag(loss_total, grad_norm, local_tokens)  # on the device
    step_unless_bad(run.optimizer, run.scaler, bad_step)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    return StepStats(loss_total, tokens, grad_norm.detach(), learning_rate)


def optimizer_steps(run: TrainingRun) -> Iterator[list[Batch]]:
    """The batches of each optimizer step (`train.accumulate` of them), epoch after epoch until
    `train.max_epochs`. The step that ends an epoch moves the run to the next epoch before it is
    handed out, so the loop can tell at that step that the last epoch is done."""
    accumulate = run.config.train.accumulate
    while not run.epochs_done():
        group: list[Batch] = []
        for batch in run.loader:
            group.append(batch)
            ends_epoch = run.sampler.position == len(run.sampler)
            if ends_epoch:
                run.end_epoch()  # the sampler's next pass is the next epoch
            if len(group) == accumulate or ends_epoch:
                yield group
                group = []
            if ends_epoch:
                break  # a fresh pass over the loader starts the next epoch
        else:  # resumed at the very end of an epoch: nothing was left in it
            run.end_epoch()


# --- the loop ----------------------------------------------------------------------------------------


def train(config: Config, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train a translation model as `config` says; see the module docstring. Under torchrun this
    joins the process group first and leaves it at the end. One process at a time per run
    directory; a resumed run that is already finished returns at once."""
    check_installed(config.train.loggers)  # before any work: a missing extra is one clear line
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
    """The loop: optimizer steps until a limit, validating and saving on the way."""
    config, state, train_config = run.config, run.state, run.config.train
    print(
        f"Model: {count_parameters(run.model):,} parameters on {run.device}, "
        f"{train_config.precision}; {len(run.sampler)} batches per epoch of "
        f"<= {config.data.max_tokens} tokens."
    )
    trackers = open_trackers(
        config, run.run_dir, state.step, state.tracker_runs, run.validation_directions.names
    )
    state.tracker_runs |= trackers.run_ids()  # saved with every checkpoint, for --resume
    log = TrainingLog(
        trackers, train_config.max_steps, state.step, train_config.log_every, run.device
    )
    last_validation: ValidationResult | None = None
    stopping = False
    with StopRequest() as stop, closing_on_error(log):
        for batches in optimizer_steps(run):
            stats = train_step(run, batches)
            state.step += 1
            if run.moving_average:
                run.moving_average.update(state.step)
            log.record_step(state.step, stats)
            if state.step % train_config.log_every == 0:
                run.guard.check(state.step)  # stops a diverged run (DivergenceError)
            # Every rank must leave the loop at the same step, or the others wait forever.
            out_of_time, stopping = distributed.any_rank(run.budget.out_of_time(), stop.requested)
            finished = run.reached_last_step() or run.epochs_done() or out_of_time
            if finished or state.step % train_config.validate_every == 0:
                with log.paused():
                    last_validation = validate_and_save(run, log.trackers)
                finished = finished or run.should_stop_early()
            if finished or stopping:
                break
        if stopping:
            save_interrupted(run)
    log.close()
    return TrainResult(state, run.run_dir, last_validation, interrupted=stopping)


def validate_and_save(run: TrainingRun, trackers: Trackers) -> ValidationResult:
    """Validate, plan the time budget again, record the result, and write the step, last and (if
    better) best checkpoints."""
    state = run.state
    run.guard.check(state.step)  # before spending a validation on a diverged run
    started = budget.now()
    result = validate(
        run.inference_model(),
        run.splits["validation"],
        run.validation_references,
        run.tokenizers,
        run.config,
        run.device,
        trackers=trackers,
        step=state.step,
        directions=run.validation_directions,
    )
    if run.budget.replan(state.step, validation_seconds=budget.now() - started):
        refresh_learning_rate(run.scheduler)  # the next step's rate, from the new plan
    improved = run.record_validation(result)
    names = [f"step_{state.step:07d}.pt", "last.pt"] + (["best.pt"] if improved else [])
    run_checkpoint.save(run, *names)
    tqdm.write(
        f"step {state.step:>7}  valid loss {result.loss:.3f}  ppl {result.perplexity:.2f}  "
        f"{result.scores.summary()}{'  *best*' if improved else ''}"
    )
    return result


def save_interrupted(run: TrainingRun) -> None:
    """After Ctrl-C: save `last.pt` once (every rank stops at the same step) and say how to
    continue."""
    run_checkpoint.save(run, "last.pt")
    if not distributed.is_main():
        return
    launcher = "torchrun ... train.py" if distributed.world_size() > 1 else "python train.py"
    tqdm.write(
        f"Interrupted at step {run.state.step}; saved {run.run_dir / 'checkpoints' / 'last.pt'}.\n"
        f"Resume with: {launcher} --config {run.run_dir / 'config.yaml'} --resume",
        file=sys.stderr,
    )
