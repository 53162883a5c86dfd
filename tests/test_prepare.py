"""Prepared training data: the same ids as encoding directly, one cache reused or rebuilt exactly
when it should be, damaged caches never read, resume without re-encoding, the tokenizer sample."""

from __future__ import annotations

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import train
from transformer.commands import prepare as prepare_command
from transformer.config import DataConfig, SplitsConfig, TokenizerConfig, load_config
from transformer.data import cache_lock, prepare
from transformer.data.batching import TokenBatchSampler, make_loader
from transformer.data.loading import DataError, PairFilter, ParallelText, encode_split, load_corpus
from transformer.data.prepare import PreparedData, cache_root, prepare_data
from transformer.tokenization.tokenizer import EOS_ID, reservoir_sample, train_tokenizers

ROOT = Path(__file__).parent.parent
WORDS = "the a dog cat runs sleeps big small red green house tree man woman child".split()
MAX_POSITIONS = 64


def sentence(k: int, length: int) -> str:
    return " ".join(WORDS[(k * 7 + i * 3) % len(WORDS)] for i in range(length))


def write_corpus(directory: Path, pairs: int = 40) -> Path:
    """train.{en,de}.gz with an empty pair and a very long pair, plus small val/test files."""
    directory.mkdir(parents=True, exist_ok=True)
    en = [sentence(k, 1 + k % 9) for k in range(pairs)]
    de = [sentence(k + 1, 1 + (k * 5) % 11) for k in range(pairs)]
    en[3], de[7] = "", sentence(0, 80)  # dropped: empty; longer than max_length
    for lang, lines in (("en", en), ("de", de)):
        data = "".join(line + "\n" for line in lines).encode()
        (directory / f"train.{lang}.gz").write_bytes(gzip.compress(data))
        for split in ("val", "test"):
            (directory / f"{split}.{lang}").write_text("\n".join(lines[:5]) + "\n")
    return directory


def data_config(corpus: Path, **changes: object) -> DataConfig:
    config = DataConfig(
        dataset=str(corpus),
        splits=SplitsConfig("train", "val", "test"),
        max_length=40,
        tokenizer=TokenizerConfig(vocab_size=300, min_frequency=1),
    )
    return replace(config, **changes)


