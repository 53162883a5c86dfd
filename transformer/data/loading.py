"""Parallel corpora: find them on the hub or in local files, check them, clean and encode pairs.

    corpus = open_corpus(config.data)  # corpus.train: a PairSource, read in chunks (pairs.py)
    corpus.validation, corpus.test     # ParallelText, in memory
    # prepare.py streams corpus.train through the tokenizer and `PairFilter` into flat files.

Where `data.dataset` may point (every source gives the same `PairSource` interface, and hub and JSON
lines data go through one column reader, so every source is checked the same way):
- a hub name (`bentrevett/multi30k`, `Helsinki-NLP/opus_books` with `data.subset=en-it`, `wmt14`) with
  either a `translation` column of {lang: sentence} dicts or one column per language;
- a directory of `{split}.jsonl` files in either of those two schemas (read by `datasets`' json builder);
- a directory of `{split}.tsv` files, or a single `.tsv` file (= the train split): source<TAB>target;
- a directory of parallel plain-text files `{split}.{lang}` or `{split}.{lang}.gz`, one sentence per line;
- a single `.jsonl` file (= the train split).
Plain text and TSV are read here rather than by `datasets`' text/csv builders: those report invalid
UTF-8 without a line number, and the csv builder's quoting rules would mangle sentences with quotes.

Split names come from `data.splits`. When the corpus has only its train split (opus_books), or a split
name is set to "" (empty), validation and test are carved from train: `data.carve_size` sentences each,
drawn with a fixed seed, so the carve is the same on every run and on resume, whatever `train.seed` is.

Bad input raises one `DataError` saying what is wrong and what to do. Empty pairs, pairs too long for
`data.max_length` / `model.max_positions` and pairs over `data.max_length_ratio` are dropped from
training (with counts printed) when it is prepared, never mid-epoch; validation and test keep every
sentence.
"""

from __future__ import annotations

import math
import re
import ssl
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import datasets
import torch
from datasets.exceptions import DatasetGenerationError, FileNotFoundDatasetsError
from torch import Tensor
from torch.utils.data import Dataset

from transformer.config import DataConfig
from transformer.data.pairs import (
    ArrowSource,
    DataError,
    PairSource,
    ParallelText,
    StreamedSource,
    TextFilesSource,
    TsvSource,
    WithoutPairs,
    iter_lines,
)
from transformer.tokenization.tokenizer import TokenizerPair

ROLES = ("train", "validation", "test")  # keys of every corpus dict; data.splits maps them to names
HUB_TIMEOUT_SECONDS = 5.0  # how long the one reachability check of the hub waits
CARVE_SEED = 20170612  # fixed, so a carved validation/test split never moves between runs

# `{split}.{lang}[.gz]`; the language is 2-3 letters with an optional region (en, de, pt_br, zh-cn).
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]+)?")
_NOT_LANGUAGES = {
    "md",
    "txt",
    "tsv",
    "csv",
    "py",
    "sh",
    "yml",
    "cfg",
    "ini",
    "rst",
    "log",
    "bz2",
    "xz",
}


@dataclass
class Corpus:
    """The training split as a source read in chunks (it may be millions of pairs); validation and
    test in memory (they are small, and validation decodes and scores every sentence)."""

    train: PairSource
    validation: ParallelText
    test: ParallelText


# --- loading --------------------------------------------------------------------------------------


def open_corpus(config: DataConfig, evaluation: bool = True) -> Corpus:
    """Find the corpus `data.dataset` points to; read validation and test, not yet train.
    evaluation=False: only its train split is wanted (a second corpus of a direction, corpora.py):
    its validation and test are neither read nor carved, and come back empty."""
    if config.src_lang == config.tgt_lang:
        raise DataError(f"data.src_lang and data.tgt_lang are both {config.src_lang!r}")
    path = Path(config.dataset).expanduser()
    if path.is_dir():
        splits, available = _load_directory(path, config)
    elif path.is_file():
        splits, available = _load_file(path, config), [config.splits.train]
    elif _looks_like_path(config.dataset):
        raise DataError(
            f"data.dataset: no such file or directory: {config.dataset!r}; {_nearest(path)}"
        )
    else:
        splits = _load_hub(config)
        available = list(splits)
    if not evaluation:
        if config.splits.train not in splits:
            raise DataError(_missing_split(config.dataset, "train", config.splits.train, available))
        nothing = ParallelText([], [])
        return Corpus(splits[config.splits.train], nothing, nothing)
    return _select_splits(splits, available, config)


