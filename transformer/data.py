"""Parallel corpora: load from the hub or local files, check, train tokenizers, encode once.

    tokenizers, splits, texts = prepare_data(config.data, config.model.max_positions)
    # splits["train"] is an EncodedSplit; `batching` turns it into padded batches.

Where `data.dataset` may point (everything ends up as a Hugging Face `datasets.Dataset` and goes through
one column reader, so every source is checked the same way):
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

Bad input raises one `DataError` saying what is wrong and what to do. Empty pairs and pairs too long
for `data.max_length` / `model.max_positions` are dropped from training (with counts printed) at load
time, never mid-epoch; validation and test keep every sentence.
"""

from __future__ import annotations

import gzip
import math
import re
import ssl
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import datasets
import torch
from datasets.exceptions import DatasetGenerationError, FileNotFoundDatasetsError
from torch import Tensor
from torch.utils.data import Dataset

from transformer.config import DataConfig
from transformer.tokenizer import TokenizerPair, train_tokenizers

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


# --- loading --------------------------------------------------------------------------------------


def load_corpus(config: DataConfig) -> dict[str, ParallelText]:
    """Raw text of the train, validation and test splits (keys: "train", "validation", "test")."""
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
    return _select_splits(splits, available, config)


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


def _load_hub(config: DataConfig) -> dict[str, datasets.Dataset]:
    """Load a hub dataset; fail within seconds, with a message naming this dataset's splits,
    when the hub cannot be reached (datasets itself retries for ~25 s before giving up)."""
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
        loaded = datasets.load_dataset(name, subset)
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
    return dict(loaded)


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


def _load_file(path: Path, config: DataConfig) -> dict[str, datasets.Dataset]:
    """A single file holds the train split; validation and test are then carved from it."""
    if path.suffix == ".tsv":
        return {config.splits.train: _read_tsv(path, config)}
    if path.suffix == ".jsonl":
        return _read_jsonl({config.splits.train: path})
    raise DataError(
        f"data.dataset={str(path)!r}: a single file must be .tsv (source<TAB>target) or .jsonl; "
        "parallel plain-text files go in a directory as {split}.{lang} or {split}.{lang}.gz"
    )


def _load_directory(
    directory: Path, config: DataConfig
) -> tuple[dict[str, datasets.Dataset], list[str]]:
    """Read the splits named in data.splits; the format is that of the train split's file(s)."""
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
    if train in jsonl:
        available = sorted(jsonl)
        splits = _read_jsonl({name: jsonl[name] for name in wanted if name in jsonl})
    elif train in tsv:
        available = sorted(tsv)
        splits = {name: _read_tsv(tsv[name], config) for name in wanted if name in tsv}
    elif train in text:
        available = sorted(text)
        splits = {
            name: _read_text_pair(directory, name, text[name], config)
            for name in wanted
            if name in text
        }
    else:
        found = sorted(set(jsonl) | set(tsv) | set(text))
        raise DataError(
            f"no train split {train!r} in {str(directory)!r}: expected {train}.{config.src_lang} "
            f"and {train}.{config.tgt_lang} (optionally .gz), {train}.tsv or {train}.jsonl. "
            f"Splits found: {', '.join(found) or 'none'}; set data.splits.train to one of them"
        )
    return splits, available


def _read_text_pair(
    directory: Path, split: str, by_lang: dict[str, list[Path]], config: DataConfig
) -> datasets.Dataset:
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
    source, target = _read_lines(paths[0]), _read_lines(paths[1])
    if len(source) != len(target):
        raise DataError(
            f"parallel files differ in length: {paths[0]} has {len(source)} lines but "
            f"{paths[1]} has {len(target)}; line i of one must translate line i of the other"
        )
    return datasets.Dataset.from_dict({config.src_lang: source, config.tgt_lang: target})


def _read_tsv(path: Path, config: DataConfig) -> datasets.Dataset:
    """source<TAB>target per line, by position (the language codes only name the columns)."""
    source, target = [], []
    for number, line in enumerate(_iter_lines(path), start=1):
        fields = line.split("\t") if line else ["", ""]  # a blank line is an empty pair
        if len(fields) != 2:
            raise DataError(
                f"{path}: line {number} has {len(fields)} tab-separated fields, expected 2 "
                "(source<TAB>target, no tabs inside sentences)"
            )
        source.append(fields[0])
        target.append(fields[1])
    return datasets.Dataset.from_dict({config.src_lang: source, config.tgt_lang: target})