def prepared(config: DataConfig, root: Path, **kwargs: object) -> PreparedData:
    return prepare_data(config, MAX_POSITIONS, root, **kwargs)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 6 pairs, so that tiny corpora go through several."""
    monkeypatch.setattr(prepare, "CHUNK_PAIRS", 6)


def test_prepared_split_holds_the_ids_of_direct_encoding_in_order(
    tmp_path: Path, small_chunks: None
) -> None:
    config = data_config(write_corpus(tmp_path / "corpus"))
    result = prepared(config, tmp_path / "cache")
    text = load_corpus(config)["train"]
    tokenizers = train_tokenizers(text.source, text.target, config.tokenizer)
    assert result.tokenizers.to_json() == tokenizers.to_json()  # sample = all: same tokenizer
    direct = encode_split(
        text, tokenizers, max_length=40, max_positions=MAX_POSITIONS, drop=True, name="train"
    )
    train = result.splits["train"]
    assert len(train) == len(direct) == 38  # the empty and the long pair are dropped
    assert train.src_ids.dtype == torch.uint16  # a 300-entry vocabulary fits in 2 bytes
    assert torch.equal(train.src_lengths, direct.src_lengths)
    assert torch.equal(train.tgt_lengths, direct.tgt_lengths)
    for i in range(len(train)):
        for mapped, in_memory in zip(train[i], direct[i], strict=True):
            assert mapped.dtype == torch.long and torch.equal(mapped, in_memory)
    # The batches of a seed are those of the in-memory split (as before preparation existed).
    mapped, memory = (
        TokenBatchSampler(s.src_lengths, s.tgt_lengths, 60, seed=5) for s in (train, direct)
    )
    for epoch in range(2):
        mapped.set_epoch(epoch), memory.set_epoch(epoch)
        assert list(mapped) == list(memory)
    meta = json.loads((result.directory / "meta.json").read_text())
    assert (meta["empty"], meta["too_long"], meta["tokenizer_sample"]["used"]) == (1, 1, 40)


def test_source_eos_is_part_of_the_prepared_ids_and_of_the_fingerprint(tmp_path: Path) -> None:
    """model.source_eos (imported OPUS-MT models) ends every source with EOS: a prepared split of
    its own, whose sources are those without it plus the EOS, and given tokenizers unchanged."""
    config = data_config(write_corpus(tmp_path / "corpus"))
    plain = prepared(config, tmp_path / "cache")
    given = plain.tokenizers
    with_eos = prepared(config, tmp_path / "cache", tokenizers=given, source_eos=True)
    assert with_eos.directory != plain.directory and not given.source_eos
    assert with_eos.tokenizers.source_eos
    for i in range(len(plain.splits["train"])):
        (src, tgt), (src_eos, tgt_eos) = plain.splits["train"][i], with_eos.splits["train"][i]
        assert src_eos.tolist() == [*src.tolist(), EOS_ID] and torch.equal(tgt, tgt_eos)
    first_validation = with_eos.splits["validation"][0][0].tolist()
    assert first_validation[-1] == EOS_ID


def test_max_length_ratio_drops_unbalanced_pairs_and_counts_them() -> None:
    text = ParallelText(["a b", "a b c d e f", "a"], ["x y", "x", "x y"])
    source = [[5] * len(s.split()) for s in text.source]  # one id per word
    target = [[6] * len(t.split()) for t in text.target]
    pair_filter = PairFilter(max_length=None, max_positions=64, max_length_ratio=2.5)
    assert pair_filter.usable(text, source, target) == [0, 2]  # 6:1 is over 2.5, 1:2 is not
    assert pair_filter.bad_ratio == 1
    assert "1 over data.max_length_ratio=2.5" in pair_filter.summary("train")
    assert PairFilter(None, 64).usable(text, source, target) == [0, 1, 2]  # 0 = off


def test_a_second_preparation_reuses_the_cache_and_unrelated_settings_do_not_move_it(
    tmp_path: Path,
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    overrides = [f"data.dataset={corpus}", "data.splits.validation=val", "data.splits.test=test"]
    overrides += [f"train.run_dir={tmp_path / 'run'}", "data.tokenizer.vocab_size=300"]
    config = load_config(ROOT / "configs" / "tiny.yaml", overrides)
    first = prepare_data(config.data, 64, cache_root(config))
    assert first.prepared_now and first.directory.parent == tmp_path / "run" / "prepared"
    changed = load_config(ROOT / "configs" / "tiny.yaml", [*overrides, "train.lr=1e-4"])
    again = prepare_data(changed.data, 64, cache_root(changed))
    assert not again.prepared_now and again.directory == first.directory


@pytest.mark.parametrize(
    "change",
    ["corpus file", "tokenizer", "max_length", "max_length_ratio", "max_positions", "sample_size"],
)
def test_what_changes_the_ids_rebuilds(tmp_path: Path, change: str) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    config, positions = data_config(corpus), MAX_POSITIONS
    first = prepared(config, tmp_path / "cache")
    if change == "corpus file":
        with gzip.open(corpus / "train.de.gz", "at"):  # an empty member: size and mtime change
            pass
        os.utime(corpus / "train.de.gz", ns=(1, 1))
    elif change == "tokenizer":
        config = replace(config, tokenizer=replace(config.tokenizer, vocab_size=290))
    elif change == "max_length":
        config = replace(config, max_length=30)
    elif change == "max_length_ratio":
        config = replace(config, max_length_ratio=3.0)
    elif change == "sample_size":
        config = replace(config, tokenizer=replace(config.tokenizer, sample_size=10))
    else:
        positions = 32
    second = prepare_data(config, positions, tmp_path / "cache")
    assert second.prepared_now and second.directory != first.directory


def test_a_truncated_file_is_detected_and_prepared_again(tmp_path: Path, capsys) -> None:
    config = data_config(write_corpus(tmp_path / "corpus"))
    first = prepared(config, tmp_path / "cache")
    ids = first.directory / "tgt.ids"
    expected = first.splits["train"][5][1]
    del first  # unmap before damaging the file
    ids.write_bytes(ids.read_bytes()[:-6])
    second = prepared(config, tmp_path / "cache")
    assert "is incomplete or damaged (tgt.ids has" in capsys.readouterr().out
    assert second.prepared_now and torch.equal(second.splits["train"][5][1], expected)


def test_an_index_that_disagrees_with_the_ids_is_detected(tmp_path: Path, capsys) -> None:
    config = data_config(write_corpus(tmp_path / "corpus"))
    directory = prepared(config, tmp_path / "cache").directory
    lengths = torch.from_file(str(directory / "src.lengths"), size=38, dtype=torch.int32).clone()
    lengths[0] += 1  # same size on disk, wrong content
    (directory / "src.lengths").write_bytes(lengths.numpy().tobytes())
    assert prepared(config, tmp_path / "cache").prepared_now
    assert "the src index does not add up" in capsys.readouterr().out


def damage_in_place(path: Path, fill: bytes | None = None) -> None:
    """Overwrite 64 bytes in the middle of a file, its size unchanged (a bad copy, a disk error)."""
    data = bytearray(path.read_bytes())
    middle = (len(data) // 2 - 32) // 4 * 4  # on an id boundary
    data[middle : middle + 64] = fill * (64 // len(fill)) if fill else os.urandom(64)
    path.write_bytes(bytes(data))


def test_a_damaged_file_of_the_right_size_is_detected_and_prepared_again(
    tmp_path: Path, capsys
) -> None:
    config = data_config(write_corpus(tmp_path / "corpus"))
    first = prepared(config, tmp_path / "cache")
    expected = [first.splits["train"][i] for i in range(len(first.splits["train"]))]
    damage_in_place(first.directory / "tgt.ids")
    second = prepared(config, tmp_path / "cache")
    assert "tgt.ids does not match its sha256 in meta.json" in capsys.readouterr().out
    assert second.prepared_now and second.directory == first.directory
    for i, (src, tgt) in enumerate(expected):
        assert torch.equal(second.splits["train"][i][0], src)
        assert torch.equal(second.splits["train"][i][1], tgt)


def test_ids_damaged_during_a_run_are_refused_naming_the_directory(tmp_path: Path) -> None:
    """Bytes changed after the check on opening (the run reads the files throughout): the batch
    reader refuses an id outside the vocabulary, in one line, before the model sees it."""
    config = data_config(write_corpus(tmp_path / "corpus"))
    result = prepared(config, tmp_path / "cache")
    train = result.splits["train"]
    damage_in_place(result.directory / "tgt.ids", fill=b"\xff\xff")  # id 65535 > 300
    sampler = TokenBatchSampler(train.src_lengths, train.tgt_lengths, 10_000, seed=1)
    with pytest.raises(DataError, match=f"{result.directory}: a target token id 65535 is outside"):
        list(make_loader(train, sampler))


@pytest.mark.parametrize("case", ["empty files", "every pair too long"])
def test_an_empty_training_split_stops_with_one_line_and_exit_2(
    tmp_path: Path, capsys, case: str
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    overrides = ["data.max_length=1"] if case == "every pair too long" else []
    if case == "empty files":
        for lang in ("en", "de"):
            (corpus / f"train.{lang}.gz").write_bytes(gzip.compress(b""))
    argv = ["--config", str(ROOT / "configs" / "tiny.yaml"), f"data.dataset={corpus}"]
    argv += ["data.splits.validation=val", "data.splits.test=test", *overrides]
    argv += [f"train.run_dir={tmp_path / 'run'}", "data.tokenizer.vocab_size=300"]
    expected = {
        "empty files": f"the training split is empty: no sentence pairs in {corpus}",
        "every pair too long": "no usable training pairs: train (",
    }[case]
    for command in (prepare_command.main, train.main):
        capsys.readouterr()
        assert command(argv) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1].startswith(f"error: {expected}"), err
        assert "Traceback" not in err
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file()]  # nothing left behind


def test_a_full_disk_is_one_message_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(prepare._SideWriter, "append", disk_full)
    with pytest.raises(DataError, match="No space left on device.*data.cache_dir"):
        prepared(data_config(write_corpus(tmp_path / "corpus")), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # not even the directory it made for the cache


KILLED_PREPARATION = """
import os, signal, sys
from pathlib import Path
from transformer.data import cache_lock, prepare
from transformer.config import DataConfig, SplitsConfig, TokenizerConfig