def load_corpus(config: DataConfig) -> dict[str, ParallelText]:
    """Raw text of the train, validation and test splits (keys: "train", "validation", "test"),
    all in memory: for small corpora and tools; training streams the train split instead."""
    corpus = open_corpus(config)
    return {"train": corpus.train.read_all(), "validation": corpus.validation, "test": corpus.test}


def _nearest(path: Path) -> str:
    """What exists at the closest existing parent of a missing path, to spot the typo."""
    parent = path.resolve().parent
    while not parent.is_dir():
        parent = parent.parent
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in parent.iterdir())
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    return f"{parent} contains: {shown or 'nothing'}"


def _looks_like_path(name: str) -> bool:
    """Hub names are `name` or `owner/name`; anything else that does not exist is a missing path."""
    return (
        name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or name.endswith((".tsv", ".jsonl", ".gz", ".txt"))
    )


def _load_hub(config: DataConfig) -> dict[str, PairSource]:
    """Load a hub dataset; fail within seconds, with a message naming this dataset's splits,
    when the hub cannot be reached (datasets itself retries for ~25 s before giving up).
    With data.streaming, splits are read over the network as they are used, never downloaded."""
    name, subset = config.dataset, config.subset
    # HF_HUB_OFFLINE=1 (or the older HF_DATASETS_OFFLINE=1): datasets reads its cache only.
    offline = getattr(datasets.config, "HF_HUB_OFFLINE", False) or getattr(
        datasets.config, "HF_DATASETS_OFFLINE", False
    )
    endpoint = datasets.config.HF_ENDPOINT
    if not offline and (problem := hub_unreachable(endpoint)):
        raise DataError(
            f"cannot reach the Hugging Face Hub at {endpoint} to load {name!r} ({problem}). "
            "If you downloaded it before, set HF_HUB_OFFLINE=1 to use the cached copy; else "
            f"connect to the network, or {_local_files_hint(config)}"
        )
    try:
        loaded = datasets.load_dataset(name, subset, streaming=config.streaming)
    except (ConnectionError, TimeoutError) as error:
        if offline:
            problem = (
                f"HF_HUB_OFFLINE=1 is set and {name!r} is not in the local cache ({error}). "
                "Unset HF_HUB_OFFLINE to download it"
            )
        else:
            problem = (
                f"the connection to {endpoint} failed while loading {name!r} ({error}). "
                "Try again when the network is back"
            )
        raise DataError(f"{problem}, or {_local_files_hint(config)}") from error
    except FileNotFoundDatasetsError as error:
        raise DataError(
            f"data.dataset={name!r} is neither a local path nor a dataset on the Hugging Face Hub "
            f"({error})"
        ) from error
    except ValueError as error:  # e.g. an unknown subset: datasets lists the valid ones
        raise DataError(f"cannot load {name!r} (data.subset={subset!r}): {error}") from error
    return {split: _dataset_source(loaded[split], config, f"{name} [{split}]") for split in loaded}


def hub_unreachable(endpoint: str, timeout: float = HUB_TIMEOUT_SECONDS) -> str | None:
    """None when `endpoint` answers an HTTP request (any status), else why not.

    One request through urllib, which honours HTTPS_PROXY/NO_PROXY like the hub's own client does.
    A TLS error means something answered, so the decision is left to `datasets`.
    """
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return None  # the server answered, if only with an error status
    except urllib.error.URLError as error:
        if isinstance(error.reason, ssl.SSLError):
            return None
        return f"{error.reason}"
    except (TimeoutError, OSError) as error:
        return f"{type(error).__name__}: {error or 'no answer'} within {timeout:g} s"
    return None


