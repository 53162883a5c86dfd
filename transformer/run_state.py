"""Everything one training run holds, and how it is saved, restored, validated and checkpointed.

A `TrainingRun` is the set of objects that the loop in `training.py` drives. Everything a resumed
run needs (model, optimiser, schedule, scaler, sampler position, random number generators, step,
best BLEU) goes into each checkpoint, so `--resume` continues the same run.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from transformer import distributed
from transformer.batching import Batch, TokenBatchSampler
from transformer.checkpoint import remove_old_checkpoints, save_checkpoint
from transformer.config import Config, config_to_dict
from transformer.data import EncodedSplit
from transformer.loss import LogitsFunction
from transformer.model import Transformer
from transformer.tokenizer import TokenizerPair
from transformer.validation import ValidationResult, validate


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


@dataclass
class TrainState:
    """Counters that advance with training and go into every checkpoint."""

    step: int = 0
    epoch: int = 0
    best_bleu: float = -1.0
    validations_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per validation


@dataclass
class TrainingRun:
    """The objects of one run, built by `run_setup.start_run` and driven by `training.train`."""

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
    state: TrainState = field(default_factory=TrainState)
    ddp: DistributedDataParallel | None = None  # under torchrun: what token_logits calls

    # --- checkpoints ---------------------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.config),
            "tokenizers": self.tokenizers.to_json(),
            "model": self.model.state_dict(),
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
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.sampler.load_state_dict(checkpoint["sampler"])
        self.state = TrainState(**checkpoint["train_state"])
        rng_by_rank = checkpoint.get("rng_by_rank", [checkpoint["rng"]])
        if len(rng_by_rank) == distributed.world_size():
            set_rng_state(rng_by_rank[distributed.rank()])
        else:  # another world size: a fresh stream per rank, still fixed by seed and step
            seed_everything(self.config.train.seed + self.state.step)
            distributed.seed_per_rank(self.config.train.seed + self.state.step)

    def save(self, *names: str) -> None:
        """Every rank calls this (the payload gathers their random states); rank 0 writes."""
        payload = self.payload()
        if distributed.is_main():
            for name in names:
                save_checkpoint(payload, self.run_dir / "checkpoints" / name)
            remove_old_checkpoints(self.run_dir / "checkpoints", self.config.train.keep_checkpoints)

    # --- progress through the data -------------------------------------------------------------

    def reached_max_steps(self) -> bool:
        return 0 < self.config.train.max_steps <= self.state.step

    def end_epoch(self) -> bool:
        """Move the sampler to the next epoch; True when `train.max_epochs` are done."""
        self.state.epoch += 1
        self.sampler.set_epoch(self.state.epoch)
        return 0 < self.config.train.max_epochs <= self.state.epoch

    # --- validation ----------------------------------------------------------------------------

    def validate_and_save(self, writer: SummaryWriter | None) -> ValidationResult:
        """Validate, record the result, and write the step, last and (if better) best checkpoints."""
        state, config = self.state, self.config
        result = validate(
            self.model,
            self.splits["validation"],
            self.texts["validation"].target,
            self.tokenizers,
            config,
            self.device,
            writer=writer,
            step=state.step,
        )
        improved = result.scores.bleu > state.best_bleu
        if improved:
            state.best_bleu = result.scores.bleu
            state.validations_without_improvement = 0
        else:
            state.validations_without_improvement += 1
        scores = {"bleu": result.scores.bleu, "loss": result.loss, "chrf": result.scores.chrf}
        state.history.append({"step": state.step, **scores})
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
