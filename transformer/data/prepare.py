"""The training split encoded once into files on disk, reused by every run, resume and rank.

    transformer prepare --config multi30k_en_de [key=value ...]

    prepared = prepare_data(config.data, config.model.max_positions, cache_root(config))
    prepared.splits["train"]  # an EncodedSplit read from disk: 8 bytes of RAM per pair (lengths)

Preparation streams the training split in chunks of 100k pairs (never the whole corpus in memory):
one pass draws a seeded reservoir sample to train the tokenizers on (`data.tokenizer.sample_size`),
a second encodes (the `tokenizers` library's batch encoding, on every core), drops what `PairFilter`
drops, and appends the ids to flat files. A prepared corpus is a directory named by a fingerprint of
everything its ids depend on: the input files (path, size, modification time) or the hub dataset's
fingerprint, the tokenizer settings (or the tokenizer itself, when a checkpoint brings one), and the
settings that change which pairs are kept (max_length, max_length_ratio, model.max_positions,
splits, carve size). Change any of them and the next run prepares a new directory; change anything
else (train.lr) and it maps the same one.

Several corpora and directions (corpora.py) are prepared into one directory, stream after stream;
a multilingual run's sources start with their target-language tag (`>>de<<`, added to the
tokenizer after it is trained), so the tag is in the ids and costs nothing at training time.

The files (per side: ids, offsets and lengths; the stream of each pair; the tokenizers; meta.json),
and how they are read back and checked, are in prepared_files.py.

Why flat files and not Arrow through `datasets`: a training step reads ~100 random pairs, which here
is two slices of a flat array each, with no per-row decoding and no Python objects; Arrow's
list<int> columns would add a second offsets array per side and `datasets.map` pickles every batch
between processes, where the `tokenizers` library already encodes on every core (fairseq's
`.bin/.idx` files are the same design).

A preparation writes into a temporary directory and renames it into place when complete, so a crash
or a full disk never leaves a directory that a later run trusts; a directory whose files do not
match the sha256 that its meta.json records (truncated, or bytes changed) is prepared again with a
message. One process prepares a directory while the others wait for it (cache_lock.py: runs sharing
data.cache_dir, the nodes of a torchrun job on a shared filesystem); a complete directory is never
removed, so a run may read it while another starts, and only a damaged one is replaced. Under
torchrun, rank 0's tokenizers (`shared_tokenizers`) are sent to every rank, so that nodes with disks
of their own still encode with one vocabulary.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from transformer.checkpoint import load_checkpoint
from transformer.config import (
    Config,
    DataConfig,
    config_from_dict,
    parse_pair,
)
from transformer.data.cache_lock import HOST, CacheLock
from transformer.data.corpora import Corpora, TrainingStream, open_corpora
from transformer.data.loading import DataError, EncodedSplit, PairFilter, ParallelText, encode_split
from transformer.data.mixture import EpochMixture
from transformer.data.pairs import CHUNK_PAIRS
from transformer.data.prepared_files import (
    DTYPES,
    FORMAT_VERSION,
    META_FILE,
    OTHER_TOKENIZERS,
    SIDES,
    TOKENIZER_DIR,
    Opened,
    check_digests,
    file_digests,
    open_prepared,
    read_meta,
    saved_tokenizers,
)
from transformer.tokenization.bpe_trainer import train_tokenizers_by_counts
from transformer.tokenization.tokenizer import (
    SAMPLE_SEED,
    LanguageError,
    TokenizerPair,
    reservoir_sample,
)

MAX_STREAMS = 256  # the streams file holds one byte per pair
PREPARED_DIR = "prepared"  # under train.run_dir, unless data.cache_dir is set


@dataclass
class PreparedData:
    """What training needs from the corpus."""

    tokenizers: TokenizerPair
    splits: dict[str, EncodedSplit]  # train (read from disk), validation, test (in memory)
    texts: dict[str, ParallelText]  # validation and test text, for scoring translations
    directory: Path  # where the prepared training split lives
    prepared_now: bool  # False when an earlier preparation was reused
    directions: list[str]  # "en-de", ...: one for a bilingual run
    # validation / test: the direction (index into `directions`) of each sentence
    sentence_directions: dict[str, torch.Tensor]
    train_streams: torch.Tensor  # (n,) uint8: the stream of each training pair
    stream_weights: list[float]  # per stream: its corpus's weight
    stream_directions: list[int]  # per stream: its direction

    def mixture(self, temperature: float) -> EpochMixture:
        """Which training pairs each epoch draws (mixture.py)."""
        return EpochMixture(
            self.train_streams, self.stream_weights, self.stream_directions, temperature
        )


def cache_root(config: Config) -> Path:
    """data.cache_dir (shared by runs), else <train.run_dir>/prepared."""
    return Path(config.data.cache_dir or Path(config.train.run_dir) / PREPARED_DIR).expanduser()


@dataclass
class SharedTokenizers:
    """Tokenizers trained once for a config (`shared_tokenizers`) and handed to other processes:
    under torchrun, rank 0 trains them and sends them to every rank (start.py), so that every node
    encodes with one vocabulary, whether the nodes share a disk or each has its own."""

    tokenizers: dict[str, str]  # TokenizerPair.to_json()
    sample: dict[str, Any]  # how they were trained (meta.json's tokenizer_sample)


def prepare_data(
    config: DataConfig,
    max_positions: int,
    root: Path,
    tokenizers: TokenizerPair | None = None,
    source_eos: bool = False,
    shared: SharedTokenizers | None = None,
) -> PreparedData:
    """The one way the project turns a corpus into training data: reuse the prepared training split
    that matches (prepare it if there is none), and encode validation and test in memory.

    `tokenizers` (e.g. from a checkpoint being resumed) are used instead of training new ones; a
    prepared split made with other tokenizers is then not reused. `shared` tokenizers, trained for
    this very config by another process, take the place of those this one would train. `source_eos`
    (model.source_eos) ends every source with EOS, so it is part of the fingerprint too."""
    corpora = open_corpora(config)
    if len(corpora.streams) > MAX_STREAMS:
        raise DataError(
            f"{len(corpora.streams)} (corpus, direction) streams; at most {MAX_STREAMS} are supported"
        )
    if shared is not None:
        tokenizers = TokenizerPair.from_json(shared.tokenizers)
    directory, (train, train_streams), prepared_now = _reuse_or_prepare(
        corpora, config, max_positions, root, tokenizers, source_eos, shared
    )
    if not prepared_now:
        print(f"Prepared training data: {directory} ({len(train)} pairs, reused)")
    tokenizers = TokenizerPair.load(directory / TOKENIZER_DIR, source_eos)
    train.refuse_ids_outside(tokenizers.src_vocab_size, tokenizers.tgt_vocab_size, str(directory))
    texts = {"validation": corpora.validation, "test": corpora.test}
    labels = {"validation": corpora.validation_directions, "test": corpora.test_directions}
    splits = {"train": train}
    for role, text in texts.items():
        languages = _target_languages(corpora, labels[role], tokenizers)
        splits[role] = encode_split(
            text,
            tokenizers,
            max_length=None,
            max_positions=max_positions,
            drop=False,
            name=role,
            tgt_lang=languages,
        )
    return PreparedData(
        tokenizers,
        splits,
        texts,
        directory,
        prepared_now,
        directions=corpora.directions,
        sentence_directions={role: torch.tensor(labels[role], dtype=torch.long) for role in labels},
        train_streams=train_streams,
        stream_weights=[stream.weight for stream in corpora.streams],
        stream_directions=corpora.stream_direction_ids(),
    )


def shared_tokenizers(
    config: DataConfig, max_positions: int, root: Path, source_eos: bool = False
) -> SharedTokenizers:
    """The tokenizers `prepare_data` would train for `config`: those of its prepared directory when
    there is one, else trained now on the same seeded sample."""
    corpora = open_corpora(config)
    directory = root / fingerprint(config, max_positions, corpora, None, source_eos)
    try:
        meta = read_meta(directory)
        check_digests(directory, meta, under=f"{TOKENIZER_DIR}/")
        saved = TokenizerPair.load(directory / TOKENIZER_DIR)
        return SharedTokenizers(saved.to_json(), meta["tokenizer_sample"])
    except (OSError, ValueError, KeyError, TypeError):  # none there, or damaged: train them
        tokenizers, sample = _train_tokenizers(corpora, config)
        return SharedTokenizers(tokenizers.to_json(), sample)


def _reuse_or_prepare(
    corpora: Corpora,
    config: DataConfig,
    max_positions: int,
    root: Path,
    tokenizers: TokenizerPair | None,
    source_eos: bool,
    shared: SharedTokenizers | None,
) -> tuple[Path, Opened, bool]:
    """The prepared directory for these settings, its split opened, and whether it was prepared now.

    Its name is the fingerprint of the settings with tokenizers trained from the corpus. Given
    tokenizers take that name when the directory there holds them (or, for `shared` ones, when
    there is none yet), else a name of their own (the fingerprint of the tokenizers)."""
    trained_name = root / fingerprint(config, max_positions, corpora, None, source_eos)
    candidates: list[tuple[Path, TokenizerPair | None]] = [(trained_name, None)]
    if tokenizers is not None:
        own_name = (
            root / fingerprint(config, max_positions, corpora, tokenizers, source_eos),
            tokenizers,
        )
        saved = saved_tokenizers(trained_name)
        if saved == tokenizers.to_json():
            pass
        elif shared is not None and saved is None:  # not there yet: prepare it under that name
            candidates.append(own_name)
        else:
            candidates = [own_name]
    for directory, named_by in candidates:
        found = _open_or_prepare(
            corpora, config, max_positions, directory, tokenizers, source_eos, shared, named_by
        )
        if found is not None:
            return directory, *found
    raise AssertionError("unreachable: a directory named by its tokenizers holds them")


def _open_or_prepare(
    corpora: Corpora,
    config: DataConfig,
    max_positions: int,
    directory: Path,
    tokenizers: TokenizerPair | None,
    source_eos: bool,
    shared: SharedTokenizers | None,
    named_by: TokenizerPair | None,
) -> tuple[Opened, bool] | None:
    """`directory` opened, and whether it was prepared now: first, under its lock, when it is
    missing or damaged. None when it is complete but holds tokenizers other than the given ones (a
    process that trained its own prepared it first)."""
    wanted = None if tokenizers is None else tokenizers.to_json()
    opened, problem = open_prepared(directory, wanted)
    if opened is not None or problem == OTHER_TOKENIZERS:
        return None if opened is None else (opened, False)
    with _preparing(directory):
        opened, problem = open_prepared(
            directory, wanted
        )  # the process we waited for may have made it
        if opened is not None or problem == OTHER_TOKENIZERS:
            return None if opened is None else (opened, False)
        if problem is not None:
            print(
                f"Prepared data in {directory} is incomplete or damaged ({problem}); preparing again"
            )
        sample = shared.sample if shared is not None and named_by is None else None
        write_prepared(
            corpora, config, max_positions, directory, tokenizers, source_eos, named_by, sample
        )
    opened, problem = open_prepared(directory, wanted)
    if opened is None:  # only if the disk changed under us; not worth a second try
        raise DataError(f"{directory}: prepared data unreadable right after writing it ({problem})")
    return opened, True


@contextmanager
def _preparing(directory: Path) -> Iterator[None]:
    """Hold `directory`'s lock (waiting for whoever holds it). An OSError (a full disk, no
    permission, data.cache_dir naming a file) becomes one DataError, and a failure leaves no empty
    directories behind (nothing half-written either: write_prepared sees to that)."""
    made = [d for d in [directory.parent, *directory.parent.parents] if not d.exists()]
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with CacheLock(directory.with_name(f".{directory.name}.lock"), str(directory)):
            yield
    except OSError as error:
        _remove_empty(made)
        raise DataError(
            f"preparing the training data in {directory.parent} failed: {error}. If the disk is "
            "full or not writable, free space or set data.cache_dir to another directory "
            "(nothing half-written was left)"
        ) from error
    except BaseException:
        _remove_empty(made)
        raise


def _remove_empty(directories: list[Path]) -> None:
    """Remove these directories, innermost first, as long as they are empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def _tagged(config: DataConfig, tokenizers: TokenizerPair | None) -> bool:
    """Whether sources start with a target-language tag: a multilingual config, or tokenizers
    (from a checkpoint) that have tags."""
    return config.multilingual or bool(tokenizers is not None and tokenizers.language_tags)