def _local_files_hint(config: DataConfig) -> str:
    """How to train from local files, in this config's own split and language names."""
    src, tgt, splits = config.src_lang, config.tgt_lang, config.splits
    named = [split for split in (splits.train, splits.validation, splits.test) if split]
    files = ", ".join(f"{split}.{src} + {split}.{tgt}" for split in named)
    carved = [role for role in ("validation", "test") if not getattr(splits, role)]
    carve_note = f" ({' and '.join(carved)} carved from train)" if carved else ""
    return (
        f"train from local files: data.dataset=DIR, a directory holding {files}{carve_note}, "
        f"plain or .gz, one sentence per line (or {splits.train}.tsv / {splits.train}.jsonl); "
        "if its files use other split names, set data.splits.train/validation/test to them"
    )


def _load_file(path: Path, config: DataConfig) -> dict[str, PairSource]:
    """A single file holds the train split; validation and test are then carved from it."""
    if path.suffix == ".tsv":
        return {config.splits.train: TsvSource(path)}
    if path.suffix == ".jsonl":
        return _read_jsonl({config.splits.train: path}, config)
    raise DataError(
        f"data.dataset={str(path)!r}: a single file must be .tsv (source<TAB>target) or .jsonl; "
        "parallel plain-text files go in a directory as {split}.{lang} or {split}.{lang}.gz"
    )


def _load_directory(directory: Path, config: DataConfig) -> tuple[dict[str, PairSource], list[str]]:
    """Find the splits named in data.splits; the format is that of the train split's file(s)."""
    files = sorted(p for p in directory.iterdir() if p.is_file())
    jsonl = {p.stem: p for p in files if p.suffix == ".jsonl"}
    tsv = {p.stem: p for p in files if p.suffix == ".tsv"}
    text: dict[str, dict[str, list[Path]]] = {}  # split -> lang -> files (plain and/or .gz)
    for p in files:
        split, _, lang = p.name.removesuffix(".gz").rpartition(".")
        if split and _LANGUAGE.fullmatch(lang) and lang.lower() not in _NOT_LANGUAGES:
            text.setdefault(split, {}).setdefault(lang, []).append(p)

    train = config.splits.train
    wanted = [name for name in (train, config.splits.validation, config.splits.test) if name]
    splits: dict[str, PairSource]
    if train in jsonl:
        available = sorted(jsonl)
        splits = _read_jsonl({name: jsonl[name] for name in wanted if name in jsonl}, config)
    elif train in tsv:
        available = sorted(tsv)
        splits = {name: TsvSource(tsv[name]) for name in wanted if name in tsv}
    elif train in text:
        available = sorted(text)
        splits = {
            name: _text_pair(directory, name, text[name], config) for name in wanted if name in text
        }
    else:
        found = sorted(set(jsonl) | set(tsv) | set(text))
        raise DataError(
            f"no train split {train!r} in {str(directory)!r}: expected {train}.{config.src_lang} "
            f"and {train}.{config.tgt_lang} (optionally .gz), {train}.tsv or {train}.jsonl. "
            f"Splits found: {', '.join(found) or 'none'}; set data.splits.train to one of them"
        )
    return splits, available


def _text_pair(
    directory: Path, split: str, by_lang: dict[str, list[Path]], config: DataConfig
) -> TextFilesSource:
    paths = []
    for lang, key in ((config.src_lang, "src_lang"), (config.tgt_lang, "tgt_lang")):
        if lang not in by_lang:
            raise DataError(
                f"no file {split}.{lang} or {split}.{lang}.gz in {str(directory)!r} "
                f"(data.{key}={lang!r}); languages found for split {split!r}: "
                f"{', '.join(sorted(by_lang))}"
            )
        if len(by_lang[lang]) > 1:
            raise DataError(
                f"both {' and '.join(str(p) for p in by_lang[lang])} exist; remove one of them"
            )
        paths.append(by_lang[lang][0])
    return TextFilesSource(paths[0], paths[1])


def _read_jsonl(files: dict[str, Path], config: DataConfig) -> dict[str, PairSource]:
    for path in files.values():
        for _ in iter_lines(path):  # checks UTF-8 with line numbers, which datasets does not give
            pass
    # datasets accepts only \w+ split names, so the files are loaded under stand-in names.
    keys = {f"split{i}": name for i, name in enumerate(files)}
    data_files = {key: str(files[name]) for key, name in keys.items()}
    try:
        loaded = datasets.load_dataset("json", data_files=data_files)
    except DatasetGenerationError as error:
        raise DataError(
            f"cannot read {', '.join(data_files.values())} as JSON lines "
            f"({error.__cause__ or error}); each line must be one JSON object"
        ) from error
    return {
        name: _dataset_source(loaded[key], config, f"{files[name]}") for key, name in keys.items()
    }


