"""The training loop: plain functions you can read top to bottom, counting optimiser steps.

    train(config)  ->  data  ->  model  ->  steps (loss, clip, AdamW, schedule)  ->  validation
                                                  ->  TensorBoard + checkpoints  ->  ...

Everything a resumed run needs (model, optimiser, schedule, scaler, sampler position, random number
generators, step, best BLEU) goes into each checkpoint, so `--resume` continues the same run.
"""

from __future__ import annotations

import math
import random
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from transformer.batching import Batch, TokenBatchSampler, make_loader
from transformer.checkpoint import (
    CheckpointError,
    load_checkpoint,
    remove_old_checkpoints,
    save_checkpoint,
)
from transformer.config import Config, ConfigError, config_from_dict, config_to_dict, save_config
from transformer.data import EncodedSplit, prepare_data
from transformer.loss import LogitsFunction, batch_loss_sum
from transformer.model import Transformer, build_transformer, count_parameters
from transformer.tokenizer import PAD_ID, TokenizerPair
from transformer.validation import ValidationResult, log_hparams, tensorboard_writer, validate

# --- small pure pieces -------------------------------------------------------------------------------


def learning_rate_factor(
    step: int, warmup_steps: int, schedule: str, max_steps: int = 0, min_ratio: float = 0.0
) -> float:
    """Multiplier of the peak learning rate after `step` optimiser steps (for LambdaLR).

    Both schedules warm up linearly over `warmup_steps`. inverse_sqrt then decays as
    sqrt(warmup / step), the paper's schedule up to a constant; cosine decays to `min_ratio` at
    `max_steps`."""
    step = step + 1  # LambdaLR asks for step 0 before the first update
    if step <= warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "inverse_sqrt":
        return math.sqrt(warmup_steps / step)
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; anything else is checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device {name!r} is not a device; use auto, cpu, cuda or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device asks for cuda but no CUDA GPU is visible; use train.device=cpu"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device asks for mps but it is not available; use train.device=cpu")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls in hardware (AVX512-BF16 or AMX). Without them,
    PyTorch emulates bf16 and autocast makes training many times slower than fp32 (measured on
    an AVX2-only AMD EPYC: 63 vs 1,997 target tokens/s at d_model 256)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: cannot tell, so do not warn
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_context(device: torch.device, precision: str) -> Any:
    """bf16/fp16 autocast for the forward pass, or nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# --- the state of a run ------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Counters that advance with training and go into every checkpoint."""

    step: int = 0
    epoch: int = 0
    best_bleu: float = -1.0
    validations_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per validation


@dataclass
class TrainResult:
    state: TrainState
    run_dir: Path
    last_validation: ValidationResult | None
    interrupted: bool = False


class StopRequest:
    """Turns Ctrl-C into a flag the loop checks between steps, so the run can save and exit
    cleanly instead of dying mid-update. A second Ctrl-C exits at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C cannot reach us anyway
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("\nStopping after this step (Ctrl-C again to quit without saving)...")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# --- setting a run up ------------------------------------------------------------------------------


def prepare_run_dir(config: Config, resume: bool, overwrite: bool) -> tuple[Path, dict | None]:
    """Check the run directory: never overwrite a run by accident, resume only what exists.
    Returns the directory and the checkpoint to resume from (or None)."""
    run_dir = Path(config.train.run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            raise CheckpointError(
                f"--resume: there is no {last} to resume from; start the run without --resume"
            )
        return run_dir, load_checkpoint(last)
    holds_a_run = run_dir.is_dir() and any(run_dir.iterdir())
    if holds_a_run and not overwrite:
        raise ConfigError(
            f"run directory {str(run_dir)!r} already holds a run: add --resume to continue it, "
            "--overwrite to delete it and start again, or set train.run_dir=runs/<new name>"
        )
    if holds_a_run:
        shutil.rmtree(run_dir)
    return run_dir, None  # train() creates the directory once data and config have been checked


def check_resumable(config: Config, saved_config: dict[str, Any]) -> None:
    """A resumed run may change training settings (more steps, another device) but not the model
    or the data, which would make it a different run."""
    saved = config_from_dict(saved_config)
    for section in ("model", "data"):
        ours = config_to_dict(getattr(config, section))
        theirs = config_to_dict(getattr(saved, section))
        if section == "model":  # filled in from the tokenizers, not by the user
            for key in ("src_vocab_size", "tgt_vocab_size", "pad_id"):
                ours.pop(key), theirs.pop(key)
        changed = sorted(key for key in ours if ours[key] != theirs[key])
        if changed:
            names = ", ".join(f"{section}.{key}" for key in changed)
            raise ConfigError(
                f"--resume with a different {names} than the saved run; resume with the same "
                "settings, or start a new run in another train.run_dir"
            )


def fit_model_to_tokenizers(config: Config, tokenizers: TokenizerPair) -> Config:
    """The vocabulary sizes and the PAD id come from the tokenizers, never from the user."""
    model = replace(
        config.model,
        src_vocab_size=tokenizers.src_vocab_size,
        tgt_vocab_size=tokenizers.tgt_vocab_size,
        pad_id=PAD_ID,
    )
    config = replace(config, model=model)
    config.validate()
    return config


def make_optimizer(model: Transformer, config: Config) -> torch.optim.AdamW:
    """AdamW; weight decay (when set) only on matrices, not on biases, norms or embeddings'
    PAD rows' neighbours, as is usual for Transformers."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    train = config.train
    return torch.optim.AdamW(groups, lr=train.lr, betas=train.betas, eps=train.eps)


