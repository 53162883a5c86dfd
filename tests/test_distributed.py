"""Data-parallel training on CPU with Gloo and 2 processes: the same maths as one process, one set
of files, validation split across ranks, exact resume, and what happens when a rank dies.

Most runs start their ranks as new (spawned) Python processes with torchrun's environment (RANK,
WORLD_SIZE, MASTER_ADDR, ...), which exercises the same code as torchrun does; they are not forked,
because a fork after earlier tests started OpenMP threads can hang. The fault tests launch real
`torchrun`, whose agent is what notices a dead worker and restarts the group."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import FAST as TRAIN_FAST
from test_train import TINY

import train
import translate
from transformer.checkpoint import load_model
from transformer.config import load_config
from transformer.data import prepare
from transformer.data.batching import TokenBatchSampler
from transformer.data.prepare import prepare_data
from transformer.training import distributed, loop, start
from transformer.training.validation import validate

ROOT = Path(__file__).parent.parent
# The shared tiny settings, plus a bound on how long a rank waits for the others.
FAST = [*TRAIN_FAST, "train.dist_timeout_s=60"]
WAIT_S = 240  # generous: other jobs share the machine's two cores


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_rank(rank: int, world_size: int, port: int) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)


def _rank_main(rank: int, world_size: int, port: int, overrides: list[str], resume: bool) -> None:
    """One rank, as torchrun would start it; reports what it saw to <run_dir>/rank<r>.json."""
    _as_rank(rank, world_size, port)
    config = load_config(TINY, overrides)
    prepared = []  # what start_run got from prepare_data: (directory, prepared here or reused)
    real_prepare = start.prepare_data

    def noted_prepare(*args: object, **kwargs: object) -> object:
        result = real_prepare(*args, **kwargs)
        prepared.append((str(result.directory), result.prepared_now))
        return result

    start.prepare_data = noted_prepare
    result = loop.train(config, resume=resume)
    validation = result.last_validation
    report = {
        "prepared": prepared,
        "pid": os.getpid(),
        "step": result.state.step,
        "hypotheses": validation.hypotheses if validation else None,
        "bleu": validation.scores.bleu if validation else None,
        "loss": validation.loss if validation else None,
    }
    Path(config.train.run_dir, f"rank{rank}.json").write_text(json.dumps(report))


def _rank_cli(rank: int, world_size: int, port: int, argv: list[str]) -> None:
    _as_rank(rank, world_size, port)
    sys.exit(train.main(argv))


def start_ranks(target: object, *arguments: object) -> list[int | None]:
    """Run target(rank, 2, port, *arguments) in 2 new processes; their exit codes."""
    # spawn, not fork: forking a process whose OpenMP thread pool is running (every earlier test
    # in this pytest process) can deadlock the child.
    port, context = free_port(), multiprocessing.get_context("spawn")
    ranks = [context.Process(target=target, args=(r, 2, port, *arguments)) for r in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(WAIT_S)
    for process in ranks:
        if process.is_alive():
            process.kill()
    return [process.exitcode for process in ranks]


AVERAGE = ("train.ema_decay=0.5",)


def run_ranks(run_dir: Path, *overrides: str, resume: bool = False) -> list[dict]:
    """Train with 2 ranks; returns each rank's report."""
    arguments = [f"train.run_dir={run_dir}", *FAST, *overrides]
    assert start_ranks(_rank_main, arguments, resume) == [0, 0]
    reports = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in range(2)]
    for r in range(2):
        (run_dir / f"rank{r}.json").unlink()
    return reports


SHORT = ("decode.max_len_a=0", "decode.max_len_b=4")  # quick validations of an untrained model


def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """4 optimiser steps on 2 ranks, dropout off, validated at the end, with a moving average of
    the weights (each rank keeps its own; they must agree)."""
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    reports = run_ranks(
        run_dir, "train.max_steps=4", "train.validate_every=4", "model.dropout=0", *AVERAGE
    )
    return run_dir, reports


def test_two_ranks_take_the_steps_of_one_process_accumulating_two_batches(
    two_ranks: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    # Batch k of an epoch goes to rank k % 2, so step s of the 2-rank run sees batches 2s and
    # 2s+1: the very batches that one process accumulates for its step s.
    run_dir, reports = two_ranks
    assert [report["step"] for report in reports] == [4, 4]
    config = load_config(
        TINY,
        [
            f"train.run_dir={tmp_path / 'one'}",
            *FAST,
            "train.max_steps=4",
            "train.validate_every=4",
            "model.dropout=0",
            "train.accumulate=2",
            *AVERAGE,
        ],
    )
    loop.train(config)
    one, two = last_weights(tmp_path / "one"), last_weights(run_dir)
    assert one.keys() == two.keys()
    initial = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert initial["sampler"]["world_size"] == 2
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(one[name], torch.zeros_like(one[name])) for name in one)


