"""Faults during training: divergence, a full disk, SIGKILL mid-write, two processes on one run,
resuming a finished run, and TensorBoard after a crash. Nothing lost, nothing silent."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_train import FAST, TINY

import train
from transformer import checkpoint
from transformer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from transformer.training import loop
from transformer.training.divergence import EXPLODED_LOSS_PER_TOKEN, DivergenceGuard
from transformer.training.start import RunDirLock

ROOT = Path(__file__).parent.parent


def train_argv(run_dir: Path, *overrides: str, flags: tuple[str, ...] = ()) -> list[str]:
    return ["--config", TINY, *flags, f"train.run_dir={run_dir}", *FAST, *overrides]


def run_train(run_dir: Path, *overrides: str, flags: tuple[str, ...] = ()) -> int:
    return train.main(train_argv(run_dir, *overrides, flags=flags))


def checkpoint_files(run_dir: Path) -> dict[str, bytes]:
    """Every file in the checkpoints directory, hidden temporary files included."""
    return {path.name: path.read_bytes() for path in (run_dir / "checkpoints").iterdir()}


def the_error_line(err: str) -> str:
    """The one `error:` line of a failed run (stderr also carries the progress bar)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def all_finite(state: dict[str, Any]) -> bool:
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


# --- divergence ------------------------------------------------------------------------------------


def test_divergent_learning_rate_stops_with_exit_1_and_finite_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    status = run_train(tmp_path, "train.lr=1e4", "train.max_steps=40", "train.validate_every=5")
    assert status == 1
    assert "training diverged" in the_error_line(capsys.readouterr().err)
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        assert all_finite(torch.load(path, weights_only=True)["model"]), path.name


def test_the_guard_flags_non_finite_and_exploded_steps_only() -> None:
    """A step is bad when its loss or gradient norm is NaN/inf, or its loss per target token is
    above EXPLODED_LOSS_PER_TOKEN (finite but hopeless: the fast path of a far too high lr)."""
    guard = DivergenceGuard(max_bad_steps=3, device=torch.device("cpu"))
    limit, tokens, finite_norm = EXPLODED_LOSS_PER_TOKEN, 50, torch.tensor(2.0)
    flags = [
        guard.bad_step_flag(torch.tensor(loss), norm, tokens).item()
        for loss, norm in [
            (9.0 * tokens, finite_norm),  # an untrained model: ln(8000) per token
            (limit * tokens * 0.99, finite_norm),
            (limit * tokens * 1.01, finite_norm),
            (float("nan"), finite_norm),
            (9.0 * tokens, torch.tensor(float("inf"))),
        ]
    ]
    assert flags == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert guard.in_a_row.item() == 3 and guard.total.item() == 3


def test_nan_loss_is_not_applied_and_stops_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert run_train(tmp_path, "train.max_steps=4", "train.validate_every=4") == 0
    good = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    real_loss = loop.batch_loss_sum
    monkeypatch.setattr(
        loop, "batch_loss_sum", lambda *args: real_loss(*args) * float("nan")
    )  # every step from now on has a NaN loss and NaN gradients
    overrides = ("train.max_steps=40", "train.validate_every=2", "train.max_bad_steps=3")
    assert run_train(tmp_path, *overrides, flags=("--resume",)) == 1
    line = the_error_line(capsys.readouterr().err)
    assert "training diverged: the last 4 steps (up to step 8)" in line

    # Step 6 was validated and saved (2 bad steps < 3): same weights and optimiser state as step 4.
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 6
    for name, tensor in good["model"].items():
        assert torch.equal(last["model"][name], tensor), name
    for index, state in good["optimizer"]["state"].items():
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(last["optimizer"]["state"][index][key], state[key]), key
    assert not (tmp_path / "checkpoints" / "step_0000008.pt").exists()


