"""What a tracker is (trackers.py gathers a run's trackers behind one object): the calls every
tracker takes, one at a time and in order, and what it is given to open its run. Each tracker puts
a call where its tool has a place for it; tracker_tensorboard.py, tracker_wandb.py and
tracker_mlflow.py are the three.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from transformer.config import Config


@dataclass
class Sample:
    """One validation sentence as the trackers show it."""

    source: str
    reference: str
    output: str


@dataclass
class TrackedRun:
    """What a tracker needs to open its run."""

    config: Config
    run_dir: Path
    step: int  # the step the run starts at (a resumed run: the checkpoint's)
    run_id: str | None  # this tracker's run to continue (--resume), from the checkpoint
    directions: list[str]  # the validation directions (several: a chart line per direction)


class Tracker(Protocol):
    """What every tracker does. Its calls come one at a time and in order."""

    run_id: str | None  # what --resume needs to continue its run (None: nothing to continue)

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def samples(self, samples: list[Sample], step: int) -> None: ...

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """`image`: (height, width, 3) uint8 RGB."""

    def text(self, tag: str, text: str, step: int) -> None: ...

    def flush(self) -> None:
        """The end of a validation: a moment to write out what is buffered."""

    def finish(self, failed: bool) -> None: ...
