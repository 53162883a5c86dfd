"""MLflow as a tracker (tracker.py), with train.loggers=[tensorboard,mlflow]. Needs the [mlflow]
extra, and a tracking server or store: train.mlflow_tracking_uri (http://host:5000,
sqlite:///mlflow.db), else MLFLOW_TRACKING_URI, else MLflow's default store in the working
directory.

    scalars      -> metrics at the training step
    the config   -> the run's parameters (flat: train.lr, model.d_model, ...) and config.yaml
    samples      -> text artifacts samples/step_0001000.txt, ...
    heatmaps     -> images at their step (the run's Artifacts and image charts)
    signatures   -> tags (valid/bleu_signature, ...)

The experiment is train.logger_project, else MLFLOW_EXPERIMENT_NAME, else MLflow's "Default". A
resumed run continues the MLflow run whose id the checkpoint holds. MLflow does not let a
parameter change, so a resumed run's changed settings (more steps, say) are in its config.yaml,
which is written again. Every call here runs in the tracker's own thread (trackers.py).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from transformer.config import config_to_dict
from transformer.training.tracker import Sample, TrackedRun

PARAMS_PER_CALL = 100  # MLflow's limit for one log_batch


class MlflowTracker:
    """One MLflow run, through MlflowClient (no global "active run", so nothing else in the
    process is touched)."""

    def __init__(self, run: TrackedRun) -> None:
        train = run.config.train
        self.client = MlflowClient(tracking_uri=train.mlflow_tracking_uri or None)
        self.run_id = self._continue(run.run_id) if run.run_id else None
        if self.run_id is None:
            name = train.logger_project or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
            found = self.client.get_experiment_by_name(name)
            experiment = found.experiment_id if found else self.client.create_experiment(name)
            run_name = train.logger_run_name or run.run_dir.name
            self.run_id = self.client.create_run(experiment, run_name=run_name).info.run_id
        config = config_to_dict(run.config)
        self._log_new_params(flat_params(config))
        self.client.log_text(self.run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")

    def _continue(self, run_id: str) -> str | None:
        """The saved run, marked running again; None (and a warning) when this tracking store
        does not hold it (another train.mlflow_tracking_uri): then a new run starts."""
        try:
            self.client.get_run(run_id)
        except MlflowException:
            print(
                f"warning: MLflow run {run_id} of this checkpoint is not in "
                f"{self.client.tracking_uri}; logging to a new run",
                file=sys.stderr,
            )
            return None
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _log_new_params(self, params: dict[str, str]) -> None:
        assert self.run_id is not None
        logged = self.client.get_run(self.run_id).data.params
        new = [Param(key, value) for key, value in params.items() if key not in logged]
        for start in range(0, len(new), PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=new[start : start + PARAMS_PER_CALL])

    def scalars(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(tag, float(value), now, step) for tag, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def samples(self, samples: list[Sample], step: int) -> None:
        text = "\n\n".join(
            f"source: {s.source}\nreference: {s.reference}\noutput: {s.output}" for s in samples
        )
        self.client.log_text(self.run_id, text + "\n", f"samples/step_{step:07d}.txt")

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.client.log_image(self.run_id, image, key=tag, step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.client.set_tag(self.run_id, tag, text)

    def flush(self) -> None:
        pass  # every call above has written when it returns

    def finish(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 0.0007}} -> {"train.lr": "0.0007"}: MLflow's parameters are flat strings."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat
