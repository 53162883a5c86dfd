"""TensorBoard as a tracker (trackers.py): scalars, text, images and hparams in the run directory.

    tensorboard --logdir runs/

Besides the charts of every scalar, the run gets a Custom Scalars page (the validation results
together; with several directions, one chart per metric with a line per direction) and, once it
has validated, its settings with their final scores in the HParams tab.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from transformer.config import Config, config_to_dict
from transformer.training.tracker import Sample, TrackedRun

# The hparams dashboard reads these scalars (their last value) as the run's results.
HPARAM_METRICS = ("valid/bleu", "valid/chrf", "valid/ter", "valid/loss", "valid/perplexity")
# TensorBoard's Custom Scalars tab: the validation results on one page, the two losses on one chart.
SCALAR_LAYOUT = {
    "validation": {
        "BLEU and chrF": ["Multiline", ["valid/bleu", "valid/chrf"]],
        "TER (lower is better)": ["Multiline", ["valid/ter"]],
        "loss: train and validation": ["Multiline", ["train/loss", "valid/loss"]],
        "perplexity": ["Multiline", ["valid/perplexity"]],
    }
}
DIRECTION_METRICS = ("loss", "perplexity", "bleu", "chrf", "ter")  # charted per direction


class TensorBoardTracker:
    """The run's TensorBoard event file, written by SummaryWriter (its own thread writes)."""

    run_id = None  # TensorBoard continues a run by its directory

    def __init__(self, run: TrackedRun) -> None:
        # A resumed run hides the events an earlier process wrote after the checkpoint it
        # resumes from (a crash between two checkpoints), so the curves do not overlap.
        self.writer = tensorboard_writer(run.run_dir, purge_step=run.step + 1 if run.step else None)
        if len(run.directions) > 1:
            self.writer.add_custom_scalars(direction_charts(run.directions))
        self.config = run.config
        self.validated = False

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.validated = self.validated or "valid/bleu" in values

    def samples(self, samples: list[Sample], step: int) -> None:
        # Markdown: two spaces end a line, a blank line starts a paragraph.
        text = "\n\n".join(
            f"source: {s.source}  \nreference: {s.reference}  \noutput: {s.output}" for s in samples
        )
        self.writer.add_text("valid/samples", text, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, failed: bool) -> None:
        """Write the run's settings with its final scores for the hparams tab (when it
        validated and did not fail), then close the event file."""
        if self.validated and not failed:
            log_hparams(self.writer, flat_hparams(self.config))
        self.writer.close()


def tensorboard_writer(run_dir: str | Path, purge_step: int | None = None) -> SummaryWriter:
    """The run's SummaryWriter, with the Custom Scalars layout that gathers the validation charts
    (the Scalars and Time Series tabs list them after the train/* charts, in a group per prefix).
    `purge_step` hides events an earlier process wrote at or after that step."""
    writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
    writer.add_custom_scalars(SCALAR_LAYOUT)
    return writer


def direction_charts(directions: list[str]) -> dict[str, Any]:
    """Custom Scalars layout: one chart per metric, one line per direction."""
    charts = {
        metric: ["Multiline", [f"valid/{direction}/{metric}" for direction in directions]]
        for metric in DIRECTION_METRICS
    }
    return {"validation by direction": charts}


def flat_hparams(config: Config) -> dict[str, Any]:
    """TensorBoard's hparams plugin takes flat scalars and strings only."""
    flat = {}
    for section, values in config_to_dict(config).items():
        for key, value in values.items():
            if isinstance(value, (int, float, str, bool)):
                flat[f"{section}.{key}"] = value
    return flat


def log_hparams(writer: SummaryWriter, flat: dict[str, int | float | str | bool]) -> None:
    """The run's settings for TensorBoard's hparams dashboard, its metrics the valid/* scalars.

    Written into the run's own event file. SummaryWriter.add_hparams would instead open a second
    writer and log every metric again as a scalar: one-point charts at step 0 beside the real ones.
    """
    # hparams() uses the metric dict's keys only (as names of existing scalar tags).
    for summary in hparams(flat, dict.fromkeys(HPARAM_METRICS, 0.0)):
        writer.file_writer.add_summary(summary)
    writer.flush()
