"""Sentence pairs read in chunks: a split of a corpus without holding all of it in memory.

    source = TextFilesSource(Path("train.en.gz"), Path("train.de.gz"))
    for chunk in source.chunks(100_000):  # ParallelText of up to 100k pairs each, in corpus order
        ...

Every kind of input (parallel text files, a TSV file, a memory-mapped `datasets` table, a streamed
hub dataset) is a `PairSource`: `chunks()` reads it in order, `identity()` says what its pairs
depend on (files with their size and modification time, or a `datasets` fingerprint), so that a
prepared copy knows when it is stale. `data.py` decides which source a config points to;
`prepare.py` streams the training split through tokenizer and cleaning into memory-mapped files.
"""

from __future__ import annotations

import gzip
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import datasets

CHUNK_PAIRS = 100_000  # pairs read, encoded and written at a time: ~30 MB of text


class DataError(ValueError):
    """A problem with the corpus the user can fix; the message says what and how."""


@dataclass
class ParallelText:
    """Raw sentence pairs of one split: source[i] translates to target[i]."""

    source: list[str]
    target: list[str]

    def __post_init__(self) -> None:
        if len(self.source) != len(self.target):
            raise DataError(
                f"{len(self.source)} source sentences but {len(self.target)} target sentences"
            )

    def __len__(self) -> int:
        return len(self.source)

    def select(self, indices: Sequence[int]) -> ParallelText:
        return ParallelText([self.source[i] for i in indices], [self.target[i] for i in indices])


class PairSource(ABC):
    """One split of a corpus, read on demand in chunks of pairs, always in the same order."""

    where: str  # for messages: the file(s) or the hub name and split

    @abstractmethod
    def chunks(self, size: int = CHUNK_PAIRS) -> Iterator[ParallelText]:
        """The pairs in corpus order, `size` at a time (the last chunk may be shorter)."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What the pairs depend on (JSON-able): equal identities promise equal pairs."""

    def count(self) -> int | None:
        """How many pairs; None when only reading them all would tell (streaming)."""
        return sum(len(chunk) for chunk in self.chunks())

    def read_all(self) -> ParallelText:
        """Every pair in memory: for validation and test, which are small."""
        source: list[str] = []
        target: list[str] = []
        for chunk in self.chunks():
            source += chunk.source
            target += chunk.target
        return ParallelText(source, target)


def file_identity(path: Path) -> dict[str, Any]:
    """Path, size and modification time: a changed file gets a new identity without being read."""
    status = path.stat()
    return {"path": str(path.resolve()), "bytes": status.st_size, "mtime_ns": status.st_mtime_ns}


def _batched(lines: Iterator[str], size: int) -> Iterator[list[str]]:
    while batch := list(islice(lines, size)):
        yield batch


class TextFilesSource(PairSource):
    """Two parallel plain-text files (optionally .gz): line i of one translates line i of the other."""

    def __init__(self, source_path: Path, target_path: Path) -> None:
        self.source_path, self.target_path = source_path, target_path
        self.where = f"{source_path} + {target_path.name}"
        self._count: int | None = None

    def chunks(self, size: int = CHUNK_PAIRS) -> Iterator[ParallelText]:
        sources = _batched(iter_lines(self.source_path), size)
        targets = _batched(iter_lines(self.target_path), size)
        read = 0
        for source in sources:
            target = next(targets, [])
            if len(target) != len(source):
                self._mismatch(read + len(target) + sum(map(len, targets)), read, source, sources)
            read += len(source)
            yield ParallelText(source, target)
        if extra := sum(map(len, targets)):
            self._mismatch(read + extra, read, [], sources)

    def _mismatch(
        self, target_lines: int, read: int, source: list[str], rest: Iterator[list[str]]
    ) -> None:
        source_lines = read + len(source) + sum(map(len, rest))
        raise DataError(
            f"parallel files differ in length: {self.source_path} has {source_lines} lines but "
            f"{self.target_path} has {target_lines}; line i of one must translate line i of the "
            "other"
        )

    def identity(self) -> dict[str, Any]:
        return {"files": [file_identity(self.source_path), file_identity(self.target_path)]}

    def count(self) -> int:
        if self._count is None:  # lines of the source file; chunks() checks the target agrees
            opener = gzip.open if self.source_path.suffix == ".gz" else open
            with opener(self.source_path, "rb") as file:
                self._count = sum(1 for _ in file)
        return self._count