# --- choosing and carving splits ------------------------------------------------------------------


def _select_splits(
    splits: dict[str, PairSource], available: list[str], config: DataConfig
) -> Corpus:
    names = config.splits
    where = config.dataset
    if names.train not in splits:
        raise DataError(_missing_split(where, "train", names.train, available))
    train = splits[names.train]
    small: dict[str, ParallelText] = {}
    to_carve = []
    for role in ("validation", "test"):
        name = getattr(names, role)
        if name and name in splits:
            small[role] = splits[name].read_all()
        elif not name or available == [names.train]:
            to_carve.append(role)
        else:
            raise DataError(_missing_split(where, role, name, available))
    if to_carve:
        train, carved = _carve(train, to_carve, config.carve_size)
        small.update(carved)
    return Corpus(train, small["validation"], small["test"])


def _missing_split(where: str, role: str, name: str, available: list[str]) -> str:
    hint = "" if role == "train" else f", or data.splits.{role}= (empty) to carve it from train"
    return (
        f"split {name!r} (data.splits.{role}) not found in {where!r}; available splits: "
        f"{', '.join(available) or 'none'}. Set data.splits.{role}=<one of them>{hint}"
    )


def _carve(
    train: PairSource, roles: list[str], size: int
) -> tuple[PairSource, dict[str, ParallelText]]:
    """Take `size` random pairs from train for each role; the rest stays train, in order."""
    total = train.count()
    if total is None:
        raise DataError(
            f"cannot carve {' and '.join(roles)} from a streamed train split ({train.where}); "
            "name its validation and test splits in data.splits, or set data.streaming=false"
        )
    if size < 1 or total <= size * len(roles):
        raise DataError(
            f"cannot carve {' and '.join(roles)} of data.carve_size={size} sentences each from a "
            f"train split of {total} pairs; lower data.carve_size"
        )
    print(f"carving {' and '.join(roles)} ({size} pairs each) from {total} training pairs")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(CARVE_SEED))
    wanted = order[: len(roles) * size].tolist()
    found = _pairs_at(train, set(wanted))
    carved = {
        role: ParallelText(
            [found[i][0] for i in wanted[k * size : (k + 1) * size]],
            [found[i][1] for i in wanted[k * size : (k + 1) * size]],
        )
        for k, role in enumerate(roles)
    }
    return WithoutPairs(train, set(wanted)), carved


def _pairs_at(source: PairSource, indices: set[int]) -> dict[int, tuple[str, str]]:
    """The pairs at these corpus positions, read in one pass."""
    found, start = {}, 0
    for chunk in source.chunks():
        for k in range(len(chunk)):
            if start + k in indices:
                found[start + k] = (chunk.source[k], chunk.target[k])
        start += len(chunk)
    return found


def _dataset_source(
    dataset: datasets.Dataset | datasets.IterableDataset, config: DataConfig, where: str
) -> PairSource:
    """Source and target columns of either hub schema: `translation` dicts or one column per lang."""
    features = dataset.features
    if features is None:  # a streamed dataset that does not declare its columns: trust the config
        languages = [config.src_lang, config.tgt_lang]
    elif "translation" in features:
        feature = features["translation"]
        languages = list(getattr(feature, "languages", None) or feature)
    else:
        languages = list(features)
    for lang, key in ((config.src_lang, "src_lang"), (config.tgt_lang, "tgt_lang")):
        if lang not in languages:
            raise DataError(
                f"language {lang!r} (data.{key}) not found in {where}; languages available: "
                f"{', '.join(languages)} (expected a 'translation' column of "
                "{lang: sentence} dicts, or one column per language)"
            )
    pair = (config.src_lang, config.tgt_lang)
    if isinstance(dataset, datasets.IterableDataset):
        return StreamedSource(dataset, pair, where)
    if features is not None and "translation" in features:
        return ArrowSource(dataset.flatten(), tuple(f"translation.{lang}" for lang in pair), where)
    return ArrowSource(dataset, pair, where)


