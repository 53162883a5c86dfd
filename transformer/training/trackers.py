"""Where a run's numbers go: TensorBoard, Weights & Biases and MLflow, through one object.

    trackers = open_trackers(config, run_dir, step, saved_run_ids, directions)  # train.loggers
    trackers.scalars({"train/loss": 2.31, "train/learning_rate": 7e-4}, step)
    trackers.close()

The loop (log.py) and validation (validation.py) make one call per thing to log: scalars, sample
translations, attention heatmaps, a line of text such as sacreBLEU's signature. `Trackers` hands
each call to every tracker that train.loggers names, and each puts it where its tool has a place
for it (tracker_tensorboard.py, tracker_wandb.py, tracker_mlflow.py).

A tracker must never stop or slow training. W&B and MLflow talk to a server (or write for one),
so each works through its calls in a thread of its own: a call only queues the record, and a
network that is gone holds up nobody but that thread. A tracker that raises is named once on
stderr and dropped; the other trackers and the checkpoints go on. TensorBoard writes local files
through its own background writer, so its calls run in the caller's thread, under the same rule.

The W&B and MLflow libraries are imported only when train.loggers asks for them, and
`check_installed` refuses one that is missing before the run does any work. Under torchrun only
rank 0 logs. `run_ids` are saved in every checkpoint, so that `--resume` continues the same W&B
and MLflow runs instead of starting second ones.
"""

from __future__ import annotations

import importlib
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from transformer.config import Config, ConfigError
from transformer.training import distributed
from transformer.training.tracker import Sample, TrackedRun, Tracker

LABELS = {"tensorboard": "TensorBoard", "wandb": "W&B", "mlflow": "MLflow"}
# The trackers that need an optional library: train.loggers name -> (module, pyproject extra).
EXTRAS = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
QUEUE_LIMIT = 1000  # records a threaded tracker may fall behind before it is given up on
CLOSE_WAIT_S = 60.0  # at the end of the run, how long a threaded tracker may take to finish


def _open_tensorboard(run: TrackedRun) -> Tracker:
    from transformer.training.tracker_tensorboard import TensorBoardTracker

    return TensorBoardTracker(run)


def _open_wandb(run: TrackedRun) -> Tracker:
    from transformer.training.tracker_wandb import WandbTracker

    return WandbTracker(run)


def _open_mlflow(run: TrackedRun) -> Tracker:
    from transformer.training.tracker_mlflow import MlflowTracker

    return MlflowTracker(run)


# How each train.loggers name opens its tracker (a function, so that its library loads only here).
OPENERS: dict[str, Callable[[TrackedRun], Tracker]] = {
    "tensorboard": _open_tensorboard,
    "wandb": _open_wandb,
    "mlflow": _open_mlflow,
}


def check_installed(loggers: list[str]) -> None:
    """Refuse, before any work, a logger whose library is not installed (ConfigError: exit 2)."""
    for name in loggers:
        if name not in EXTRAS:
            continue
        module, extra = EXTRAS[name]
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(
                f"train.loggers asks for {name}, but {module} cannot be imported ({error}); "
                f"install it with pip install 'transformer[{extra}]' (or pip install {module}), "
                f"or take {name} out of train.loggers"
            ) from None