def _target_languages(
    corpora: Corpora, directions: list[int], tokenizers: TokenizerPair
) -> list[str | None] | None:
    """The tag language of each sentence (its target language), or None without tags."""
    if not tokenizers.language_tags:
        return None
    return [parse_pair(corpora.directions[d], "")[1] for d in directions]


# --- the fingerprint ------------------------------------------------------------------------------


def fingerprint(
    config: DataConfig,
    max_positions: int,
    corpora: Corpora,
    tokenizers: TokenizerPair | None,
    source_eos: bool = False,
) -> str:
    """A name for the prepared split that changes whenever its ids would."""
    inputs = fingerprint_inputs(config, max_positions, corpora, tokenizers, source_eos)
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return f"train-{digest[:16]}"


def fingerprint_inputs(
    config: DataConfig,
    max_positions: int,
    corpora: Corpora,
    tokenizers: TokenizerPair | None,
    source_eos: bool = False,
) -> dict[str, Any]:
    """Everything the prepared ids depend on (recorded in meta.json, to see why a cache moved).
    Corpus weights and data.pair_temperature are not: they change how often pairs are drawn,
    not their ids."""
    tokenizer = (
        {"trained": asdict(config.tokenizer), "sample_seed": SAMPLE_SEED}
        if tokenizers is None
        else {"given_sha256": hashlib.sha256(json.dumps(tokenizers.to_json()).encode()).hexdigest()}
    )
    return {
        "format": FORMAT_VERSION,
        "streams": [
            {
                "train": stream.source.identity(),
                "where": stream.where,
                "direction": stream.direction,
            }
            for stream in corpora.streams
        ],
        "tagged": _tagged(config, tokenizers),
        "splits": asdict(config.splits),
        "carve_size": config.carve_size,
        "max_length": config.max_length,
        "max_length_ratio": config.max_length_ratio,
        "max_positions": max_positions,
        "tokenizer": tokenizer,
        "source_eos": source_eos,
    }


