"""What one training run holds, and where it stands.

A `TrainingRun` is the set of objects that the loop in `loop.py` drives. How it is saved and put
back lives in `run_checkpoint.py`; its clock and time budget in `budget.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from transformer.config import Config
from transformer.data.batching import Batch, TokenBatchSampler
from transformer.data.loading import EncodedSplit
from transformer.device import PrecisionChoice
from transformer.model import Transformer
from transformer.tokenization.tokenizer import TokenizerPair
from transformer.training.budget import TimeBudget
from transformer.training.divergence import DivergenceGuard
from transformer.training.loss import StatesFunction
from transformer.training.moving_average import WeightMovingAverage
from transformer.training.schedule import StepPlan, make_scheduler
from transformer.training.validation import Directions, ValidationResult


@dataclass
class TrainState:
    """Counters that advance with training, and the run's ids in its trackers; they go into
    every checkpoint."""

    step: int = 0
    epoch: int = 0
    best_bleu: float = -1.0
    validations_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per validation
    tracker_runs: dict[str, str] = field(
        default_factory=dict
    )  # {"wandb": id}: what --resume continues


@dataclass
class TrainingRun:
    """The objects of one run, built by `start.start_run` and driven by `loop.run_training`."""

    # What it trains, and where.
    config: Config
    run_dir: Path
    device: torch.device
    model: Transformer
    token_states: StatesFunction  # model.token_states (through DDP, compiled when asked)
    ddp: DistributedDataParallel | None  # under torchrun: what token_states calls
    moving_average: WeightMovingAverage | None  # with train.ema_decay: what is validated
    precision: PrecisionChoice  # train.precision as chosen (config.train.precision holds it too)
    # How it updates the weights.
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    guard: DivergenceGuard  # skips non-finite steps, stops a diverged run
    # What it reads.
    tokenizers: TokenizerPair
    splits: dict[str, EncodedSplit]
    validation_references: list[str]  # the validation targets as text, for BLEU
    validation_directions: Directions  # which direction each validation sentence is
    sampler: TokenBatchSampler
    loader: Iterable[Batch]  # the training batches of one epoch per pass
    # Where it stands.
    state: TrainState
    budget: TimeBudget
    # The learning rate; it reads the cosine's length from this run (`step_plan`).
    scheduler: torch.optim.lr_scheduler.LambdaLR = field(init=False)

    def __post_init__(self) -> None:
        self.scheduler = make_scheduler(self.optimizer, self.config.train, self.step_plan)

    def step_plan(self) -> StepPlan:
        """Where the run ends and its cosine decays to: `train.max_steps`, or what a
        time-budgeted run planned (a last step of 0: not known, no step limit)."""
        max_steps = self.config.train.max_steps
        return StepPlan(last_step=max_steps) if max_steps else self.budget.plan

    def inference_model(self) -> Transformer:
        """The weights that are validated and saved as "model": the moving average when there is
        one, else the live weights."""
        return self.moving_average.model if self.moving_average else self.model

    # --- progress ------------------------------------------------------------------------------

    def reached_last_step(self) -> bool:
        return 0 < self.step_plan().last_step <= self.state.step

    def epochs_done(self) -> bool:
        return 0 < self.config.train.max_epochs <= self.state.epoch

    def finished(self) -> bool:
        """True when a (resumed) run has nothing left to do under its current limits."""
        patience = self.config.train.patience
        return (
            self.reached_last_step()
            or self.epochs_done()
            or 0 < patience <= self.state.validations_without_improvement
        )

    def end_epoch(self) -> None:
        """Move the sampler to the next epoch."""
        self.state.epoch += 1
        self.sampler.set_epoch(self.state.epoch)

    def record_validation(self, result: ValidationResult) -> bool:
        """Add a validation to the history; True when its BLEU is the best so far."""
        state = self.state
        improved = result.scores.bleu > state.best_bleu
        if improved:
            state.best_bleu = result.scores.bleu
            state.validations_without_improvement = 0
        else:
            state.validations_without_improvement += 1
        minutes = self.budget.elapsed_seconds() / 60  # since train.py started, setup included
        scores = {
            "bleu": result.scores.bleu,
            "loss": result.loss,
            "chrf": result.scores.chrf,
            "ter": result.scores.ter,
        }
        state.history.append({"step": state.step, "minutes": minutes, **scores})
        return improved

    def should_stop_early(self) -> bool:
        """True (and say so) after `train.patience` validations without a better BLEU."""
        patience = self.config.train.patience
        if patience > 0 and self.state.validations_without_improvement >= patience:
            tqdm.write(f"Early stopping: no better BLEU in {patience} validations.")
            return True
        return False
