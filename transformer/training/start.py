"""Setting a training run up: the run directory, the data, the model and its optimizer, and the
state of a resumed run. `start_run` returns a `TrainingRun` ready for the loop in `loop.py`."""

from __future__ import annotations

import fcntl
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from transformer.checkpoint import CheckpointError, load_checkpoint, step_checkpoints
from transformer.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    save_config,
)
from transformer.data.batching import TokenBatchSampler, make_loader
from transformer.data.loading import EncodedSplit
from transformer.data.prepare import (
    PREPARED_DIR,
    PreparedData,
    cache_root,
    prepare_data,
    shared_tokenizers,
)
from transformer.device import (
    PrecisionChoice,
    check_precision,
    keep_freed_cpu_memory,
    limit_kernel_caches,
    resolve_device,
)
from transformer.model import Transformer, build_transformer
from transformer.packing import row_multiple
from transformer.tokenization.tokenizer import PAD_ID, TokenizerPair
from transformer.training import distributed
from transformer.training.budget import TimeBudget
from transformer.training.divergence import DivergenceGuard
from transformer.training.init_from import initial_model_config, load_initial_checkpoint
from transformer.training.moving_average import WeightMovingAverage
from transformer.training.precision import choose_precision
from transformer.training.run import TrainingRun, TrainState
from transformer.training.run_checkpoint import restore, seed_everything
from transformer.training.validation import Directions

LOCK_FILE = "train.lock"  # held by the one train.py process that owns the run directory


class RunDirLock:
    """An exclusive lock on a run directory for the life of one training process, so two
    train.py started on the same directory never both train (fcntl.flock: the kernel drops it
    when the process dies, even by SIGKILL). Under torchrun only rank 0 takes it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self.file: IO[str] | None = None
        self.created: list[Path] = []  # directories this lock made, innermost first

    def __enter__(self) -> RunDirLock:
        if not distributed.is_main():
            return self
        self.created = [d for d in [self.path.parent, *self.path.parent.parents] if not d.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until __exit__)
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            owner = self.file.read().strip() or "another process"
            self.file.close()
            raise ConfigError(
                f"run directory {str(self.path.parent)!r} is in use by another train.py "
                f"({owner}); wait for it to finish, or set train.run_dir=runs/<new name>"
            ) from None
        self.file.truncate(0)
        self.file.write(f"pid {os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is None:
            return
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
        # A run that failed before writing anything (bad data, bad config) leaves no directory.
        if self.created and [p.name for p in self.path.parent.iterdir()] == [LOCK_FILE]:
            self.path.unlink()
            for directory in self.created:
                directory.rmdir()


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
        for stale in last.parent.glob(".*.tmp"):  # half-written by a process that was killed
            stale.unlink()  # (safe: we hold the run directory's lock, nobody else writes here)
        return run_dir, load_checkpoint(last)
    # The lock file stays (this process holds it), and so does prepared data: it is named by what
    # it was made from, so a new run over the same corpus reuses it (transformer prepare).
    keep = (LOCK_FILE, PREPARED_DIR)
    contents = [p for p in run_dir.iterdir() if p.name not in keep] if run_dir.is_dir() else []
    if contents and not overwrite:
        raise ConfigError(
            f"run directory {str(run_dir)!r} already holds a run: add --resume to continue it, "
            "--overwrite to delete it and start again, or set train.run_dir=runs/<new name>"
        )
    for path in contents:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, None


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
        if section == "data":  # where prepared data is kept does not change it
            ours.pop("cache_dir"), theirs.pop("cache_dir")
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
    """AdamW; weight decay (when set) only on matrices, not on biases or norms, as is usual for
    Transformers."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        (decay if parameter.dim() >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": config.train.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    train = config.train
    # fused: one kernel per step, and it can skip a non-finite step on the device (divergence.py)
    return torch.optim.AdamW(groups, lr=train.lr, betas=train.betas, eps=train.eps, fused=True)