def _read_jsonl(files: dict[str, Path]) -> dict[str, datasets.Dataset]:
    for path in files.values():
        for _ in _iter_lines(path):  # checks UTF-8 with line numbers, which datasets does not give
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
    return {name: loaded[key] for key, name in keys.items()}


def _read_lines(path: Path) -> list[str]:
    return list(_iter_lines(path))


def _iter_lines(path: Path) -> Iterator[str]:
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


# --- choosing and carving splits ------------------------------------------------------------------


def _select_splits(
    splits: dict[str, datasets.Dataset], available: list[str], config: DataConfig
) -> dict[str, ParallelText]:
    names = config.splits
    where = config.dataset
    if names.train not in splits:
        raise DataError(_missing_split(where, "train", names.train, available))
    corpus = {"train": _parallel_text(splits[names.train], config, f"{where} [{names.train}]")}
    to_carve = []
    for role in ("validation", "test"):
        name = getattr(names, role)
        if name and name in splits:
            corpus[role] = _parallel_text(splits[name], config, f"{where} [{name}]")
        elif not name or available == [names.train]:
            to_carve.append(role)
        else:
            raise DataError(_missing_split(where, role, name, available))
    if to_carve:
        corpus.update(_carve(corpus, to_carve, config.carve_size))
    return {role: corpus[role] for role in ROLES}


def _missing_split(where: str, role: str, name: str, available: list[str]) -> str:
    hint = "" if role == "train" else f", or data.splits.{role}= (empty) to carve it from train"
    return (
        f"split {name!r} (data.splits.{role}) not found in {where!r}; available splits: "
        f"{', '.join(available) or 'none'}. Set data.splits.{role}=<one of them>{hint}"
    )


def _carve(corpus: dict[str, ParallelText], roles: list[str], size: int) -> dict[str, ParallelText]:
    """Take `size` random pairs from train for each role; the rest stays train, in order."""
    train = corpus["train"]
    if size < 1 or len(train) <= size * len(roles):
        raise DataError(
            f"cannot carve {' and '.join(roles)} of data.carve_size={size} sentences each from a "
            f"train split of {len(train)} pairs; lower data.carve_size"
        )
    print(f"carving {' and '.join(roles)} ({size} pairs each) from {len(train)} training pairs")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(CARVE_SEED))
    carved = {}
    for k, role in enumerate(roles):
        carved[role] = train.select(order[k * size : (k + 1) * size].tolist())
    rest = order[len(roles) * size :].sort().values
    carved["train"] = train.select(rest.tolist())
    return carved


def _parallel_text(dataset: datasets.Dataset, config: DataConfig, where: str) -> ParallelText:
    """Source and target columns of either hub schema: `translation` dicts or one column per lang."""
    if "translation" in dataset.column_names:
        feature = dataset.features["translation"]
        languages = list(getattr(feature, "languages", None) or feature)
        dataset, prefix = dataset.flatten(), "translation."  # columns translation.en, ...
    else:
        languages, prefix = dataset.column_names, ""
    for lang, key in ((config.src_lang, "src_lang"), (config.tgt_lang, "tgt_lang")):
        if lang not in languages:
            raise DataError(
                f"language {lang!r} (data.{key}) not found in {where}; languages available: "
                f"{', '.join(languages)} (expected a 'translation' column of "
                "{lang: sentence} dicts, or one column per language)"
            )
    table = dataset.with_format("arrow")
    columns = [table[prefix + lang].to_pylist() for lang in (config.src_lang, config.tgt_lang)]
    source, target = ([text if text is not None else "" for text in col] for col in columns)
    return ParallelText(source, target)


# --- encoding -------------------------------------------------------------------------------------


