"""Byte-level BPE encoding a word at a time: each distinct word is encoded once, and a sentence's
ids are its words' ids put end to end. The same ids as `Tokenizer.encode_batch_fast(texts,
add_special_tokens=False)`, several times faster on a large batch of ordinary sentences.

    ids = encode_by_words(tokenizer, texts)  # list[list[int]], one list per text

Why it is exact. The `tokenizers` library encodes a sentence in three steps: normalise (NFKC, maybe
lowercase), split into pre-tokens (the byte-level regex: a word with at most one leading space, a
run of punctuation, a run of whitespace, ...), and run BPE on each pre-token alone: merges never
cross a pre-token boundary. Split a sentence at its single spaces into pieces w0, " w1", " w2", ...
Then, when every piece's normalised form is non-empty and holds no whitespace:
- normalising the sentence normalises each piece on its own: a space is a starter that nothing
  composes with or is reordered across, so NFKC(a + " " + b) = NFKC(a) + " " + NFKC(b), and
  lowercasing is per character;
- every pre-token lies inside one piece and every piece starts a pre-token: only the regex's
  whitespace alternatives match a space that is not the optional leading space of a word, and
  a single space followed by a non-space is always taken as that leading space;
so the sentence's ids are the concatenation of its pieces' ids. A sentence with a piece that breaks
these conditions (an empty piece from a double, leading or trailing space; a tab, a no-break space
or a character that NFKC turns into a space) is encoded whole, by the library, as before. So is
every batch of a tokenizer of another kind (unigram, word-level: Metaspace pre-tokenizer), with
BPE dropout, truncation or padding, or with added tokens matched after normalisation; a text that
holds an added token the library cuts out (a >>de<< tag that is not special) is encoded whole.

Why it is faster: the library spends ~50 us of CPU per sentence on `Encoding` objects (offsets,
alignments, attention masks) and their conversion to Python lists; here the texts of a batch are
joined and split at spaces in one call, each word is looked up in a table of the words seen
(encoded by the library once, until the table holds `WORDS_KEPT` words and starts over), and
numpy gathers the ids of every text at once: ~10 us of CPU per sentence.
"""

from __future__ import annotations

import gc
import json
import re
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain, repeat

import numpy as np
from tokenizers import Tokenizer

MIN_TEXTS = 64  # smaller batches go to the library directly: too few repeated words to gain
WORDS_KEPT = 300_000  # words whose ids are remembered across batches (~50 MB); then it starts over
# Whitespace as wide as any definition the library's regex could use (Unicode White_Space, Python's
# str.isspace, and the zero-width and separator characters older Unicode versions counted).
WHITESPACE = re.compile(r"[\s\x1c-\x1f\x85\xa0\u180e\u200b-\u200d\u2028\u2029\u2060\ufeff]")
NORMALIZERS = {"NFKC", "Lowercase"}  # normalisers known to act character by character at a space
BOUNDARY = "\x00"  # between two texts joined into one string, so that one split() cuts them all
SEPARATOR = f" {BOUNDARY} "
BATCH_TEXTS = 20_000  # texts split at a time: their ~500k word objects stay ~30 MB