def after_restart(config: Config, resume: bool, overwrite: bool) -> tuple[bool, bool]:
    """torchrun --max-restarts K: a restarted worker continues from `last.pt` by itself, so an
    elastic restart loses only the steps since the last checkpoint. Without a checkpoint yet, the
    failed attempt's files (tokenizer, config, logs) are cleared and the run starts again."""
    if distributed.restart_count() == 0:
        return resume, overwrite
    checkpoints = Path(config.train.run_dir) / "checkpoints"
    if (checkpoints / "last.pt").is_file():
        print(f"torchrun restart {distributed.restart_count()}: resuming from {checkpoints}")
        return True, False
    return resume, overwrite or not (checkpoints.is_dir() and step_checkpoints(checkpoints))


def warn_if_world_size_changed(checkpoint: dict[str, Any], config: Config) -> None:
    """Resuming with another number of processes is allowed (an elastic job may come back with
    fewer or more nodes): the epoch continues from the same place, but the batches of a step
    change, so the run is no longer the one it would have been."""
    saved = int(checkpoint["sampler"].get("world_size", 1))
    now = distributed.world_size()
    if saved != now and distributed.is_main():
        warnings.warn(
            f"--resume: the run was saved with {saved} processes and continues with {now}; it goes "
            "on from the same place in its epoch, but from here the data order differs from the "
            f"uninterrupted run and each optimizer step takes {now} x train.accumulate batches "
            f"(was {saved} x). To keep the batch size, set train.accumulate so that processes x "
            "accumulate stays the same.",
            stacklevel=2,
        )


def prepared_data(config: Config, checkpoint: dict[str, Any] | None) -> PreparedData:
    """The corpus prepared once (prepare.py) with its tokenizers (trained on a sample of the
    training split, or taken from the checkpoint being resumed or started from).

    Under torchrun, rank 0 trains the tokenizers (or finds them prepared) and sends them to every
    rank, so every node encodes with the same vocabulary, whether the nodes share a disk or each has
    its own (tokenizer training is not always reproducible run to run). Then the first process of
    each node prepares (on a shared disk, one of them; the others wait for its lock and reuse its
    directory) while the others wait, and they all read the same files."""
    tokenizers, shared = None, None
    root, max_positions = cache_root(config), config.model.max_positions
    source_eos = config.model.source_eos
    if checkpoint is not None:
        tokenizers = TokenizerPair.from_json(checkpoint["tokenizers"])
    elif distributed.is_distributed():
        shared = distributed.from_main(
            lambda: shared_tokenizers(config.data, max_positions, root, source_eos)
        )
    return distributed.first_on_each_node(
        lambda: prepare_data(config.data, max_positions, root, tokenizers, source_eos, shared)
    )


def make_sampler(prepared: PreparedData, config: Config) -> TokenBatchSampler:
    """Shuffled token batches of the training split; under torchrun each rank takes its share.
    Each epoch draws its corpora and directions as data.pair_temperature and their weights say
    (mixture.py; one corpus in one direction: every pair once)."""
    train = prepared.splits["train"]
    return TokenBatchSampler(
        train.src_lengths,
        train.tgt_lengths,
        config.data.max_tokens,
        shuffle=True,
        seed=config.train.seed,
        rank=distributed.rank(),
        world_size=distributed.world_size(),
        mixture=prepared.mixture(config.data.pair_temperature),
    )


def settle_precision(
    config: Config,
    model: Transformer,
    train: EncodedSplit,
    device: torch.device,
    checkpoint: dict[str, Any] | None,
) -> tuple[Config, PrecisionChoice]:
    """train.precision as this run will use it (auto: timed here; a resumed run keeps its own),
    said on the console and written into the config that is saved with the run."""
    precision = choose_precision(config, model, train, device, checkpoint)
    if config.train.precision == "auto":  # a resumed run keeps its precision, even here
        check_precision(precision.precision, device)
    print(f"Precision: {precision.precision} ({precision.reason}).")
    return replace(config, train=replace(config.train, precision=precision.precision)), precision