def test_one_bad_step_is_skipped_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real_loss, calls = loop.batch_loss_sum, []

    def nan_once(*args: Any) -> torch.Tensor:
        calls.append(1)
        return real_loss(*args) * (float("nan") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(loop, "batch_loss_sum", nan_once)
    assert run_train(tmp_path, "train.max_steps=6", "train.validate_every=6") == 0
    assert "skipped 1 update(s) with a non-finite or exploded loss" in capsys.readouterr().out
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 6 and all_finite(last["model"])
    assert all(state["step"] == 5 for state in last["optimizer"]["state"].values())  # 6 - 1 skip


# --- checkpoint writes that fail -------------------------------------------------------------------


class FullDisk:
    """A file that accepts `room` bytes, then fails like a full disk."""

    def __init__(self, file: Any, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        self.room -= len(data)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.file.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def test_full_disk_during_a_checkpoint_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert run_train(tmp_path, "train.max_steps=2", "train.validate_every=2") == 0
    before = checkpoint_files(tmp_path)
    real_fdopen = os.fdopen

    def fdopen_on_a_full_disk(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = real_fdopen(fd, mode, *args, **kwargs)
        return FullDisk(file, room=50_000) if "w" in mode else file

    monkeypatch.setattr(checkpoint.os, "fdopen", fdopen_on_a_full_disk)
    assert (
        run_train(tmp_path, "train.max_steps=4", "train.validate_every=2", flags=("--resume",)) == 2
    )
    line = the_error_line(capsys.readouterr().err)
    assert "cannot write checkpoint" in line and "step_0000004.pt" in line
    assert "No space left on device" in line
    assert checkpoint_files(tmp_path) == before  # previous checkpoints intact, no temporary file
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2


def test_permission_denied_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", refuse)
    with pytest.raises(CheckpointError, match=r"x\.pt'.*Permission denied"):
        save_checkpoint({"model": {}}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path: Path) -> None:
    assert run_train(tmp_path, "train.max_steps=2", "train.validate_every=2") == 0
    signal_file = tmp_path.parent / f"{tmp_path.name}.paused"
    environment = {**os.environ, "PAUSE_AT_SAVE": "2", "PAUSE_SIGNAL": str(signal_file)}
    environment["PYTHONPATH"] = str(ROOT)
    argv = train_argv(tmp_path, "train.max_steps=4", "train.validate_every=2", flags=("--resume",))
    child = subprocess.Popen(  # pauses writing last.pt (the 2nd save of step 4)
        [sys.executable, str(ROOT / "tests" / "fault_runner.py"), *argv],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not signal_file.exists():
            assert child.poll() is None, "the child ended before pausing"
            assert time.monotonic() < deadline, "the child never reached the checkpoint write"
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    checkpoints = tmp_path / "checkpoints"
    assert list(checkpoints.glob(".last.pt.*.tmp"))  # the half-written file it was killed in
    assert load_checkpoint(checkpoints / "last.pt")["step"] == 2  # the previous one, loadable

    assert (
        run_train(tmp_path, "train.max_steps=4", "train.validate_every=2", flags=("--resume",)) == 0
    )
    assert load_checkpoint(checkpoints / "last.pt")["step"] == 4
    assert not list(checkpoints.glob(".*.tmp"))  # resume cleared the leftover


# --- one run directory, one process ----------------------------------------------------------------


def test_a_run_directory_in_use_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with RunDirLock(tmp_path):
        assert run_train(tmp_path, "train.max_steps=2") == 2
    assert "is in use by another train.py (pid" in the_error_line(capsys.readouterr().err)
    assert run_train(tmp_path, "train.max_steps=2", "train.validate_every=2") == 0  # released


def test_two_processes_started_at_once_on_one_run_directory(tmp_path: Path) -> None:
    argv = train_argv(tmp_path, "train.max_steps=20", "train.validate_every=20")
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *argv],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [child.communicate(timeout=300) for child in children]
    codes = sorted(child.returncode for child in children)
    assert codes == [0, 2], results
    loser_err = next(
        err for child, (_, err) in zip(children, results, strict=True) if child.returncode == 2
    )
    assert "in use by another train.py" in loser_err or "already holds a run" in loser_err
    assert "Traceback" not in loser_err
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 20


# --- resuming --------------------------------------------------------------------------------------


def test_resume_of_a_finished_run_trains_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert run_train(tmp_path, "train.max_steps=2", "train.validate_every=2") == 0
    before = checkpoint_files(tmp_path)
    capsys.readouterr()
    assert run_train(tmp_path, "train.max_steps=2", flags=("--resume",)) == 0
    assert "already finished at step 2" in capsys.readouterr().out
    assert checkpoint_files(tmp_path) == before


def test_resume_after_a_crash_hides_the_orphaned_tensorboard_events(tmp_path: Path) -> None:
    assert run_train(tmp_path, "train.max_steps=8", "train.validate_every=4") == 0
    checkpoints = tmp_path / "checkpoints"
    # As if the process had died after logging step 8 but before its checkpoint: the last
    # checkpoint on disk is the one of step 4, and events of steps 5-8 are orphans.
    (checkpoints / "last.pt").write_bytes((checkpoints / "step_0000004.pt").read_bytes())
    assert (
        run_train(tmp_path, "train.max_steps=8", "train.validate_every=4", flags=("--resume",)) == 0
    )
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [2, 4, 6, 8]
    assert [event.step for event in events.Scalars("valid/bleu")] == [4, 8]