# --- writing --------------------------------------------------------------------------------------


def write_prepared(
    corpora: Corpora,
    config: DataConfig,
    max_positions: int,
    directory: Path,
    tokenizers: TokenizerPair | None,
    source_eos: bool = False,
    named_by: TokenizerPair | None = None,
    sample: dict[str, Any] | None = None,
) -> None:
    """Sample, train the tokenizers (unless given), encode, clean and write `directory`, atomically:
    everything goes to a temporary directory that is renamed into place once complete. The caller
    holds the directory's lock. named_by: the tokenizers its name comes from (None: trained from
    the corpus); sample: how given tokenizers were trained, when they were (shared ones)."""
    started = time.monotonic()
    temporary = directory.with_name(f".{directory.name}.tmp-{HOST}-{os.getpid()}")
    try:
        _remove_leftovers(directory)
        temporary.mkdir()
        inputs = fingerprint_inputs(config, max_positions, corpora, named_by, source_eos)
        sample_record: dict[str, Any] = sample or {"used": None, "of": None}  # given: no sample
        total = sample_record["of"]
        if tokenizers is None:
            tokenizers, sample_record = _train_tokenizers(corpora, config)
            total = sample_record["of"]
        tokenizers.save(temporary / TOKENIZER_DIR)
        encoder = tokenizers.with_source_eos(source_eos)  # the caller's pair stays as it was
        tagged = _tagged(config, tokenizers)
        meta = _encode_into(
            temporary, corpora.streams, config, max_positions, encoder, total, tagged
        )
        meta.update(
            tokenizer_sample=sample_record,
            seconds=round(time.monotonic() - started, 1),
            fingerprint_inputs=inputs,
            sha256=file_digests(temporary),
        )
        (temporary / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        _move_into_place(temporary, directory)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # gone already when all went well
    size = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
    seconds = time.monotonic() - started
    print(
        f"Prepared training data: {directory} ({meta['pairs']} pairs, {size / 1e6:.1f} MB, "
        f"{seconds:.0f} s, {meta['seen'] / max(seconds, 1e-9):,.0f} pairs/s)"
    )


def _remove_leftovers(directory: Path) -> None:
    """What preparations of `directory` that died left behind (their temporary directories, a
    damaged copy being removed). Called under the lock: no living process is writing them."""
    for pattern in (f".{directory.name}.tmp-*", f".{directory.name}.damaged-*"):
        for leftover in directory.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _move_into_place(temporary: Path, directory: Path) -> None:
    """Rename the finished preparation to its name. Something there is a damaged copy (the caller
    found it so under the lock): renamed aside, then deleted (a process still reading it keeps its
    open files). If a complete copy appeared meanwhile (only after a lock was wrongly taken for
    stale), the rename fails, as renaming onto a non-empty directory does, and that copy stays."""
    if directory.exists():
        aside = directory.with_name(f".{directory.name}.damaged-{HOST}-{os.getpid()}")
        os.rename(directory, aside)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(temporary, directory)
    except OSError as error:
        if (
            error.errno not in (errno.ENOTEMPTY, errno.EEXIST)
            or open_prepared(directory)[0] is None
        ):
            raise
        print(f"{directory} was prepared by another process at the same time; using that copy")


def _train_tokenizers(corpora: Corpora, config: DataConfig) -> tuple[TokenizerPair, dict[str, Any]]:
    """Tokenizers trained on a seeded sample of the training split (every stream), drawn in one
    streamed pass, with the target-language tags of a multilingual config; and how they were
    trained (meta.json's tokenizer_sample)."""
    tokenizers, sample = _sample_and_train(corpora.streams, config)
    if _tagged(config, None):
        tokenizers = tokenizers.with_language_tags(t for _, t in config.directions())
    return tokenizers, sample


def _sample_and_train(
    streams: list[TrainingStream], config: DataConfig
) -> tuple[TokenizerPair, dict[str, Any]]:
    """Tokenizers trained on a seeded sample of the training split (every stream)."""
    size = config.tokenizer.sample_size
    counts = [stream.source.count() for stream in streams]
    total = None if None in counts else sum(counts)  # type: ignore[arg-type]
    every_chunk = chain.from_iterable(stream.source.chunks(CHUNK_PAIRS) for stream in streams)
    chunks = _progress(every_chunk, total, "sampling for the tokenizer")
    sample = reservoir_sample(((chunk.source, chunk.target) for chunk in chunks), size)
    if not sample.seen:
        raise DataError(_empty_split(", ".join(sorted({stream.where for stream in streams}))))
    print(
        f"Tokenizer: training on {len(sample.source):,} of {sample.seen:,} pairs "
        f"(data.tokenizer.sample_size={size:,})"
    )
    tokenizers = train_tokenizers_by_counts(sample.source, sample.target, config.tokenizer)
    return tokenizers, {"used": len(sample.source), "of": sample.seen, "seed": SAMPLE_SEED}


def _encode_into(
    directory: Path,
    streams: list[TrainingStream],
    config: DataConfig,
    max_positions: int,
    tokenizers: TokenizerPair,
    total: int | None,
    tagged: bool,
) -> dict[str, Any]:
    """Encode and clean the training split chunk by chunk, stream after stream, appending to the
    files; its meta."""
    vocab = max(tokenizers.src_vocab_size, tokenizers.tgt_vocab_size)
    dtype = "uint16" if vocab <= 2**16 else "int32"
    pair_filter = PairFilter(config.max_length, max_positions, config.max_length_ratio)
    writers = {side: _SideWriter(directory, side, DTYPES[dtype]) for side in SIDES}
    try:
        if total is None:
            counts = [stream.source.count() for stream in streams]
            total = None if None in counts else sum(counts)  # type: ignore[arg-type]
        kept_per_stream = [0] * len(streams)
        with open(directory / "streams", "wb") as stream_file:
            for number, chunk in _progress(_numbered_chunks(streams), total, "encoding"):
                direction = streams[number].direction
                source = _encode_sources(tokenizers, chunk.source, direction, tagged)
                target = tokenizers.encode_target(chunk.target)
                kept = pair_filter.usable(chunk, source, target)
                writers["src"].append([source[i] for i in kept])
                writers["tgt"].append([target[i] for i in kept])
                stream_file.write(np.full(len(kept), number, dtype=np.uint8).tobytes())
                kept_per_stream[number] += len(kept)
            stream_file.flush()
            os.fsync(stream_file.fileno())
        record = [
            {"direction": stream.direction, "where": stream.where, "pairs": kept}
            for stream, kept in zip(streams, kept_per_stream, strict=True)
        ]
    finally:
        for writer in writers.values():
            writer.close()
    where = ", ".join(sorted({stream.where for stream in streams}))
    if not pair_filter.seen:
        raise DataError(_empty_split(where))
    if not pair_filter.kept:
        raise DataError(
            f"no usable training pairs: {pair_filter.summary(f'train ({where})')}. Check the corpus, "
            "and data.max_length, data.max_length_ratio and model.max_positions"
        )
    print(pair_filter.summary(f"train ({where})"))
    return {
        "format": FORMAT_VERSION,
        "dtype": dtype,
        "pairs": pair_filter.kept,
        "streams": record,
        **{side: {"tokens": writers[side].tokens} for side in SIDES},
        **pair_filter.counts(),
    }


def _empty_split(where: str) -> str:
    return (
        f"the training split is empty: no sentence pairs in {where}. Check data.dataset and "
        "data.splits.train (empty files, or the wrong split?)"
    )


def _numbered_chunks(streams: list[TrainingStream]) -> Iterator[tuple[int, ParallelText]]:
    """(stream number, chunk) of every stream, one stream after the other."""
    for number, stream in enumerate(streams):
        for chunk in stream.source.chunks(CHUNK_PAIRS):
            yield number, chunk


def _encode_sources(
    tokenizers: TokenizerPair, texts: list[str], direction: str, tagged: bool
) -> list[list[int]]:
    """Source ids, with the target language's tag in front when the run has tags."""
    try:
        return tokenizers.encode_source(texts, parse_pair(direction, "")[1] if tagged else None)
    except LanguageError as error:  # e.g. a new direction on a checkpoint's tagged tokenizer
        raise DataError(f"cannot encode the {direction} training sources: {error}") from error


class _SideWriter:
    """Appends one side's ids, offsets and lengths to its three files."""

    def __init__(self, directory: Path, side: str, dtype: type) -> None:
        self.dtype = dtype
        self.tokens = 0
        self.files: dict[str, IO[bytes]] = {
            kind: open(directory / f"{side}.{kind}", "wb")  # noqa: SIM115 (closed in close())
            for kind in ("ids", "offsets", "lengths")
        }
        self.files["offsets"].write(np.zeros(1, dtype=np.int64).tobytes())

    def append(self, sequences: list[list[int]]) -> None:
        lengths = np.fromiter(map(len, sequences), dtype=np.int32, count=len(sequences))  # (n,)
        count = int(lengths.sum())
        ids = np.fromiter(chain.from_iterable(sequences), dtype=self.dtype, count=count)  # (N,)
        offsets = self.tokens + np.cumsum(lengths, dtype=np.int64)  # (n,) ends of the pairs
        self.files["ids"].write(ids.tobytes())
        self.files["offsets"].write(offsets.tobytes())
        self.files["lengths"].write(lengths.tobytes())
        self.tokens += count

    def close(self) -> None:
        for file in self.files.values():
            file.flush()
            os.fsync(file.fileno())  # on disk before the rename makes the directory trusted
            file.close()


Chunk = TypeVar("Chunk", ParallelText, tuple[int, ParallelText])


def _progress(chunks: Iterator[Chunk], total: int | None, what: str) -> Iterator[Chunk]:
    """Chunks (or (stream number, chunk) pairs), counted on a bar with pairs/s and (when the size
    is known) an ETA."""
    with tqdm(total=total, desc=what, unit=" pairs", unit_scale=True, file=sys.stderr) as bar:
        for item in chunks:
            yield item
            bar.update(len(item[1] if isinstance(item, tuple) else item))


# --- what `transformer prepare` starts from -----------------------------------------------------


def starting_tokenizers(config: Config) -> tuple[TokenizerPair | None, bool]:
    """What train.py will encode with: with train.init_from, the checkpoint's tokenizers and its
    model.source_eos; else new tokenizers and this config's source_eos."""
    if not config.train.init_from:
        return None, config.model.source_eos
    checkpoint = load_checkpoint(config.train.init_from)
    source_eos = config_from_dict(checkpoint["config"]).model.source_eos
    return TokenizerPair.from_json(checkpoint["tokenizers"]), source_eos
