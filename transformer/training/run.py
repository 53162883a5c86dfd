"""Everything one training run holds, and how it is saved, restored, validated and checkpointed.

A `TrainingRun` is the set of objects that the loop in `loop.py` drives. Everything a resumed
run needs (model, optimiser, schedule, scaler, sampler position, random number generators, step,
best BLEU) goes into each checkpoint, so `--resume` continues the same run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from transformer.batching import Batch, TokenBatchSampler
from transformer.checkpoint import remove_old_checkpoints, save_checkpoint
from transformer.config import Config, config_to_dict
from transformer.data import EncodedSplit
from transformer.model import Transformer
from transformer.tokenizer import TokenizerPair
from transformer.training import distributed
from transformer.training.divergence import DivergenceGuard
from transformer.training.loss import LogitsFunction
from transformer.training.moving_average import WeightMovingAverage
from transformer.training.schedule import steps_for_time_budget
from transformer.training.validation import ValidationResult, validate


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


def keep_optimizer_flags(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> dict[str, Any]:
    """`saved` with this optimiser's implementation flags (fused, foreach): loading a state dict
    would otherwise bring back those of the run that wrote it, and the divergence guard needs the
    fused AdamW this code builds."""
    groups = []
    for ours, theirs in zip(optimizer.param_groups, saved["param_groups"], strict=True):
        flags = {key: ours[key] for key in ("fused", "foreach") if key in ours}
        groups.append({**theirs, **flags})
    return {**saved, "param_groups": groups}


@dataclass
class TrainState:
    """Counters that advance with training and go into every checkpoint."""

    step: int = 0
    epoch: int = 0
    best_bleu: float = -1.0
    validations_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per validation
    elapsed_seconds: float = 0.0  # wall time of the run at its last checkpoint, all processes
    setup_seconds: float = 0.0  # wall time before the first step (data, tokenizers, model)
    planned_steps: int = 0  # steps fixed from the clock for a time budget (0: none yet)


@dataclass
class TrainingRun:
    """The objects of one run, built by `start.start_run` and driven by `loop.train`."""

    config: Config
    run_dir: Path
    device: torch.device
    model: Transformer
    token_logits: LogitsFunction  # model.token_logits, compiled when train.compile is set
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sampler: TokenBatchSampler
    loader: Iterable[Batch]  # the training batches of one epoch per pass
    tokenizers: TokenizerPair
    splits: dict[str, EncodedSplit]
    texts: dict[str, Any]
    guard: DivergenceGuard  # skips non-finite steps, stops a diverged run
    state: TrainState = field(default_factory=TrainState)
    started_at: float = field(default_factory=time.monotonic)  # when this process began the run
    seconds_before: float = 0.0  # wall time of the run in earlier processes (resumed runs)

    def elapsed_seconds(self) -> float:
        """Wall time of the whole run so far, setup and validation included."""
        return self.seconds_before + time.monotonic() - self.started_at

    def total_steps(self) -> int:
        """`train.max_steps`, or the steps a time-budgeted run planned; 0 = no step limit."""
        return self.config.train.max_steps or self.state.planned_steps

    ddp: DistributedDataParallel | None = None  # under torchrun: what token_logits calls
    moving_average: WeightMovingAverage | None = None  # with train.ema_decay: what is validated

    def inference_model(self) -> Transformer:
        """The weights that are validated and saved as "model": the moving average when there is
        one, else the live weights."""
        return self.moving_average.model if self.moving_average else self.model

    # --- checkpoints ---------------------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        self.state.elapsed_seconds = self.elapsed_seconds()
        return {
            "config": config_to_dict(self.config),
            "tokenizers": self.tokenizers.to_json(),
            "model": self.inference_model().state_dict(),
            **({"training_weights": self.model.state_dict()} if self.moving_average else {}),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(),
            "rng_by_rank": distributed.gather_objects(rng_state()),  # each rank's dropout stream
            "step": self.state.step,
            "train_state": asdict(self.state),
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Put every object back where the checkpoint left it (the inverse of `payload`)."""
        self.model.load_state_dict(checkpoint.get("training_weights", checkpoint["model"]))
        if self.moving_average:  # a run that had none starts its average from the saved weights
            self.moving_average.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(
            keep_optimizer_flags(self.optimizer, checkpoint["optimizer"])
        )
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.sampler.load_state_dict(checkpoint["sampler"])
        # In place: the learning-rate schedule reads `planned_steps` from this very object.
        for key, value in checkpoint["train_state"].items():
            setattr(self.state, key, value)
        self.seconds_before = self.state.elapsed_seconds
        rng_by_rank = checkpoint.get("rng_by_rank", [checkpoint["rng"]])
        if len(rng_by_rank) == distributed.world_size():
            set_rng_state(rng_by_rank[distributed.rank()])
        else:  # another world size: a fresh stream per rank, still fixed by seed and step
            seed_everything(self.config.train.seed + self.state.step)
            distributed.seed_per_rank(self.config.train.seed + self.state.step)

    def save(self, *names: str) -> None:
        """Every rank calls this (the payload gathers their random states); rank 0 writes. A
        diverged run stops here instead of writing."""
        self.guard.check(self.state.step)
        payload = self.payload()
        if distributed.is_main():
            for name in names:
                save_checkpoint(payload, self.run_dir / "checkpoints" / name)
            remove_old_checkpoints(self.run_dir / "checkpoints", self.config.train.keep_checkpoints)

    # --- progress through the data -------------------------------------------------------------

    def reached_max_steps(self) -> bool:
        return 0 < self.total_steps() <= self.state.step

    def fit_schedule_to_time_budget(self) -> None:
        """A cosine run with `train.max_minutes` and no `train.max_steps` fixes its length once, from
        the pace measured so far (validation included), so that the learning rate reaches its end
        when the time does. It measures as long as the warmup allows: at the last validation before
        the warmup ends (or the first, if the warmup is shorter), since the decay needs the length
        from then on. The number goes into every checkpoint: a resumed run keeps it and never
        re-derives it from another clock."""
        train, state = self.config.train, self.state
        if state.planned_steps or train.max_steps or not train.max_minutes:
            return
        if train.schedule != "cosine" or state.step + train.validate_every <= train.warmup_steps:
            return
        budget = 60 * train.max_minutes
        elapsed = self.elapsed_seconds()
        # Rank 0's clock decides for every rank: all must stop at the same step.
        state.planned_steps = distributed.from_main(
            lambda: steps_for_time_budget(state.step, elapsed, state.setup_seconds, budget)
        )
        tqdm.write(
            f"Time budget: {state.step} steps took {elapsed / 60:.1f} min with setup and "
            f"validation, so {train.max_minutes:g} min fit {state.planned_steps} steps; the "
            "learning rate decays to that step."
        )

    def finished(self) -> bool:
        """True when a (resumed) run has nothing left to do under its current limits."""
        train, state = self.config.train, self.state
        return (
            self.reached_max_steps()
            or 0 < train.max_epochs <= state.epoch
            or 0 < train.patience <= state.validations_without_improvement
        )

    def end_epoch(self) -> bool:
        """Move the sampler to the next epoch; True when `train.max_epochs` are done."""
        self.state.epoch += 1
        self.sampler.set_epoch(self.state.epoch)
        return 0 < self.config.train.max_epochs <= self.state.epoch

    # --- validation ----------------------------------------------------------------------------

    def validate_and_save(self, writer: SummaryWriter | None) -> ValidationResult:
        """Validate, record the result, and write the step, last and (if better) best checkpoints."""
        state, config = self.state, self.config
        self.guard.check(state.step)  # before spending a validation on a diverged run
        result = validate(
            self.inference_model(),
            self.splits["validation"],
            self.texts["validation"].target,
            self.tokenizers,
            config,
            self.device,
            writer=writer,
            step=state.step,
        )
        self.fit_schedule_to_time_budget()
        improved = result.scores.bleu > state.best_bleu
        if improved:
            state.best_bleu = result.scores.bleu
            state.validations_without_improvement = 0
        else:
            state.validations_without_improvement += 1
        scores = {"bleu": result.scores.bleu, "loss": result.loss, "chrf": result.scores.chrf}
        minutes = self.elapsed_seconds() / 60  # since train.py started, setup included
        state.history.append({"step": state.step, "minutes": minutes, **scores})
        names = [f"step_{state.step:07d}.pt", "last.pt"] + (["best.pt"] if improved else [])
        self.save(*names)
        tqdm.write(
            f"step {state.step:>7}  valid loss {result.loss:.3f}  ppl {result.perplexity:.2f}  "
            f"{result.scores.summary()}{'  *best*' if improved else ''}"
        )
        return result

    def should_stop_early(self) -> bool:
        """True (and say so) after `train.patience` validations without a better BLEU."""
        patience = self.config.train.patience
        if patience > 0 and self.state.validations_without_improvement >= patience:
            tqdm.write(f"Early stopping: no better BLEU in {patience} validations.")
            return True
        return False
