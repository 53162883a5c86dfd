"""Trackers beside TensorBoard: W&B (offline, its run files read back) and MLflow (a local store,
read back with its client) get the same numbers; --resume logs into the same runs; a missing
extra is refused in one line; a tracker that raises or hangs never stops or holds up training."""

from __future__ import annotations

import json
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_train import run_train as train_run

from transformer.config import Config, TrainConfig
from transformer.training import trackers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# test_train's fast tiny run, validating every 4 steps with 2 samples (what the trackers receive)
EVERY_4 = ("train.validate_every=4", "train.num_samples=2")
ALL_THREE = "train.loggers=[tensorboard,wandb,mlflow]"


def run_train(run_dir: Path, *overrides: str, flags: tuple[str, ...] = ()) -> int:
    return train_run(run_dir, *EVERY_4, *overrides, flags=flags)


def tensorboard_scalars(run_dir: Path, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


def wandb_records(offline_run: Path) -> list[Any]:
    """The records of an offline W&B run's .wandb file: LevelDB's log format (32 KiB blocks of
    chunks, each with a 7-byte header: CRC, length, type) after W&B's own 7-byte file header, each
    record a protocol buffer."""
    from wandb.proto import wandb_internal_pb2

    (path,) = offline_run.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, header = 32768, 7
    position, pieces, records = header, [], []
    while position + header <= len(data):
        if block - position % block < header:  # a block's tail too short for a header: padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + header])
        pieces.append(data[position + header : position + header + length])
        position += header + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            records.append(record)
            pieces = []
    return records


def wandb_history(records: list[Any]) -> dict[int, dict[str, Any]]:
    """step -> {key: value} of every run.log in the records."""
    rows: dict[int, dict[str, Any]] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = rows.setdefault(record.history.step.num, {})
            for item in record.history.item:
                row["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    return rows


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run to step 4 with all three trackers, then resumed to step 8: W&B offline (files
    under <tmp>/wandb), MLflow to a file store (<tmp>/mlruns)."""
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    tmp = tmp_path_factory.mktemp("tracked")
    (tmp / "wandb").mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_DIR", str(tmp / "wandb"))
        env.setenv("WANDB_SILENT", "true")
        env.setenv("MLFLOW_TRACKING_URI", str(tmp / "mlruns"))
        env.setenv(
            "MLFLOW_ALLOW_FILE_STORE", "true"
        )  # MLflow 3 prefers a database; a folder will do
        assert run_train(tmp / "run", ALL_THREE, "train.max_steps=4") == 0
        assert run_train(tmp / "run", ALL_THREE, "train.max_steps=8", flags=("--resume",)) == 0
    return tmp


def test_wandb_gets_the_scores_config_samples_and_heatmaps(tracked_run: Path) -> None:
    bleu = tensorboard_scalars(tracked_run / "run", "valid/bleu")
    ter = tensorboard_scalars(tracked_run / "run", "valid/ter")
    assert sorted(bleu) == [4, 8]
    offline_runs = sorted((tracked_run / "wandb" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2  # one per process: W&B joins them into one run when synced
    first, resumed = (wandb_records(run) for run in offline_runs)
    run_ids = {record.run.run_id for record in first + resumed if record.HasField("run")}
    assert len(run_ids) == 1  # --resume continued the same W&B run

    history = wandb_history(first) | wandb_history(resumed)
    for step in (4, 8):
        assert history[step]["valid/bleu"] == pytest.approx(bleu[step], abs=1e-4)
        assert history[step]["valid/ter"] == pytest.approx(ter[step], abs=1e-4)
        assert history[step]["valid/attention/sentence_1/_type"] == "image-file"
        assert history[step]["valid/samples/_type"] == "table-file"
    assert {"train/loss", "train/learning_rate", "train/tokens_per_second"} <= history[2].keys()

    (run_record,) = [record.run for record in first if record.HasField("run")]
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["train"]["max_steps"] == 4 and config["model"]["d_model"] == 32
    assert config["train"]["loggers"] == ["tensorboard", "wandb", "mlflow"]


def test_mlflow_gets_the_scores_config_samples_and_heatmaps(tracked_run: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=str(tracked_run / "mlruns"))
    experiment = client.get_experiment_by_name("Default")
    (run,) = client.search_runs([experiment.experiment_id])  # --resume: the same run, no second
    bleu = tensorboard_scalars(tracked_run / "run", "valid/bleu")
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "valid/bleu")}
    assert logged == pytest.approx(bleu, abs=1e-4)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [
        2,
        4,
        6,
        8,
    ]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["train.max_steps"] == "4"  # MLflow keeps a parameter's first value
    assert run.data.tags["valid/ter_signature"].startswith("nrefs:1|")
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert "max_steps: 8" in (artifacts / "config.yaml").read_text()  # the resumed settings
    samples = (artifacts / "samples" / "step_0000008.txt").read_text()
    assert samples.count("reference: ") == 2
    assert len(list((artifacts / "images").glob("valid~attention~sentence_1*.png"))) == 2


def test_the_checkpoint_holds_the_run_ids_that_resume_continues(tracked_run: Path) -> None:
    payload = torch.load(tracked_run / "run" / "checkpoints" / "last.pt", weights_only=True)
    ids = payload["train_state"]["tracker_runs"]
    assert sorted(ids) == ["mlflow", "wandb"]
    assert ids["wandb"] in str(next((tracked_run / "wandb" / "wandb").glob("offline-run-*")))


def test_a_missing_extra_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    assert run_train(tmp_path / "run", "train.loggers=[tensorboard,wandb]") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "pip install 'transformer[wandb]'" in err
    assert not (tmp_path / "run").exists()


class Broken:
    """A tracker whose server is gone: every call raises."""

    run_id = None

    def __init__(self, run: trackers.TrackedRun) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any) -> None:
            raise ConnectionError("server down")

        return fail


def test_a_tracker_that_raises_on_every_call_does_not_stop_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(trackers.OPENERS, "mlflow", Broken)
    monkeypatch.delitem(trackers.EXTRAS, "mlflow")  # nothing to import: the test needs no MLflow
    assert run_train(tmp_path, "train.loggers=[tensorboard,mlflow]", "train.max_steps=8") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "MLflow" in line]
    assert warnings == [
        "warning: MLflow stopped logging (ConnectionError: server down); training goes on, "
        "with the checkpoints and the other loggers."
    ]
    assert sorted(tensorboard_scalars(tmp_path, "valid/bleu")) == [4, 8]
    assert (tmp_path / "checkpoints" / "step_0000008.pt").is_file()


class Hanging:
    """A tracker stuck in a call (a server that never answers) until `release` is set."""

    run_id = "stuck"
    release = threading.Event()

    def __init__(self, run: trackers.TrackedRun) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.release.wait()


def test_a_tracker_that_hangs_holds_up_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(trackers.OPENERS, "mlflow", Hanging)
    monkeypatch.setattr(trackers, "CLOSE_WAIT_S", 0.2)
    config = Config(train=TrainConfig(loggers=["mlflow"]))
    try:
        logged = trackers.open_trackers(config, tmp_path, 0, {}, [])
        assert logged.run_ids() == {"mlflow": "stuck"}
        started = time.perf_counter()
        for step in range(10):
            logged.scalars({"train/loss": 1.0}, step)
        logged.close()  # waits CLOSE_WAIT_S, then gives up on it
        assert time.perf_counter() - started < 5.0
        assert "MLflow stopped logging (it did not finish within 0.2 s" in capsys.readouterr().err

        # One that falls QUEUE_LIMIT records behind is given up on, and not waited for at the end.
        logged = trackers.open_trackers(config, tmp_path, 0, {}, [])
        for step in range(trackers.QUEUE_LIMIT + 10):
            logged.scalars({"train/loss": 1.0}, step)
        assert not logged
        assert "cannot keep up" in capsys.readouterr().err
        monkeypatch.setattr(trackers, "CLOSE_WAIT_S", 30.0)
        started = time.perf_counter()
        logged.close()  # nothing to wait for: it was given up on
        assert time.perf_counter() - started < 5.0
    finally:
        Hanging.release.set()