# --- one optimiser step ------------------------------------------------------------------------------


@dataclass
class StepStats:
    loss_sum: Tensor  # summed loss over the step's target tokens (on the device; no sync)
    tokens: int  # real target tokens in the step
    grad_norm: Tensor


def train_step(
    token_logits: LogitsFunction,
    batches: list[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    config: Config,
    device: torch.device,
) -> StepStats:
    """Forward and backward over `batches` (gradient accumulation), then one update."""
    tokens = sum(batch.n_tgt_tokens for batch in batches)
    loss_total = torch.zeros((), device=device)
    for batch in batches:
        batch = batch.to(device)
        with autocast_context(device, config.train.precision):
            loss = batch_loss_sum(
                token_logits, batch.src, batch.tgt_in, batch.labels, config.train.label_smoothing
            )
        scaler.scale(loss / tokens).backward()
        loss_total += loss.detach()
    scaler.unscale_(optimizer)
    max_norm = config.train.clip_norm if config.train.clip_norm > 0 else math.inf
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return StepStats(loss_total, tokens, grad_norm.detach())


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
    """Train a translation model as `config` says; see the module docstring."""
    run_dir, checkpoint = prepare_run_dir(config, resume, overwrite)
    if checkpoint is not None:
        check_resumable(config, checkpoint["config"])
    seed_everything(config.train.seed)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    device = resolve_device(config.train.device)
    if config.train.precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
    if config.train.precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "train.precision=bf16 on a CPU without native bf16 (AVX512-BF16/AMX) is emulated and "
            "much slower than fp32; use train.precision=fp32 on this machine",
            stacklevel=2,
        )

    # Data: tokenizers trained on the training split only, or taken from the checkpoint.
    saved_tokenizers = TokenizerPair.from_json(checkpoint["tokenizers"]) if checkpoint else None
    tokenizers, splits, texts = prepare_data(
        config.data, config.model.max_positions, tokenizers=saved_tokenizers
    )
    config = fit_model_to_tokenizers(config, tokenizers)
    # Only now, so that a run that fails on its data or config leaves no empty directory behind.
    run_dir.mkdir(parents=True, exist_ok=True)
    tokenizers.save(run_dir / "tokenizer")
    save_config(config, run_dir / "config.yaml")

    model = build_transformer(config.model).to(device)
    optimizer = make_optimizer(model, config)
    schedule = partial(
        learning_rate_factor,
        warmup_steps=config.train.warmup_steps,
        schedule=config.train.schedule,
        max_steps=config.train.max_steps,
        min_ratio=config.train.min_lr_ratio,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=config.train.precision == "fp16")
    sampler = TokenBatchSampler(
        splits["train"].src_lengths,
        splits["train"].tgt_lengths,
        config.data.max_tokens,
        shuffle=True,
        seed=config.train.seed,
    )
    state = TrainState()
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        sampler.load_state_dict(checkpoint["sampler"])
        state = TrainState(**checkpoint["train_state"])
        set_rng_state(checkpoint["rng"])
        print(f"Resumed {run_dir} at step {state.step} (epoch {state.epoch + 1}).")
    else:
        sampler.set_epoch(0)
    train_loader = make_loader(splits["train"], sampler)
    token_logits = torch.compile(model.token_logits) if config.train.compile else model.token_logits

    n_params = count_parameters(model)
    print(
        f"Model: {n_params:,} parameters on {device}, {config.train.precision}; "
        f"{len(sampler)} batches per epoch of <= {config.data.max_tokens} tokens."
    )
    writer = tensorboard_writer(run_dir)
    run = _Run(config, run_dir, model, optimizer, scheduler, scaler, sampler, tokenizers, state)
    last_validation: ValidationResult | None = None
    deadline = (
        time.monotonic() + 60 * config.train.max_minutes if config.train.max_minutes else math.inf
    )
    with (
        StopRequest() as stop,
        tqdm(
            total=config.train.max_steps or None,
            initial=state.step,
            desc="train",
            dynamic_ncols=True,
        ) as progress,
    ):
        # Loss and speed are averaged over a window of log_every steps. The loss stays on the
        # device until logged (no host sync per step); validation time is left out of speed.
        window_loss, window_tokens = torch.zeros((), device=device), 0
        window_start = time.perf_counter()
        finished = False
        while not finished:
            for step_batches in optimiser_steps(train_loader, config.train.accumulate):
                model.train()
                stats = train_step(
                    token_logits, step_batches, optimizer, scheduler, scaler, config, device
                )
                state.step += 1
                progress.update(1)
                window_loss += stats.loss_sum
                window_tokens += stats.tokens
                if state.step % config.train.log_every == 0:
                    speed = window_tokens / (time.perf_counter() - window_start)
                    loss = (window_loss / window_tokens).item()
                    lr = scheduler.get_last_lr()[0]
                    progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{speed:.0f}")
                    writer.add_scalar("train/loss", loss, state.step)
                    writer.add_scalar("train/learning_rate", lr, state.step)
                    writer.add_scalar("train/grad_norm", stats.grad_norm.item(), state.step)
                    writer.add_scalar("train/tokens_per_second", speed, state.step)
                    window_loss, window_tokens = torch.zeros((), device=device), 0
                    window_start = time.perf_counter()
                reached_max = (
                    0 < config.train.max_steps <= state.step or time.monotonic() > deadline
                )
                if state.step % config.train.validate_every == 0 or reached_max:
                    validation_start = time.perf_counter()
                    last_validation = run.validate_and_save(splits, texts, writer, device)
                    window_start += time.perf_counter() - validation_start
                    if run.should_stop_early():
                        tqdm.write(
                            f"Early stopping: no better BLEU in {config.train.patience} validations."
                        )
                        finished = True
                if reached_max or stop.requested or finished:
                    finished = True
                    break
            else:  # the epoch ran to its end
                state.epoch += 1
                sampler.set_epoch(state.epoch)
                if 0 < config.train.max_epochs <= state.epoch:
                    finished = True
                    if state.step % config.train.validate_every != 0:
                        last_validation = run.validate_and_save(splits, texts, writer, device)
        if stop.requested:
            run.save("last.pt")
            tqdm.write(
                f"Interrupted at step {state.step}; saved {run_dir / 'checkpoints' / 'last.pt'}.\n"
                f"Resume with: python train.py --config {run_dir / 'config.yaml'} --resume",
                file=sys.stderr,
            )
    if last_validation is not None:
        log_hparams(writer, _flat_hparams(config))
    writer.close()
    return TrainResult(state, run_dir, last_validation, interrupted=stop.requested)