class EncodedSplit(Dataset):
    """Subword ids of one split, without BOS/EOS: one flat int32 tensor per side plus offsets.

    About 4 bytes per token, instead of a Python list of ints per sentence (~36 bytes per token).
    Item i is (source ids, target ids) as 1-D long tensors.
    """

    def __init__(self, source: list[list[int]], target: list[list[int]]) -> None:
        if len(source) != len(target):
            raise ValueError(f"{len(source)} source but {len(target)} target sentences")
        self.src_ids, self.src_offsets, self.src_lengths = _flatten(source)
        self.tgt_ids, self.tgt_offsets, self.tgt_lengths = _flatten(target)

    def __len__(self) -> int:
        return len(self.src_lengths)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} pairs")
        i %= len(self)
        src = self.src_ids[int(self.src_offsets[i]) : int(self.src_offsets[i + 1])]
        tgt = self.tgt_ids[int(self.tgt_offsets[i]) : int(self.tgt_offsets[i + 1])]
        return src.long(), tgt.long()


BilingualDataset = EncodedSplit  # the tutorial's name for the same thing


def _flatten(sequences: list[list[int]]) -> tuple[Tensor, Tensor, Tensor]:
    """(flat ids (N,) int32, offsets (n + 1,) int64, lengths (n,) int64)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    offsets = torch.zeros(len(sequences) + 1, dtype=torch.long)
    torch.cumsum(lengths, dim=0, out=offsets[1:])
    flat = torch.tensor(list(chain.from_iterable(sequences)), dtype=torch.int32)
    return flat, offsets, lengths


def encode_split(
    text: ParallelText,
    tokenizers: TokenizerPair,
    *,
    max_length: int | None,
    max_positions: int,
    drop: bool,
    name: str = "train",
) -> EncodedSplit:
    """Encode a split once.

    drop=True (training): drop empty pairs, pairs with a side longer than `max_length`, and pairs
    that do not fit the model (source > max_positions, or target + BOS/EOS > max_positions), and print
    the counts. drop=False (validation/test): keep every pair, in order, so index i still matches
    the raw text; cut sources to max_positions and targets to max_positions - 1 with a warning.
    """
    source = tokenizers.encode_source(text.source)
    target = tokenizers.encode_target(text.target)
    if drop:
        return _drop_unusable(text, source, target, max_length, max_positions, name)
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


def _drop_unusable(
    text: ParallelText,
    source: list[list[int]],
    target: list[list[int]],
    max_length: int | None,
    max_positions: int,
    name: str,
) -> EncodedSplit:
    limit = math.inf if max_length is None else max_length
    kept_src, kept_tgt = [], []
    empty = too_long = too_many_positions = 0
    for src_text, tgt_text, src, tgt in zip(text.source, text.target, source, target, strict=True):
        if not src_text.strip() or not tgt_text.strip() or not src or not tgt:
            empty += 1
        elif len(src) > limit or len(tgt) > limit:
            too_long += 1
        elif len(src) > max_positions or len(tgt) + 1 > max_positions:
            too_many_positions += 1
        else:
            kept_src.append(src)
            kept_tgt.append(tgt)
    print(
        f"{name}: kept {len(kept_src)} of {len(text)} pairs; dropped {empty} empty, {too_long} "
        f"longer than data.max_length={max_length} tokens, {too_many_positions} longer than "
        f"model.max_positions={max_positions}"
    )
    if not kept_src:
        raise DataError(
            f"{name}: no usable sentence pairs left; check the corpus and data.max_length"
        )
    return EncodedSplit(kept_src, kept_tgt)


def prepare_data(
    config: DataConfig, max_positions: int, tokenizers: TokenizerPair | None = None
) -> tuple[TokenizerPair, dict[str, EncodedSplit], dict[str, ParallelText]]:
    """Load the corpus, train tokenizers on train (unless given, e.g. from a checkpoint), encode."""
    texts = load_corpus(config)
    if tokenizers is None:
        tokenizers = train_tokenizers(
            texts["train"].source, texts["train"].target, config.tokenizer
        )
    return tokenizers, encode_splits(texts, tokenizers, config, max_positions), texts


def encode_splits(
    texts: dict[str, ParallelText],
    tokenizers: TokenizerPair,
    config: DataConfig,
    max_positions: int,
) -> dict[str, EncodedSplit]:
    """Encode every split; training pairs too long for data.max_length are dropped."""
    return {
        role: encode_split(
            texts[role],
            tokenizers,
            max_length=config.max_length if role == "train" else None,
            max_positions=max_positions,
            drop=role == "train",
            name=role,
        )
        for role in ROLES
    }