def training_states(
    model: Transformer, ddp: torch.nn.Module | None, device: torch.device, config: Config
) -> Callable[[Tensor, Tensor], Tensor]:
    """What a training step calls for the decoder states that its loss projects: the model's
    `token_states` (through DDP under torchrun), with packed rows rounded up where that spares
    kernel builds (bf16 on an AMX CPU: packing.py), compiled when `train.compile` asks."""
    token_states = partial(
        ddp if ddp is not None else model.token_states,
        row_multiple=row_multiple(device, config.train.precision),
    )
    return torch.compile(token_states) if config.train.compile else token_states


def start_run(config: Config, resume: bool = False, overwrite: bool = False) -> TrainingRun:
    """Everything before the first step: checks, data and tokenizers, model, optimizer, schedule,
    sampler, and (with `resume`) the saved state of all of them."""
    budget = TimeBudget(config.train)  # the run's clock starts now: setup counts
    resume, overwrite = after_restart(config, resume, overwrite)
    # Rank 0 checks the directory and reads the checkpoint; the others receive it (no shared
    # file system needed, and an error stops every rank with the same message).
    run_dir, checkpoint = distributed.from_main(lambda: prepare_run_dir(config, resume, overwrite))
    initial = None  # train.init_from: a new run from a checkpoint's weights (init_from.py)
    if config.train.init_from:
        initial = checkpoint or distributed.from_main(lambda: load_initial_checkpoint(config))
        config = initial_model_config(config, initial)
    if checkpoint is not None:
        check_resumable(config, checkpoint["config"])
    seed_everything(config.train.seed)
    if config.train.threads > 0:
        torch.set_num_threads(config.train.threads)
    device = distributed.local_device(resolve_device(config.train.device))
    keep_freed_cpu_memory(device)  # the same tensors every step: no page faults on reuse
    limit_kernel_caches(device)  # without AMX, each step's shapes are new: keep few kernels
    check_precision(config.train.precision, device)  # before any work: fp16 off CUDA is refused

    prepared = prepared_data(config, checkpoint or initial)
    tokenizers, splits = prepared.tokenizers, prepared.splits
    config = fit_model_to_tokenizers(config, tokenizers)
    model = build_transformer(config.model).to(device)
    if checkpoint is None and initial is not None:
        model.load_state_dict(initial["model"])
    config, precision = settle_precision(config, model, splits["train"], device, checkpoint)
    if distributed.is_main():
        tokenizers.save(run_dir / "tokenizer")
        save_config(config, run_dir / "config.yaml")

    distributed.seed_per_rank(config.train.seed)
    ddp = distributed.data_parallel(model, device)
    optimizer = make_optimizer(model, config)
    sampler = make_sampler(prepared, config)
    run = TrainingRun(
        config=config,
        run_dir=run_dir,
        device=device,
        model=model,
        token_states=training_states(model, ddp, device, config),
        ddp=ddp,
        moving_average=(
            WeightMovingAverage(model, config.train.ema_decay) if config.train.ema_decay else None
        ),
        optimizer=optimizer,
        scaler=torch.amp.GradScaler(device.type, enabled=config.train.precision == "fp16"),
        guard=DivergenceGuard(config.train.max_bad_steps, device),
        tokenizers=tokenizers,
        splits=splits,
        validation_references=prepared.texts["validation"].target,
        validation_directions=Directions(
            prepared.directions, prepared.sentence_directions["validation"]
        ),
        sampler=sampler,
        loader=make_loader(splits["train"], sampler),
        state=TrainState(),
        budget=budget,
        precision=precision,
    )
    if checkpoint is not None:
        restore(run, checkpoint)
        warn_if_world_size_changed(checkpoint, config)
        print(f"Resumed {run_dir} at step {run.state.step} (epoch {run.state.epoch + 1}).")
    else:
        sampler.set_epoch(0)
    run.budget.setup_done()
    return run