# --- encoding -------------------------------------------------------------------------------------


class EncodedSplit(Dataset):
    """Subword ids of one split, without BOS/EOS: one flat id tensor per side plus offsets.

    About 2-4 bytes per token, instead of a Python list of ints per sentence (~36 bytes per token).
    Validation and test are built from lists in memory; the prepared training split (prepare.py)
    reads its ids from disk (`from_tensors` with `DiskArray`s), so item i costs only its own bytes.
    Item i is (source ids, target ids) as 1-D long tensors.
    """

    # Set by `refuse_ids_outside` (a split read from disk): the vocabulary sizes and the files'
    # directory; `pairs` then checks each batch it reads.
    vocab_sizes: tuple[int, int] | None = None
    origin = ""

    def __init__(self, source: list[list[int]], target: list[list[int]]) -> None:
        if len(source) != len(target):
            raise ValueError(f"{len(source)} source but {len(target)} target sentences")
        self.src_ids, self.src_offsets, self.src_lengths = _flatten(source)
        self.tgt_ids, self.tgt_offsets, self.tgt_lengths = _flatten(target)

    @classmethod
    def from_tensors(
        cls, source: tuple[Tensor, Tensor, Tensor], target: tuple[Tensor, Tensor, Tensor]
    ) -> EncodedSplit:
        """From (flat ids (N,), offsets (n + 1,), lengths (n,)) per side: tensors, or arrays on
        disk that slice into tensors (prepared_files.DiskArray)."""
        split = cls.__new__(cls)
        split.src_ids, split.src_offsets, split.src_lengths = source
        split.tgt_ids, split.tgt_offsets, split.tgt_lengths = target
        if len(split.src_lengths) != len(split.tgt_lengths):
            raise ValueError(
                f"{len(split.src_lengths)} source but {len(split.tgt_lengths)} target sentences"
            )
        return split

    def __len__(self) -> int:
        return len(self.src_lengths)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} pairs")
        i %= len(self)
        src = self.src_ids[int(self.src_offsets[i]) : int(self.src_offsets[i + 1])]
        tgt = self.tgt_ids[int(self.tgt_offsets[i]) : int(self.tgt_offsets[i + 1])]
        return src.long(), tgt.long()

    def refuse_ids_outside(self, src_vocab_size: int, tgt_vocab_size: int, origin: str) -> None:
        """From now on `pairs` refuses an id outside the vocabularies, with a DataError that names
        `origin` (damaged files on disk: never an IndexError deep inside the model)."""
        self.vocab_sizes, self.origin = (src_vocab_size, tgt_vocab_size), origin

    def pairs(self, indices: list[int]) -> list[tuple[Tensor, Tensor]]:
        """Items `indices` (a batch), their ids checked when `refuse_ids_outside` asked for it:
        one min and max per side and batch (~40 us), not per pair."""
        examples = [self[i] for i in indices]
        if self.vocab_sizes is None or not examples:
            return examples
        for side, name, size in zip((0, 1), ("source", "target"), self.vocab_sizes, strict=True):
            ids = torch.cat([example[side] for example in examples])  # (N,)
            if len(ids) and not 0 <= int(ids.min()) <= int(ids.max()) < size:
                bad = int(ids[(ids < 0) | (ids >= size)][0])
                raise DataError(
                    f"{self.origin}: a {name} token id {bad} is outside the vocabulary "
                    f"(0..{size - 1}): the prepared data there is damaged. Delete that directory "
                    "and run again to prepare it anew"
                )
        return examples


BilingualDataset = EncodedSplit  # the tutorial's name for the same thing