prepare.CHUNK_PAIRS = 6
real_append = prepare._SideWriter.append
def append_then_die(self, sequences):
    real_append(self, sequences)
    if self.tokens > 40:  # a few chunks written: the process dies without any cleanup
        os.kill(os.getpid(), signal.SIGKILL)
prepare._SideWriter.append = append_then_die
config = DataConfig(dataset=sys.argv[1], splits=SplitsConfig("train", "val", "test"),
    max_length=40, tokenizer=TokenizerConfig(vocab_size=300, min_frequency=1))
prepare.prepare_data(config, 64, Path(sys.argv[2]))
"""


def test_a_preparation_killed_half_way_is_never_trusted(tmp_path: Path) -> None:
    corpus, cache = write_corpus(tmp_path / "corpus"), tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_PREPARATION, str(corpus), str(cache)], env=env, check=False
    )
    assert killed.returncode == -signal.SIGKILL
    lock, leftover = sorted(cache.iterdir())  # its lock, and its half-written directory
    assert lock.name.startswith(".train-") and lock.name.endswith(".lock")
    assert leftover.name.startswith(".train-") and ".tmp-" in leftover.name  # not a cache name
    again = prepared(data_config(corpus), cache)
    assert again.prepared_now and len(again.splits["train"]) == 38
    assert [p.name for p in cache.iterdir()] == [again.directory.name]  # leftovers removed


PREPARATION_HELD_AT_THE_TOKENIZER = """
import sys, time
from pathlib import Path
from transformer.data import cache_lock, prepare
from transformer.config import DataConfig, SplitsConfig, TokenizerConfig

