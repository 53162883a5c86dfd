"""The files of a prepared training split: what they hold, reading them back, checking them.

prepare.py writes a directory of these files; every run, resume and rank reads it here.

Files, per side (src, tgt), all little-endian; ids and offsets are read a pair at a time with
`os.pread` (`DiskArray`), only the lengths and the streams are loaded:
    {side}.ids       (N,)     token ids: uint16 when the vocabulary has <= 65,536 entries, else int32
    {side}.offsets   (n + 1,) int64: pair i's ids are ids[offsets[i]:offsets[i + 1]]
    {side}.lengths   (n,)     int32 tokens per pair (what the batch sampler sorts on)
    streams          (n,)     uint8: the (corpus, direction) each pair came from (meta.json names them)
    tokenizer/       the tokenizers the ids come from
    meta.json        counts, dtype, sizes, what was dropped, the sample size, the fingerprint's
                     inputs, and the sha256 of every other file

Opening a directory checks that every file has the size meta.json implies and that the index adds
up (cheap), then the sha256 of every file (0.35-0.45 s for the 425 MB of 3M pairs on an AMD EPYC
core, sha_ni): a truncated file and bytes changed by a bad copy, a disk error or a stray write are
both found, and the directory is prepared again. Damage after that check (the run reads the files
for hours) is caught by the batch reader, which refuses ids outside the vocabulary
(`EncodedSplit.refuse_ids_outside`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from transformer.data.loading import EncodedSplit
from transformer.tokenization.tokenizer import TokenizerPair

FORMAT_VERSION = 3  # bump when the files or the way ids are made change: old caches are then unused
SIDES = ("src", "tgt")
META_FILE = "meta.json"
TOKENIZER_DIR = "tokenizer"
DTYPES = {"uint16": np.uint16, "int32": np.int32}

Opened = tuple[EncodedSplit, torch.Tensor]  # the training split and the stream of each pair (n,)
OTHER_TOKENIZERS = "made with other tokenizers"  # not damaged: just not the tokenizers asked for


def open_prepared(
    directory: Path, tokenizers: dict[str, str] | None = None
) -> tuple[Opened | None, str | None]:
    """The prepared split in `directory`, read from its files, and the stream of each pair (n,);
    or None and what is wrong: None when there is no such directory, a description when its files
    are damaged, OTHER_TOKENIZERS when it holds tokenizers other than `tokenizers` (JSON)."""
    if not directory.is_dir():
        return None, None
    try:
        meta = read_meta(directory)
        split = EncodedSplit.from_tensors(*(_map_side(directory, side, meta) for side in SIDES))
        streams = np.fromfile(directory / "streams", dtype=np.uint8)
        if len(streams) != len(split) or (len(streams) and streams.max() >= len(meta["streams"])):
            raise ValueError(f"the streams file does not match the {len(split)} pairs")
        check_digests(directory, meta)
        if tokenizers is not None and saved_tokenizers(directory) != tokenizers:
            return None, OTHER_TOKENIZERS
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        return None, str(error)
    return (split, torch.from_numpy(streams)), None


def read_meta(directory: Path) -> dict[str, Any]:
    """meta.json, if it is of the format this code reads (ValueError if not)."""
    meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"format {meta.get('format')}, this code reads {FORMAT_VERSION}")
    return meta


def check_digests(directory: Path, meta: dict[str, Any], under: str = "") -> None:
    """Raise ValueError unless every file (the files `under` a folder) has the sha256 that
    meta.json records for it."""
    for name, digest in meta["sha256"].items():
        if name.startswith(under) and file_sha256(directory / name) != digest:
            raise ValueError(f"{name} does not match its sha256 in meta.json: its bytes changed")


def file_sha256(path: Path) -> str:
    """The sha256 of a file, as `sha256sum` prints it, read 16 MB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _map_side(directory: Path, side: str, meta: dict[str, Any]) -> tuple[Any, ...]:
    """(ids (N,), offsets (n + 1,), lengths (n,)) of one side, after checking that every file has
    the size meta.json promises and that the index agrees with the ids. Ids and offsets stay on
    disk (`DiskArray`); the lengths, which the batch sampler sorts, are read into memory."""
    pairs, tokens = int(meta["pairs"]), int(meta[side]["tokens"])
    ids_dtype = DTYPES[meta["dtype"]]
    expected = {
        f"{side}.ids": (tokens, ids_dtype),
        f"{side}.offsets": (pairs + 1, np.int64),
        f"{side}.lengths": (pairs, np.int32),
    }
    for name, (count, dtype) in expected.items():
        size = (directory / name).stat().st_size
        if size != count * np.dtype(dtype).itemsize:
            raise ValueError(
                f"{name} has {size} bytes, meta.json says {count * np.dtype(dtype).itemsize}"
            )
    ids = DiskArray(directory / f"{side}.ids", ids_dtype, tokens)
    offsets = DiskArray(directory / f"{side}.offsets", np.int64, pairs + 1)
    lengths = torch.from_numpy(np.fromfile(directory / f"{side}.lengths", dtype=np.int32))
    if offsets[0] != 0 or offsets[-1] != tokens or int(lengths.sum()) != tokens:
        raise ValueError(f"the {side} index does not add up to its {tokens} ids")
    return ids, offsets, lengths


class DiskArray:
    """A 1-D array in a file, read a slice at a time with `os.pread`: an item is one or two reads
    of a few bytes, and nothing stays in the process. (Memory-mapping the file instead costs more
    than the bytes read: each page fault maps the 64 KB around it, which after 50 steps on 3M pairs
    was ~300 MB of resident memory per process; the kernel's page cache, shared by every process
    of the machine, keeps what was read recently either way.)"""

    def __init__(self, path: Path, dtype: type, length: int) -> None:
        self.path, self.np_dtype, self.length = path, np.dtype(dtype), length
        self.dtype = torch.from_numpy(np.zeros(0, dtype=self.np_dtype)).dtype
        self._file: IO[bytes] | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.length

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._pid != os.getpid():  # (re)open in each process, e.g. DataLoader workers
            self._file, self._pid = open(self.path, "rb"), os.getpid()  # noqa: SIM115
        itemsize = self.np_dtype.itemsize
        data = os.pread(self._file.fileno(), (stop - start) * itemsize, start * itemsize)
        return np.frombuffer(data, dtype=self.np_dtype)

    def __getitem__(self, index: int | slice) -> Any:
        """array[i] -> int; array[a:b] -> a 1-D tensor (a copy) of that slice."""
        if isinstance(index, slice):
            start, stop, step = index.indices(self.length)
            if step != 1:
                raise ValueError("DiskArray slices must be contiguous")
            return torch.from_numpy(self._read(start, max(start, stop)).copy())
        i = index + self.length if index < 0 else index
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        return int(self._read(i, i + 1)[0])

    def __getstate__(self) -> dict[str, Any]:  # an open file does not pickle; reopened on use
        return {**self.__dict__, "_file": None, "_pid": -1}


def saved_tokenizers(directory: Path) -> dict[str, str] | None:
    """The JSON of the tokenizers in `directory`; None when there are none that load."""
    try:
        return TokenizerPair.load(directory / TOKENIZER_DIR).to_json()
    except (OSError, ValueError):
        return None


def file_digests(directory: Path) -> dict[str, str]:
    """The sha256 of every file in `directory`, by its path there (meta.json records them)."""
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    return {path.relative_to(directory).as_posix(): file_sha256(path) for path in files}