def _flatten(sequences: list[list[int]]) -> tuple[Tensor, Tensor, Tensor]:
    """(flat ids (N,) int32, offsets (n + 1,) int64, lengths (n,) int32)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int32)
    offsets = torch.zeros(len(sequences) + 1, dtype=torch.long)
    torch.cumsum(lengths, dim=0, out=offsets[1:])
    flat = torch.tensor(list(chain.from_iterable(sequences)), dtype=torch.int32)
    return flat, offsets, lengths


# --- cleaning -------------------------------------------------------------------------------------


@dataclass
class PairFilter:
    """Which training pairs to drop, as Moses' clean-corpus-n does, counting each reason:
    empty pairs (either side blank or without tokens), pairs with a side longer than `max_length`
    tokens, pairs whose longer side has more than `max_length_ratio` times the tokens of the
    shorter (0 = off), and pairs that do not fit the model (source > max_positions, or target +
    BOS/EOS > max_positions). Applied chunk by chunk while a corpus is prepared."""

    max_length: int | None
    max_positions: int
    max_length_ratio: float = 0.0
    seen: int = 0
    kept: int = 0
    empty: int = 0
    too_long: int = 0
    bad_ratio: int = 0
    too_many_positions: int = 0

    def usable(
        self, text: ParallelText, source: list[list[int]], target: list[list[int]]
    ) -> list[int]:
        """Indices of the pairs of `text` (encoded as `source`, `target`) to train on."""
        limit = math.inf if self.max_length is None else self.max_length
        ratio = self.max_length_ratio or math.inf
        kept = []
        for i, (src_text, tgt_text, src, tgt) in enumerate(
            zip(text.source, text.target, source, target, strict=True)
        ):
            if not src_text.strip() or not tgt_text.strip() or not src or not tgt:
                self.empty += 1
            elif len(src) > limit or len(tgt) > limit:
                self.too_long += 1
            elif max(len(src), len(tgt)) > ratio * min(len(src), len(tgt)):
                self.bad_ratio += 1
            elif len(src) > self.max_positions or len(tgt) + 1 > self.max_positions:
                self.too_many_positions += 1
            else:
                kept.append(i)
        self.seen += len(text)
        self.kept += len(kept)
        return kept

    def summary(self, name: str) -> str:
        ratio = f"{self.max_length_ratio:g}" if self.max_length_ratio else "0 (off)"
        return (
            f"{name}: kept {self.kept} of {self.seen} pairs; dropped {self.empty} empty, "
            f"{self.too_long} longer than data.max_length={self.max_length} tokens, "
            f"{self.bad_ratio} over data.max_length_ratio={ratio}, {self.too_many_positions} "
            f"longer than model.max_positions={self.max_positions}"
        )

    def counts(self) -> dict[str, int]:
        """For the record a prepared corpus keeps of itself."""
        names = ("seen", "kept", "empty", "too_long", "bad_ratio", "too_many_positions")
        return {name: getattr(self, name) for name in names}


# --- encoding in memory ---------------------------------------------------------------------------


def encode_split(
    text: ParallelText,
    tokenizers: TokenizerPair,
    *,
    max_length: int | None,
    max_positions: int,
    drop: bool,
    name: str = "train",
    max_length_ratio: float = 0.0,
    tgt_lang: Sequence[str | None] | None = None,
) -> EncodedSplit:
    """Encode a split in memory, at once (validation, test and small tools; the training split of
    a run is prepared on disk by prepare.py with the same `PairFilter`).

    drop=True: drop what `PairFilter` drops and print the counts. drop=False (validation/test):
    keep every pair, in order, so index i still matches the raw text; cut sources to max_positions
    and targets to max_positions - 1 with a warning. tgt_lang: each pair's target language, for
    the tag a multilingual model's sources start with (None: no tags).
    """
    source = tokenizers.encode_source(text.source, tgt_lang)
    target = tokenizers.encode_target(text.target)
    if drop:
        pair_filter = PairFilter(max_length, max_positions, max_length_ratio)
        kept = pair_filter.usable(text, source, target)
        print(pair_filter.summary(name))
        if not kept:
            raise DataError(
                f"{name}: no usable sentence pairs left; check the corpus and data.max_length"
            )
        return EncodedSplit([source[i] for i in kept], [target[i] for i in kept])
    long_src = sum(len(ids) > max_positions for ids in source)
    long_tgt = sum(len(ids) > max_positions - 1 for ids in target)
    if long_src or long_tgt:
        warnings.warn(
            f"{name}: truncated {long_src} source sentences to model.max_positions={max_positions} "
            f"tokens and {long_tgt} target sentences to {max_positions - 1} (+ BOS/EOS); "
            "they are still translated and scored",
            stacklevel=2,
        )
    source = [ids[:max_positions] for ids in source]
    target = [ids[: max_positions - 1] for ids in target]
    return EncodedSplit(source, target)