real_sample_and_train = prepare._sample_and_train
def sample_and_train_when_released(*args):
    print("holding the lock", flush=True)
    deadline = time.monotonic() + 120
    while not Path(sys.argv[3]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return real_sample_and_train(*args)
prepare._sample_and_train = sample_and_train_when_released
config = DataConfig(dataset=sys.argv[1], splits=SplitsConfig("train", "val", "test"),
    max_length=40, tokenizer=TokenizerConfig(vocab_size=300, min_frequency=1))
print("directory:", prepare.prepare_data(config, 64, Path(sys.argv[2])).directory, flush=True)
"""


def wait_for(path: Path, text: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while text not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, f"{path} never said {text!r}"
        time.sleep(0.05)


def test_two_processes_preparing_at_once_share_one_preparation(tmp_path: Path) -> None:
    """The first takes the lock and trains; the second says whom it waits for, then reuses."""
    corpus, cache, release = write_corpus(tmp_path / "corpus"), tmp_path / "cache", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", PREPARATION_HELD_AT_THE_TOKENIZER, str(corpus), str(cache)]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    processes = []
    for log, wait_text in zip(logs, ["holding the lock", "Waiting for process"], strict=True):
        with open(log, "w") as out:
            processes.append(
                subprocess.Popen([*command, str(release)], stdout=out, stderr=out, env=env)
            )
        wait_for(log, wait_text)
    release.touch()
    assert [process.wait(timeout=120) for process in processes] == [0, 0]
    first, second = (log.read_text() for log in logs)
    assert f"Waiting for process {processes[0].pid} on " in second
    assert "Tokenizer: training on" in first and "Tokenizer: training on" not in second
    assert "holding the lock" not in second and "reused" in second
    (directory,) = {line for line in (first + second).splitlines() if line.startswith("directory:")}
    assert [p.name for p in cache.iterdir()] == [Path(directory.split()[1]).name]


def test_a_lock_whose_owner_shows_no_life_is_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """An owner on another host cannot be asked whether it lives: its heartbeat is watched."""
    monkeypatch.setattr(cache_lock, "STALE_S", 0.5)
    lock = tmp_path / ".train-0.lock"
    lock.mkdir()
    (lock / "owner").write_text("elsewhere 123 0a1b 2024-01-01T00:00:00 7\n")
    started = time.monotonic()
    with cache_lock.CacheLock(lock, "train-0"):
        owner = (lock / "owner").read_text()
        assert owner.startswith(f"{cache_lock.HOST} {os.getpid()} ")
    assert time.monotonic() - started >= 0.5 and not lock.exists()
    err = capsys.readouterr().err
    assert "Waiting for process 123 on elsewhere, which has been preparing train-0" in err
    assert "process 123 on elsewhere has shown no sign of life" in err


def test_resume_maps_the_prepared_data_without_encoding_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus", pairs=60)
    argv = ["--config", str(ROOT / "configs" / "tiny.yaml"), f"train.run_dir={tmp_path / 'run'}"]
    argv += [f"data.dataset={corpus}", "data.splits.validation=val", "data.splits.test=test"]
    argv += ["model.d_model=32", "model.n_heads=2", "model.d_ff=64", "train.device=cpu"]
    argv += ["data.tokenizer.vocab_size=300", "train.threads=1", "train.validate_every=2"]
    assert train.main([*argv, "train.max_steps=1"]) == 0

    def no_preparation(*args: object) -> None:
        raise AssertionError("the corpus was prepared again")

    monkeypatch.setattr(prepare, "write_prepared", no_preparation)
    assert train.main([*argv, "train.max_steps=2", "--resume"]) == 0
    assert train.main([*argv, "train.max_steps=1", "--overwrite"]) == 0  # a new run: the same


def test_prepare_command_prints_the_cache_and_train_uses_it(tmp_path: Path, capsys) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    argv = ["--config", str(ROOT / "configs" / "tiny.yaml"), f"data.dataset={corpus}"]
    argv += ["data.splits.validation=val", "data.splits.test=test", "data.tokenizer.vocab_size=300"]
    argv += [f"data.cache_dir={tmp_path / 'shared'}"]
    assert prepare_command.main(argv) == 0
    out = capsys.readouterr().out
    assert (
        str(tmp_path / "shared" / "train-") in out
        and "MB); transformer train with this config" in out
    )
    assert prepare_command.main([*argv, "data.dataset=nowhere/at/all"]) == 2
    assert "no such file or directory" in capsys.readouterr().err


# --- the tokenizer's sample ---------------------------------------------------------------------


def chunks_of(pairs: list[tuple[str, str]], size: int):
    for start in range(0, len(pairs), size):
        part = pairs[start : start + size]
        yield [s for s, _ in part], [t for _, t in part]


def test_reservoir_sample_is_seeded_uniform_and_in_corpus_order() -> None:
    pairs = [(f"s{i}", f"t{i}") for i in range(1000)]
    sample = reservoir_sample(chunks_of(pairs, 64), size=100, seed=3)
    assert sample.seen == 1000 and len(sample.source) == 100
    assert sample == reservoir_sample(chunks_of(pairs, 64), size=100, seed=3)  # deterministic
    assert sample != reservoir_sample(chunks_of(pairs, 64), size=100, seed=4)
    indices = [int(s[1:]) for s in sample.source]
    assert indices == sorted(indices) and sample.target == [f"t{i}" for i in indices]
    assert sum(i >= 500 for i in indices) in range(30, 71)  # not just the first pairs


def test_sample_size_over_the_corpus_uses_all_of_it_in_order() -> None:
    pairs = [(f"s{i}", f"t{i}") for i in range(50)]
    sample = reservoir_sample(chunks_of(pairs, 7), size=80)
    assert sample.source == [s for s, _ in pairs] and sample.seen == 50


def test_the_sampled_tokenizer_is_the_same_on_every_preparation(tmp_path: Path, capsys) -> None:
    config = data_config(write_corpus(tmp_path / "corpus"))
    config = replace(config, tokenizer=replace(config.tokenizer, sample_size=12))
    first = prepared(config, tmp_path / "a")
    assert "Tokenizer: training on 12 of 40 pairs" in capsys.readouterr().out
    assert prepared(config, tmp_path / "b").tokenizers.to_json() == first.tokenizers.to_json()