def encode_by_words(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Ids of each text, without special tokens: the library's, computed a word at a time when the
    tokenizer allows it (see the module docstring), else by the library itself."""
    if len(texts) < MIN_TEXTS:
        return _encode_whole(tokenizer, texts)
    encoder = _ENCODERS.get(tokenizer)
    signature = _signature(tokenizer)
    if encoder is None or encoder.signature != signature:
        _ENCODERS.pop(tokenizer, None)
        if not _splits_at_spaces(tokenizer):
            return _encode_whole(tokenizer, texts)
        encoder = _ENCODERS[tokenizer] = WordEncoder(tokenizer, signature)
    return encoder.encode(texts)


class WordEncoder:
    """One byte-level BPE tokenizer's table of words: the ids of each word seen, either first in
    a text (`heads`, encoded as "word") or after a space (`tails`, encoded as " word"), kept for
    the next batches up to `WORDS_KEPT` words."""

    def __init__(self, tokenizer: Tokenizer, signature: tuple[object, ...]) -> None:
        self.tokenizer = weakref.proxy(tokenizer)  # the table must not keep its tokenizer alive
        self.signature = signature
        self.cut_tokens = _cut_tokens(tokenizer)
        self.lock = threading.Lock()  # the server encodes from two threads; the table is shared
        self._clear()

    def _clear(self) -> None:
        self.heads: dict[str, int] = {}  # word -> its row in the table
        self.tails: dict[str, int] = {BOUNDARY: 0}  # row 0: the text boundary, no ids
        self.ids = np.zeros(0, dtype=np.int64)  # (I,) every row's ids, end to end
        self.starts = np.zeros(1, dtype=np.int64)  # (R,) where each row's ids begin in `ids`
        self.lengths = np.zeros(1, dtype=np.int64)  # (R,) how many ids each row has
        self.usable = np.ones(1, dtype=bool)  # (R,) False: texts with this word go whole

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text, equal to `_encode_whole(tokenizer, texts)`."""
        encoded: list[list[int]] = []
        with self.lock, _without_cycle_collection():
            if len(self.lengths) > WORDS_KEPT:
                self._clear()
            for start in range(0, len(texts), BATCH_TEXTS):
                encoded += self._encode_batch(texts[start : start + BATCH_TEXTS])
        return encoded

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        joined = SEPARATOR.join(texts)
        marks = (BOUNDARY, *self.cut_tokens)  # texts holding one are encoded whole
        if joined.count(BOUNDARY) != len(texts) - 1 or any(t in joined for t in self.cut_tokens):
            return self._encode_apart(texts, [any(m in text for m in marks) for text in texts])
        words = joined.split(" ")  # (W,) text i's words, then BOUNDARY, then text i + 1's
        rows = self._rows(self.tails, words, " ")  # (W,) every word as a tail at first
        firsts = np.flatnonzero(rows == 0) + 1  # (n - 1,) the first word of texts 1, 2, ...
        firsts = np.concatenate([[0], firsts])  # (n,)
        head_words = [words[i] for i in firsts.tolist()]
        rows[firsts] = self._rows(self.heads, head_words, "")
        lengths = self.lengths[rows]  # (W,) ids per word
        text_lengths = np.add.reduceat(lengths, firsts)  # (n,) ids per text
        whole = np.flatnonzero(np.logical_and.reduceat(self.usable[rows], firsts) == 0)
        ends = np.cumsum(lengths)  # (W,)
        gather = np.repeat(self.starts[rows] - (ends - lengths), lengths)  # (N,)
        gather += np.arange(len(gather))  # (N,) the position of each id in the table
        flat = self.ids[gather].tolist()
        bounds = np.cumsum(text_lengths).tolist()
        encoded = [flat[start:stop] for start, stop in zip([0, *bounds[:-1]], bounds, strict=True)]
        redo = whole.tolist()
        for i, ids in zip(
            redo, _encode_whole(self.tokenizer, [texts[i] for i in redo]), strict=True
        ):
            encoded[i] = ids
        return encoded

    def _encode_apart(self, texts: list[str], whole: list[bool]) -> list[list[int]]:
        """The texts marked in `whole` encoded whole by the library, the others by words."""
        apart = [
            [text for text, mark in zip(texts, whole, strict=True) if mark is flag]
            for flag in (False, True)
        ]
        by_words = iter(self._encode_batch(apart[0]) if apart[0] else [])
        by_library = iter(_encode_whole(self.tokenizer, apart[1]))
        return [next(by_library) if mark else next(by_words) for mark in whole]

    def _rows(self, table: dict[str, int], words: list[str], prefix: str) -> np.ndarray:
        """The table rows of `words` (W,), adding the words the table does not have yet: encoded
        all at once (`prefix` + word), each checked against the module docstring's conditions."""
        try:  # the common case once the table has filled: every word known
            return np.fromiter(map(table.__getitem__, words), dtype=np.int64, count=len(words))
        except KeyError:
            pass
        rows = np.fromiter(map(table.get, words, repeat(-1)), dtype=np.int64, count=len(words))
        unknown = np.flatnonzero(rows < 0)
        if len(unknown):
            new = list(dict.fromkeys(words[i] for i in unknown.tolist()))
            self._add(table, new, prefix)
            rows[unknown] = [table[words[i]] for i in unknown.tolist()]
        return rows

    def _add(self, table: dict[str, int], words: list[str], prefix: str) -> None:
        normalizer = self.tokenizer.normalizer
        encoded = _encode_whole(self.tokenizer, [prefix + word for word in words])
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        normal = [normalizer.normalize_str(w) for w in words] if normalizer is not None else words
        usable = list(map(is_plain_word, normal))
        first_row = len(self.lengths)
        table.update(zip(words, range(first_row, first_row + len(words)), strict=True))
        self.starts = np.concatenate([self.starts, len(self.ids) + np.cumsum(lengths) - lengths])
        self.lengths = np.concatenate([self.lengths, lengths])
        self.usable = np.concatenate([self.usable, usable])
        self.ids = np.concatenate([self.ids, np.fromiter(chain.from_iterable(encoded), np.int64)])


_ENCODERS: weakref.WeakKeyDictionary[Tokenizer, WordEncoder] = weakref.WeakKeyDictionary()


def is_plain_word(normal: str) -> bool:
    """Whether a word (normalised) keeps its own pre-tokens inside a sentence: not empty, and no
    whitespace that the pre-tokenizer could join with the space before or after it."""
    return bool(normal) and WHITESPACE.search(normal) is None


@contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector while many lists of ints are made: lists of ints cannot form
    cycles, and each collection it would start walks every list alive (10x the cost of the lists
    themselves on a 100k-text batch)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _encode_whole(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """The library's own encoding of whole texts."""
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return [encoding.ids for encoding in encodings]


def _signature(tokenizer: Tokenizer) -> tuple[object, ...]:
    """What a word's ids depend on besides the model, cheap enough to check on every batch: a
    change (a new normaliser, added tokens, ...) starts a new cache."""
    parts = (tokenizer.normalizer, tokenizer.pre_tokenizer)
    return (
        *(part.__getstate__() if part is not None else None for part in parts),
        tokenizer.encode_special_tokens,
        tokenizer.get_vocab_size(with_added_tokens=True),
        repr(sorted(tokenizer.get_added_tokens_decoder().items())),
        tokenizer.truncation,
        tokenizer.padding,
    )


def _splits_at_spaces(tokenizer: Tokenizer) -> bool:
    """True for the pipelines the module docstring proves exact: NFKC / lowercase, byte-level
    pre-tokens without a prefix space, BPE without dropout, no truncation or padding, and added
    tokens that are either inert (special) or found in the raw text (normalized=False), where
    `WordEncoder` can see them."""
    config = json.loads(tokenizer.to_str())
    normalizer = config["normalizer"]
    steps = normalizer.get("normalizers", [normalizer]) if normalizer else []
    pre_tokenizer = config["pre_tokenizer"] or {}
    added_tokens_matched_raw = all(
        not token["normalized"] for token in config["added_tokens"] if _is_cut(tokenizer, token)
    )
    return (
        all(step.get("type") in NORMALIZERS for step in steps)
        and pre_tokenizer.get("type") == "ByteLevel"
        and not pre_tokenizer.get("add_prefix_space")
        and pre_tokenizer.get("use_regex") is True
        and config["model"]["type"] == "BPE"
        and config["model"].get("dropout") is None
        and config["truncation"] is None
        and config["padding"] is None
        and added_tokens_matched_raw
    )


def _is_cut(tokenizer: Tokenizer, token: dict[str, object]) -> bool:
    """Whether the library cuts this added token out of a text that contains it (special tokens
    are ordinary text here: TokenizerPair sets encode_special_tokens)."""
    return not (token["special"] and tokenizer.encode_special_tokens)


def _cut_tokens(tokenizer: Tokenizer) -> tuple[str, ...]:
    """The added tokens (e.g. >>de<< language tags) that the library finds in a text before
    anything else: a text holding one is encoded whole, by the library."""
    return tuple(
        token.content
        for token in tokenizer.get_added_tokens_decoder().values()
        if _is_cut(tokenizer, {"special": token.special})
    )
