"""A training run's checkpoints: what goes into one, and how `--resume` puts the run back.

Everything a resumed run needs (model, optimizer, schedule, scaler, sampler position, random number
generators, counters, the time budget's plan) goes into each checkpoint, so `--resume` continues
the same run: the same weights, step for step, as a run that was never interrupted.
"""

from __future__ import annotations

import random
from dataclasses import asdict, fields
from typing import Any

import torch

from transformer.checkpoint import remove_old_checkpoints, save_checkpoint
from transformer.config import config_to_dict
from transformer.training import distributed
from transformer.training.budget import TimeBudget
from transformer.training.run import TrainingRun, TrainState


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
    """`saved` with this optimizer's implementation flags (fused, foreach): loading a state dict
    would otherwise bring back those of the run that wrote it, and the divergence guard needs the
    fused AdamW this code builds."""
    groups = []
    for ours, theirs in zip(optimizer.param_groups, saved["param_groups"], strict=True):
        flags = {key: ours[key] for key in ("fused", "foreach") if key in ours}
        groups.append({**theirs, **flags})
    return {**saved, "param_groups": groups}


def payload(run: TrainingRun) -> dict[str, Any]:
    """The checkpoint of `run` as it stands (every rank calls this: it gathers their random
    states)."""
    return {
        "config": config_to_dict(run.config),
        "tokenizers": run.tokenizers.to_json(),
        "model": run.inference_model().state_dict(),
        **({"training_weights": run.model.state_dict()} if run.moving_average else {}),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "sampler": run.sampler.state_dict(),
        "rng": rng_state(),
        "rng_by_rank": distributed.gather_objects(rng_state()),  # each rank's dropout stream
        "step": run.state.step,
        "train_state": asdict(run.state),
        "time_budget": run.budget.state_dict(),
        "precision_choice": asdict(run.precision),
    }


def restore(run: TrainingRun, checkpoint: dict[str, Any]) -> None:
    """Put every object of `run` back where the checkpoint left it (the inverse of `payload`)."""
    run.model.load_state_dict(checkpoint.get("training_weights", checkpoint["model"]))
    if run.moving_average:  # a run that had none starts its average from the saved weights
        run.moving_average.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(keep_optimizer_flags(run.optimizer, checkpoint["optimizer"]))
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    run.scaler.load_state_dict(checkpoint["scaler"])
    run.sampler.load_state_dict(checkpoint["sampler"])
    counters = {f.name for f in fields(TrainState)}
    saved_state = checkpoint["train_state"]
    run.state = TrainState(**{key: saved_state[key] for key in counters if key in saved_state})
    # Checkpoints written before the budget had its own key kept its numbers in train_state.
    saved_budget = checkpoint.get("time_budget", saved_state)
    run.budget = TimeBudget.resumed(
        run.config.train, run.budget.started_at, saved_budget, run.state.step
    )
    rng_by_rank = checkpoint.get("rng_by_rank", [checkpoint["rng"]])
    if len(rng_by_rank) == distributed.world_size():
        set_rng_state(rng_by_rank[distributed.rank()])
    else:  # another world size: a fresh stream per rank, still fixed by seed and step
        seed_everything(run.config.train.seed + run.state.step)
        distributed.seed_per_rank(run.config.train.seed + run.state.step)


def save(run: TrainingRun, *names: str) -> None:
    """Save `run` under each of `names` in its checkpoints folder. Every rank calls this (the
    payload gathers their random states); rank 0 writes. A diverged run stops here instead of
    writing."""
    run.guard.check(run.state.step)
    checkpoint = payload(run)
    if distributed.is_main():
        folder = run.run_dir / "checkpoints"
        for name in names:
            save_checkpoint(checkpoint, folder / name)
        remove_old_checkpoints(folder, run.config.train.keep_checkpoints)