def _flat_hparams(config: Config) -> dict[str, Any]:
    """TensorBoard's hparams plugin takes flat scalars and strings only."""
    flat = {}
    for section, values in config_to_dict(config).items():
        for key, value in values.items():
            if isinstance(value, (int, float, str, bool)):
                flat[f"{section}.{key}"] = value
    return flat


@dataclass
class _Run:
    """The objects of one run that validation and checkpointing need together."""

    config: Config
    run_dir: Path
    model: Transformer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sampler: TokenBatchSampler
    tokenizers: TokenizerPair
    state: TrainState

    def payload(self) -> dict[str, Any]:
        state = self.state
        return {
            "config": config_to_dict(self.config),
            "tokenizers": self.tokenizers.to_json(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(),
            "step": state.step,
            "train_state": {
                "step": state.step,
                "epoch": state.epoch,
                "best_bleu": state.best_bleu,
                "validations_without_improvement": state.validations_without_improvement,
                "history": state.history,
            },
        }

    def save(self, *names: str) -> None:
        payload = self.payload()
        for name in names:
            save_checkpoint(payload, self.run_dir / "checkpoints" / name)

    def validate_and_save(
        self,
        splits: dict[str, EncodedSplit],
        texts: dict[str, Any],
        writer: SummaryWriter,
        device: torch.device,
    ) -> ValidationResult:
        state, config = self.state, self.config
        result = validate(
            self.model,
            splits["validation"],
            texts["validation"].target,
            self.tokenizers,
            config,
            device,
            writer=writer,
            step=state.step,
        )
        improved = result.scores.bleu > state.best_bleu
        if improved:
            state.best_bleu = result.scores.bleu
            state.validations_without_improvement = 0
        else:
            state.validations_without_improvement += 1
        state.history.append(
            {
                "step": state.step,
                "bleu": result.scores.bleu,
                "loss": result.loss,
                "chrf": result.scores.chrf,
            }
        )
        names = [f"step_{state.step:07d}.pt", "last.pt"] + (["best.pt"] if improved else [])
        self.save(*names)
        remove_old_checkpoints(self.run_dir / "checkpoints", config.train.keep_checkpoints)
        tqdm.write(
            f"step {state.step:>7}  valid loss {result.loss:.3f}  ppl {result.perplexity:.2f}  "
            f"{result.scores.summary()}{'  *best*' if improved else ''}"
        )
        return result

    def should_stop_early(self) -> bool:
        patience = self.config.train.patience
        return patience > 0 and self.state.validations_without_improvement >= patience