def _one_line(error: BaseException) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class _Handle:
    """One tracker as `Trackers` sees it: called now (TensorBoard) or through a queue that a
    thread of its own works through (W&B, MLflow), until it first fails."""

    def __init__(self, name: str, tracker: Tracker, threaded: bool) -> None:
        self.name, self.tracker = name, tracker
        self.failed = False
        self._warned = threading.Lock()
        self.queue: queue.Queue[tuple[str, tuple[Any, ...]]] | None = None
        if threaded:
            self.queue = queue.Queue(maxsize=QUEUE_LIMIT)
            self.thread = threading.Thread(target=self._work, name=f"{name} tracker", daemon=True)
            self.thread.start()

    def call(self, method: str, *args: Any) -> None:
        if self.failed:
            return
        if self.queue is None:
            self._run(method, args)
            return
        try:
            self.queue.put_nowait((method, args))
        except queue.Full:
            self.disable(f"{QUEUE_LIMIT} records are waiting for it: it cannot keep up")

    def _run(self, method: str, args: tuple[Any, ...]) -> None:
        try:
            getattr(self.tracker, method)(*args)
        except Exception as error:  # a tracker must never stop training: warn once, drop it
            self.disable(_one_line(error))

    def _work(self) -> None:
        assert self.queue is not None
        while True:
            method, args = self.queue.get()
            if method == "finish" and self.failed:
                self._finish_quietly()
            elif not self.failed:
                self._run(method, args)
            if method == "finish":
                return

    def _finish_quietly(self) -> None:
        """A tracker that failed is still asked to finish (W&B stops its service process), and
        whatever that raises is not worth a second warning."""
        try:
            self.tracker.finish(failed=True)
        except Exception:  # already reported once
            pass

    def disable(self, reason: str) -> None:
        with self._warned:
            if self.failed:
                return
            self.failed = True
        tqdm.write(
            f"warning: {LABELS.get(self.name, self.name)} stopped logging ({reason}); training "
            "goes on, with the checkpoints and the other loggers.",
            file=sys.stderr,
        )

    def close(self, failed: bool) -> None:
        """Finish the tracker's run; a threaded one gets CLOSE_WAIT_S to write what is queued."""
        if self.queue is None:
            if not self.failed:
                self._run("finish", (failed,))
            return
        try:
            self.queue.put_nowait(("finish", (failed,)))  # a failed one: its thread ends by itself
        except queue.Full:  # stuck behind QUEUE_LIMIT records: not worth waiting for
            self.disable(f"{QUEUE_LIMIT} records are waiting for it: it cannot keep up")
        if self.failed:
            return
        self.thread.join(CLOSE_WAIT_S)
        if self.thread.is_alive():
            self.disable(f"it did not finish within {CLOSE_WAIT_S:g} s; its last records are lost")


class Trackers:
    """Every tracker of a run behind one object: each call goes to all of them."""

    def __init__(self, handles: list[_Handle]) -> None:
        self._handles = handles

    def __bool__(self) -> bool:
        """True while some tracker still takes records (worth computing heatmaps for)."""
        return any(not handle.failed for handle in self._handles)

    def _each(self, method: str, *args: Any) -> None:
        for handle in self._handles:
            handle.call(method, *args)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self._each("scalars", values, step)

    def samples(self, samples: list[Sample], step: int) -> None:
        self._each("samples", samples, step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self._each("image", tag, image, step)

    def text(self, tag: str, text: str, step: int) -> None:
        self._each("text", tag, text, step)

    def flush(self) -> None:
        self._each("flush")

    def run_ids(self) -> dict[str, str]:
        """The W&B and MLflow run ids, by train.loggers name, for the checkpoint."""
        ids = {handle.name: handle.tracker.run_id for handle in self._handles}
        return {name: run_id for name, run_id in ids.items() if run_id}

    def close(self, failed: bool = False) -> None:
        """Finish every tracker's run (`failed`: the run stopped with an error)."""
        for handle in self._handles:
            handle.close(failed)
        self._handles = []


def open_trackers(
    config: Config,
    run_dir: Path,
    step: int,
    saved_run_ids: dict[str, str],
    directions: list[str],
) -> Trackers:
    """The trackers train.loggers names, each with its run opened (continued, with an id from
    `saved_run_ids`). One that cannot open is warned about and left out; under torchrun, ranks
    other than 0 get none."""
    if not distributed.is_main():
        return Trackers([])
    handles = []
    for name in config.train.loggers:
        run = TrackedRun(config, run_dir, step, saved_run_ids.get(name), directions)
        try:
            tracker = OPENERS[name](run)
        except Exception as error:  # e.g. W&B online without a login, no MLflow server
            tqdm.write(
                f"warning: {LABELS[name]} could not start ({_one_line(error)}); training goes on "
                "without it.",
                file=sys.stderr,
            )
            continue
        handles.append(_Handle(name, tracker, threaded=name != "tensorboard"))
    return Trackers(handles)
