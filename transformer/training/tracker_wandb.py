"""Weights & Biases as a tracker (tracker.py), with train.loggers=[tensorboard,wandb]. Needs the
[wandb] extra; `wandb login` once, or train.wandb_mode=offline to write the run's files only
(`wandb sync` uploads them later).

    scalars      -> run.log at the training step: charts, grouped by their train/ and valid/ prefix
    the config   -> the run's config (nested: train.lr, model.d_model, ...)
    samples      -> a table (source, reference, output) per validation
    heatmaps     -> images at their step; sacreBLEU's signatures -> the run's summary

The run's files go into the run directory (its wandb/ folder) unless WANDB_DIR says elsewhere;
WANDB_MODE, WANDB_PROJECT, WANDB_ENTITY and the other variables of W&B work as W&B documents,
where the config leaves a setting at "". A resumed run continues the W&B run whose id the
checkpoint holds. Every call here runs in the tracker's own thread (trackers.py).
"""

from __future__ import annotations

import os

import numpy as np
import wandb

from transformer.config import config_to_dict
from transformer.training.tracker import Sample, TrackedRun


class WandbTracker:
    """One W&B run."""

    def __init__(self, run: TrackedRun) -> None:
        train = run.config.train
        self.run = wandb.init(
            project=train.logger_project or None,
            name=train.logger_run_name or run.run_dir.name,
            id=run.run_id,  # None: a new run
            resume="allow" if run.run_id else None,
            mode=train.wandb_mode or None,  # None: WANDB_MODE, else online
            dir=None if os.environ.get("WANDB_DIR") else str(run.run_dir),
            config=config_to_dict(run.config),
            allow_val_change=True,  # a resumed run may change train.* settings
            reinit="create_new",  # never hand back another run of this process
        )
        self.run_id: str | None = self.run.id
        # A resumed online run continues after the last step W&B holds; steps logged again
        # between the checkpoint and a crash are the same numbers (resume is exact), and W&B
        # would refuse them with a warning each.
        self.first_step = self.run.starting_step

    def scalars(self, values: dict[str, float], step: int) -> None:
        if step >= self.first_step:
            self.run.log(values, step=step)

    def samples(self, samples: list[Sample], step: int) -> None:
        table = wandb.Table(
            columns=["source", "reference", "output"],
            data=[[s.source, s.reference, s.output] for s in samples],
        )
        if step >= self.first_step:
            self.run.log({"valid/samples": table}, step=step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if step >= self.first_step:
            self.run.log({tag: wandb.Image(image)}, step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.run.summary[tag] = text

    def flush(self) -> None:
        pass  # W&B's service process writes and uploads on its own

    def finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)