def test_rank_zero_alone_writes_one_set_of_files_that_translate(
    two_ranks: tuple[Path, list[dict]], capsys: pytest.CaptureFixture
) -> None:
    run_dir, reports = two_ranks
    events = sorted(run_dir.glob("events.out.tfevents.*"))
    assert events, "no TensorBoard events"
    writers = {path.name.split(".")[-2] for path in events}  # events.out.tfevents.TIME.HOST.PID.N
    assert writers == {str(reports[0]["pid"])}  # rank 0's process, and only it
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["checkpoints", "config.yaml", "prepared", "tokenizer", "train.lock"]
        + [p.name for p in events]
    )
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt", "step_0000004.pt"]  # no stray temporary files
    payload = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert payload["step"] == 4 and len(payload["rng_by_rank"]) == 2
    capsys.readouterr()
    assert translate.main(["-c", str(run_dir / "checkpoints" / "last.pt"), "twenty-one"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_the_first_rank_prepares_the_data_and_both_map_the_same_files(
    two_ranks: tuple[Path, list[dict]],
) -> None:
    run_dir, reports = two_ranks
    (directory, prepared_now), (other_directory, other_prepared_now) = (
        report["prepared"][0] for report in reports
    )
    assert (prepared_now, other_prepared_now) == (True, False)  # rank 1 waited, then reused it
    assert directory == other_directory and Path(directory).parent == run_dir / "prepared"
    assert [p.name for p in (run_dir / "prepared").iterdir()] == [Path(directory).name]


def _rank_on_a_node_of_its_own(rank: int, world_size: int, port: int, work: str) -> None:
    """One rank as the first process of a node of its own (LOCAL_RANK 0) whose cache directory is
    its own (node-local disks): reports how many tokenizers it trained and what it prepared."""
    _as_rank(rank, world_size, port)
    os.environ["LOCAL_RANK"] = "0"
    config = load_config(TINY, [*FAST, f"data.cache_dir={work}/cache{rank}"])
    trainings = []
    real_sample_and_train = prepare._sample_and_train

    def counted(*args: object) -> object:
        trainings.append(rank)
        return real_sample_and_train(*args)

    prepare._sample_and_train = counted
    with distributed.process_group("cpu", 60):
        prepared = start.prepared_data(config, None)
    meta = json.loads((prepared.directory / "meta.json").read_text())
    report = {
        "trainings": len(trainings),
        "tokenizers": prepared.tokenizers.to_json(),
        "directory": prepared.directory.name,
        "sha256": meta["sha256"],
    }
    Path(work, f"rank{rank}.json").write_text(json.dumps(report))


def test_ranks_with_disks_of_their_own_encode_with_rank_zeros_tokenizers(tmp_path: Path) -> None:
    """Rank 0 trains the tokenizers and sends them: both nodes prepare the same files, though
    each prepares its own copy, without training a tokenizer of its own."""
    assert start_ranks(_rank_on_a_node_of_its_own, str(tmp_path)) == [0, 0]
    first, second = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert (first["trainings"], second["trainings"]) == (1, 0)
    assert first["tokenizers"] == second["tokenizers"]
    assert first["directory"] == second["directory"]  # named as if trained there: one name
    assert first["sha256"] == second["sha256"]  # the same ids, byte for byte
    assert (tmp_path / "cache1" / second["directory"] / "src.ids").is_file()


def test_validation_on_two_ranks_equals_one_process(two_ranks: tuple[Path, list[dict]]) -> None:
    run_dir, reports = two_ranks
    assert reports[0]["hypotheses"] == reports[1]["hypotheses"]  # gathered on every rank
    loaded = load_model(run_dir / "checkpoints" / "last.pt")
    config = loaded.config
    prepared = prepare_data(
        config.data, config.model.max_positions, run_dir / "prepared", loaded.tokenizers
    )
    splits, texts = prepared.splits, prepared.texts
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each rank: the same kernels, the same rounding
    try:
        single = validate(
            loaded.model,
            splits["validation"],
            texts["validation"].target,
            loaded.tokenizers,
            config,
            torch.device("cpu"),
        )
    finally:
        torch.set_num_threads(threads)
    assert len(single.hypotheses) == 60
    assert reports[0]["hypotheses"] == single.hypotheses
    assert reports[0]["bleu"] == single.scores.bleu
    assert reports[0]["loss"] == pytest.approx(single.loss, rel=1e-6)


def test_resumed_two_rank_run_is_bitwise_identical_to_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    # Each rank's dropout stream resumes; validations decode 4 tokens at most (only weights count).
    common = ("train.validate_every=3", "model.dropout=0.1", *SHORT)
    run_ranks(tmp_path / "straight", "train.max_steps=6", *common)
    run_ranks(tmp_path / "split", "train.max_steps=3", *common)
    resumed = run_ranks(tmp_path / "split", "train.max_steps=6", *common, resume=True)
    assert [report["prepared"][0][1] for report in resumed] == [False, False]  # nothing encoded
    straight, split = last_weights(tmp_path / "straight"), last_weights(tmp_path / "split")
    for name in straight:
        assert torch.equal(straight[name], split[name]), name

    # Another world size continues, with a warning, from the same place in the epoch.
    config = load_config(
        TINY, [f"train.run_dir={tmp_path / 'split'}", *FAST, "train.max_steps=8", *common]
    )
    with pytest.warns(UserWarning, match="saved with 2 processes and continues with 1"):
        result = loop.train(config, resume=True)
    assert result.state.step == 8


def test_sampler_state_moves_to_the_same_place_for_another_world_size() -> None:
    lengths = torch.randint(1, 30, (400,)).tolist()
    ranks = [TokenBatchSampler(lengths, lengths, 200, rank=r, world_size=2) for r in range(2)]
    done = [iter(sampler) for sampler in ranks]
    seen = [next(batches) for _ in range(5) for batches in done]  # 5 batches on each rank
    one = TokenBatchSampler(lengths, lengths, 200)
    one.load_state_dict(ranks[0].state_dict())
    assert one.position == 10
    full = list(TokenBatchSampler(lengths, lengths, 200))
    assert sorted(map(tuple, seen)) == sorted(map(tuple, full[:10]))
    assert list(one) == full[10:]
    with pytest.raises(ValueError, match="batches per epoch"):
        TokenBatchSampler(lengths, lengths, 400).load_state_dict(ranks[0].state_dict())


def test_an_error_on_rank_zero_stops_every_rank_with_its_message(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    # Rank 0 checks the run directory alone; the other rank must not wait for it forever.
    argv = ["--config", TINY, "--resume", f"train.run_dir={tmp_path / 'none'}", *FAST]
    assert start_ranks(_rank_cli, argv) == [2, 2]
    assert capfd.readouterr().err.count("there is no") == 2


# --- faults, with real torchrun --------------------------------------------------------------------


def start_torchrun(run_dir: Path, max_restarts: int, *overrides: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        str(max_restarts),
        str(ROOT / "train.py"),
        "--config",
        TINY,
        f"train.run_dir={run_dir}",
        *FAST,
        *overrides,
    ]
    environment = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",  # a fresh store per restart (see distributed.py)
    }
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
    )


def worker_of_rank(run_dir: Path, rank: int) -> int:
    """The pid of the training process of `rank` in the run writing to `run_dir`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"train.run_dir={run_dir}".encode() in command and f"RANK={rank}".encode() in (
            environment
        ):
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} found")


def kill_rank_one_after_first_checkpoint(run_dir: Path, launcher: subprocess.Popen) -> None:
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + WAIT_S
    while not last.is_file():
        assert launcher.poll() is None, launcher.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    os.kill(worker_of_rank(run_dir, 1), signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds workers in /proc")
def test_a_killed_rank_stops_the_run_with_a_message_naming_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    launcher = start_torchrun(run_dir, 0, "train.max_steps=2000", "train.validate_every=5", *SHORT)
    try:
        kill_rank_one_after_first_checkpoint(run_dir, launcher)
        killed_at = time.monotonic()
        output, _ = launcher.communicate(timeout=WAIT_S)
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    assert time.monotonic() - killed_at < 60  # train.dist_timeout_s, not forever
    assert "rank      : 1" in output and "SIGKILL" in output, output[-3000:]
    assert "Done at step" not in output


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds workers in /proc")
def test_torchrun_restart_resumes_from_last_checkpoint_and_finishes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    launcher = start_torchrun(run_dir, 1, "train.max_steps=20", "train.validate_every=5", *SHORT)
    try:
        kill_rank_one_after_first_checkpoint(run_dir, launcher)
        output, _ = launcher.communicate(timeout=WAIT_S)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, output[-3000:]
    assert "torchrun restart 1: resuming" in output
    assert "Done at step 20." in output
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 20