class TsvSource(PairSource):
    """One file of source<TAB>target lines (by position; the language codes only name columns)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def chunks(self, size: int = CHUNK_PAIRS) -> Iterator[ParallelText]:
        number = 0
        for lines in _batched(iter_lines(self.path), size):
            source, target = [], []
            for line in lines:
                number += 1
                fields = line.split("\t") if line else ["", ""]  # a blank line is an empty pair
                if len(fields) != 2:
                    raise DataError(
                        f"{self.path}: line {number} has {len(fields)} tab-separated fields, "
                        "expected 2 (source<TAB>target, no tabs inside sentences)"
                    )
                source.append(fields[0])
                target.append(fields[1])
            yield ParallelText(source, target)

    def identity(self) -> dict[str, Any]:
        return {"files": [file_identity(self.path)]}


class ArrowSource(PairSource):
    """Two columns of a `datasets.Dataset`: memory-mapped Arrow, sliced a chunk at a time, so the
    split never becomes Python lists as a whole (hub datasets and JSON lines files)."""

    def __init__(self, dataset: datasets.Dataset, columns: tuple[str, str], where: str) -> None:
        self.table = dataset.with_format("arrow")
        self.columns = columns
        self.fingerprint = dataset._fingerprint  # datasets' own hash of the data and its history
        self.where = where

    def chunks(self, size: int = CHUNK_PAIRS) -> Iterator[ParallelText]:
        for start in range(0, len(self.table), size):
            rows = self.table[start : start + size]  # a pyarrow Table of up to `size` rows
            source, target = (_strings(rows[column].to_pylist()) for column in self.columns)
            yield ParallelText(source, target)

    def identity(self) -> dict[str, Any]:
        return {"datasets_fingerprint": self.fingerprint, "columns": list(self.columns)}

    def count(self) -> int:
        return len(self.table)


class StreamedSource(PairSource):
    """A hub split in `datasets`' streaming mode (data.streaming: true): pairs arrive over the
    network as they are read, for corpora too large to download first. Its size is unknown."""

    def __init__(
        self, dataset: datasets.IterableDataset, languages: tuple[str, str], where: str
    ) -> None:
        self.dataset, self.languages, self.where = dataset, languages, where

    def chunks(self, size: int = CHUNK_PAIRS) -> Iterator[ParallelText]:
        for rows in self.dataset.iter(batch_size=size):
            if "translation" in rows:  # {lang: sentence} dicts
                columns = [[pair[lang] for pair in rows["translation"]] for lang in self.languages]
            else:
                columns = [rows[lang] for lang in self.languages]
            yield ParallelText(*(_strings(column) for column in columns))

    def identity(self) -> dict[str, Any]:
        return {"streamed": self.where, "languages": list(self.languages)}

    def count(self) -> None:
        return None


class WithoutPairs(PairSource):
    """Another source minus some pairs (by index): the training split after validation and test
    were carved from it."""

    def __init__(self, inner: PairSource, excluded: set[int]) -> None:
        self.inner, self.excluded = inner, excluded
        self.where = inner.where

    def chunks(self, size: int = CHUNK_PAIRS) -> Iterator[ParallelText]:
        start = 0
        for chunk in self.inner.chunks(size):
            kept = [k for k in range(len(chunk)) if start + k not in self.excluded]
            start += len(chunk)
            yield chunk if len(kept) == len(chunk) else chunk.select(kept)

    def identity(self) -> dict[str, Any]:
        return {"inner": self.inner.identity(), "excluded": len(self.excluded)}

    def count(self) -> int | None:
        total = self.inner.count()
        return None if total is None else total - len(self.excluded)


def _strings(column: list[str | None]) -> list[str]:
    """A missing sentence (null) is an empty one, dropped from training like any empty pair."""
    return [text if text is not None else "" for text in column]


def iter_lines(path: Path) -> Iterator[str]:
    """Lines of a UTF-8 file (.gz decompressed) without their line ends.

    Splits on "\\n" only: str.splitlines would also split on U+2028 or a form feed inside a
    sentence and silently misalign parallel files.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            for number, raw in enumerate(file, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise DataError(
                        f"{path}: line {number} is not valid UTF-8 (byte {error.start} of the "
                        f"line: {raw[error.start : error.start + 4]!r}); convert the file to "
                        "UTF-8, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8"
                    ) from None
                if number == 1:
                    line = line.removeprefix("\ufeff")  # byte-order mark
                yield line.removesuffix("\n").removesuffix("\r")
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(
            f"{path}: not a complete gzip file ({error}); decompress it again"
        ) from None
