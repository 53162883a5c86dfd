"""Subword tokenizers (BPE, unigram, word-level) for source and target, trained with the Hugging Face `tokenizers` library.

    pair = train_tokenizers(corpus["train"].source, corpus["train"].target, config.data.tokenizer)
    ids = pair.encode_source(["A dog runs."])  # [[...]], no BOS/EOS: collate adds them
    text = pair.decode_target(hypotheses)  # detokenized strings, ready for sacreBLEU

Round trip. BPE (the default) uses a byte-level pre-tokenizer and decoder: every string is split into
its UTF-8 bytes, so no character is ever unknown and `decode(encode(s)) == normalize(s)` exactly, for any
unicode text including runs of spaces, tabs and newlines. "Up to normalisation" means only this:
NFKC (compatibility characters such as the ligature "ﬁ" or full-width "Ａ" become "fi" and "A") and,
with `lowercase=True`, lowercasing. Whitespace is never collapsed or stripped.

Word-level (kind=wordlevel, the tutorial's behaviour) marks each space with "▁" (Metaspace) and splits off
punctuation, so known words come back with their spacing. Its limits: a word not seen in training becomes
<unk> and is dropped by decoding, leading spaces are lost, and tabs/newlines stay inside words.

Unigram (kind=unigram) is SentencePiece's default model (Kudo, 2018), trained by the `tokenizers`
library: a vocabulary of subword pieces with probabilities, each sentence split into its most likely
pieces, spaces marked with "▁" (Metaspace) as SentencePiece does. Known text comes back exactly,
spacing included; its limits: a character never seen in training becomes <unk> and is dropped by
decoding, and a leading space is lost. `min_frequency` does not apply to it.

Special tokens have fixed ids, the same for both sides, checked against every tokenizer that is built
or loaded (the tutorial took them from the wrong tokenizer): PAD 0, UNK 1, BOS 2, EOS 3.

Language tags. A multilingual model (data.pairs) reads which language to translate into from a tag
at the start of the source, `>>de<<` (Johnson et al. 2017; the OPUS-MT convention, so imported
multi-target OPUS-MT models and ours are used the same way). Tags are added tokens of the source
vocabulary: one id each, never split into subwords, and never produced by decoding (their ids are
in `language_tag_ids`, which the searches exclude). `encode_source(texts, tgt_lang)` puts the tag
id in front of the sentence's own ids, the same whether a training pair, a validation sentence or a
user's line is encoded; a line that already starts with a tag keeps its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)

from transformer.config import TokenizerConfig
from transformer.tokenization.word_encoder import encode_by_words

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # trained in this order, so their ids are 0, 1, 2, 3
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

# A target-language tag at the start of a line, and the whitespace after it: ">>de<< A dog." -> "de"
LEADING_TAG = re.compile(r"\s*>>([A-Za-z0-9_-]+)<<\s*")
TAG = re.compile(r">>([A-Za-z0-9_-]+)<<")

JOINT_FILE = "tokenizer.json"  # save(): one file when source and target share a vocabulary
SOURCE_FILE, TARGET_FILE = "source.json", "target.json"  # ... two otherwise


class LanguageError(ValueError):
    """A target language the model cannot translate into, or none given to a multilingual model.
    A message about one sentence starts "line N:", N counted from 1 within the batch encoded."""

    def numbered(self, first: int = 1, noun: str = "line") -> str:
        """The message with its line counted as the caller counts its input: translate's file
        lines (first = the batch's first line number), or the server's sentences ("sentence 0")."""
        return re.sub(
            r"^line (\d+):", lambda match: f"{noun} {first + int(match.group(1)) - 1}:", str(self)
        )


def language_tag(language: str) -> str:
    """The source token that asks for `language`: "de" -> ">>de<<"."""
    return f">>{language}<<"


def split_language_tag(text: str) -> tuple[str | None, str]:
    """(language of a leading >>xx<< tag or None, the text after it)."""
    match = LEADING_TAG.match(text)
    if match is None:
        return None, text
    return match.group(1), text[match.end() :]


class TokenizerPair:
    """The source and the target tokenizer; `source is target` when the vocabulary is joint.

    One object so that training, checkpoints and translate.py always handle the two together.
    """

    def __init__(self, source: Tokenizer, target: Tokenizer, source_eos: bool = False) -> None:
        """source_eos: end every encoded source sentence with EOS (model.source_eos, which Marian /
        OPUS-MT models were trained with); it comes from the model's config, not from the JSON."""
        for side, tokenizer in (("source", source), ("target", target)):
            _check_special_tokens(tokenizer, side)
            # Text that happens to contain "<pad>" or "</s>" is ordinary text, never a control token.
            # (This flag is not saved in the JSON, so it is set here, where every pair is built.)
            tokenizer.encode_special_tokens = True
        self.source = source
        self.target = target
        self.source_eos = source_eos

    @property
    def joint(self) -> bool:
        """True when source and target share one vocabulary (so embeddings can be shared)."""
        return self.source is self.target

    @property
    def src_vocab_size(self) -> int:
        return self.source.get_vocab_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.target.get_vocab_size()

    def encode_source(
        self, texts: list[str], tgt_lang: str | Sequence[str | None] | None = None
    ) -> list[list[int]]:
        """Subword ids of each source sentence (batched, multi-threaded): no BOS, and EOS at the
        end only with `source_eos`. Training, validation, translate.py, the server and the
        attention plots all encode sources here, so they all agree on it.

        Multilingual models (`language_tags` not empty): each sentence starts with the tag of its
        target language, from a leading ">>xx<<" in its text, else from `tgt_lang` (one language
        for all, or one per sentence). LanguageError when neither gives one, or it is not a
        language of this model."""
        tags = self.language_tags
        if not tags and tgt_lang is None:
            ids = _encode(self.source, texts)
        else:
            ids = self._encode_tagged(texts, tgt_lang, tags)
        return [sentence + [EOS_ID] for sentence in ids] if self.source_eos else ids

    def _encode_tagged(
        self, texts: list[str], tgt_lang: str | Sequence[str | None] | None, tags: dict[str, int]
    ) -> list[list[int]]:
        wanted = (
            [tgt_lang] * len(texts) if tgt_lang is None or isinstance(tgt_lang, str) else tgt_lang
        )
        if len(wanted) != len(texts):
            raise ValueError(f"{len(wanted)} target languages for {len(texts)} sentences")
        split = [split_language_tag(text) for text in texts]
        languages = [own or given for (own, _), given in zip(split, wanted, strict=True)]
        if not tags:
            raise LanguageError(
                "this model translates into one language only: it has no target-language tags, so "
                "leave out the target language (--tgt-lang / tgt_lang)"
            )
        known = ", ".join(sorted(tags))
        blank = [not rest.strip() for _, rest in split]  # stay empty: nothing to translate
        for number, (language, empty) in enumerate(zip(languages, blank, strict=True), start=1):
            if empty:
                continue
            if language is None:
                raise LanguageError(
                    f"line {number}: this model translates into several languages ({known}); say "
                    "which with --tgt-lang (tgt_lang for the server), or start the line with its "
                    "tag, e.g. " + language_tag(sorted(tags)[0])
                )
            if language not in tags:
                raise LanguageError(
                    f"line {number}: this model was not trained to translate into "
                    f"{language!r}; it knows {known}"
                )
        ids = _encode(self.source, [rest for _, rest in split])
        tagged = zip(languages, ids, blank, strict=True)
        return [[] if empty else [tags[lang], *sentence] for lang, sentence, empty in tagged]

    @property
    def language_tags(self) -> dict[str, int]:
        """{language: id} of the source vocabulary's >>xx<< tags; empty for a bilingual model."""
        return {
            match.group(1): index
            for index, token in self.source.get_added_tokens_decoder().items()
            if (match := TAG.fullmatch(token.content))
        }

    @property
    def language_tag_ids(self) -> tuple[int, ...]:
        """Ids a translation never contains (the searches exclude them): the >>xx<< tags of the
        target vocabulary. With separate vocabularies the source's tag ids are ordinary target
        subwords, so they are looked up in the target tokenizer (where they are usually absent)."""
        return tuple(
            sorted(
                index
                for index, token in self.target.get_added_tokens_decoder().items()
                if TAG.fullmatch(token.content)
            )
        )

    def with_language_tags(self, languages: Iterable[str]) -> TokenizerPair:
        """A copy whose source vocabulary (the joint one, if joint) has a tag for each language,
        added after the trained vocabulary so that the subword ids stay as they were."""
        source = Tokenizer.from_str(self.source.to_str())
        tags = [language_tag(language) for language in sorted(set(languages))]
        source.add_tokens([AddedToken(tag, normalized=False) for tag in tags])
        target = source if self.joint else self.target
        return TokenizerPair(source, target, self.source_eos)

    def encode_target(self, texts: list[str]) -> list[list[int]]:
        """Subword ids of each target sentence, without BOS/EOS (collate adds them)."""
        return _encode(self.target, texts)

    def with_source_eos(self, source_eos: bool) -> TokenizerPair:
        """The same tokenizers, encoding sources with or without a final EOS."""
        return TokenizerPair(self.source, self.target, source_eos)

    def decode_target(self, ids: list[list[int]]) -> list[str]:
        """Detokenized target sentences; special tokens are removed wherever they occur."""
        return self.target.decode_batch(ids, skip_special_tokens=True)

    def decode_source(self, ids: list[list[int]]) -> list[str]:
        """Detokenized source sentences (for logging samples)."""
        return self.source.decode_batch(ids, skip_special_tokens=True)

    def to_json(self) -> dict[str, str]:
        """JSON strings a checkpoint can carry: {"joint": ...} or {"source": ..., "target": ...}."""
        if self.joint:
            return {"joint": self.source.to_str()}
        return {"source": self.source.to_str(), "target": self.target.to_str()}

    @classmethod
    def from_json(cls, d: dict[str, str], source_eos: bool = False) -> TokenizerPair:
        """Inverse of `to_json`; source_eos as in the constructor."""
        if "joint" in d:
            joint = Tokenizer.from_str(d["joint"])
            return cls(joint, joint, source_eos)
        if "source" in d and "target" in d:
            source, target = Tokenizer.from_str(d["source"]), Tokenizer.from_str(d["target"])
            return cls(source, target, source_eos)
        raise ValueError(
            f"tokenizer JSON must have the key 'joint' or the keys 'source' and 'target', "
            f"not {sorted(d)}"
        )

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json (joint) or source.json and target.json into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in self.to_json().items():
            filename = JOINT_FILE if name == "joint" else f"{name}.json"
            (directory / filename).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path, source_eos: bool = False) -> TokenizerPair:
        """Read what `save` wrote; source_eos as in the constructor."""
        directory = Path(directory)
        if (directory / JOINT_FILE).is_file():
            joint = (directory / JOINT_FILE).read_text(encoding="utf-8")
            return cls.from_json({"joint": joint}, source_eos)
        files = {"source": directory / SOURCE_FILE, "target": directory / TARGET_FILE}
        if not all(path.is_file() for path in files.values()):
            raise FileNotFoundError(
                f"no tokenizer in {str(directory)!r}: expected {JOINT_FILE}, "
                f"or {SOURCE_FILE} and {TARGET_FILE}"
            )
        return cls.from_json(
            {name: path.read_text(encoding="utf-8") for name, path in files.items()}, source_eos
        )


def train_tokenizers(
    src_texts: list[str], tgt_texts: list[str], config: TokenizerConfig
) -> TokenizerPair:
    """Train on the training split only (never validation or test, which would leak them)."""
    if config.joint:
        joint = _train_one(_chain(src_texts, tgt_texts), len(src_texts) + len(tgt_texts), config)
        return TokenizerPair(joint, joint)
    source = _train_one(iter(src_texts), len(src_texts), config)
    target = _train_one(iter(tgt_texts), len(tgt_texts), config)
    return TokenizerPair(source, target)


SAMPLE_SEED = 20240521  # fixed, so the tokenizer (and every id) is the same on every run


@dataclass
class PairSample:
    """A uniform random sample of a corpus's pairs, in corpus order, and the corpus size seen."""

    source: list[str]
    target: list[str]
    seen: int  # pairs in the corpus; the sample holds min(seen, size) of them


def reservoir_sample(
    chunks: Iterable[tuple[list[str], list[str]]], size: int, seed: int = SAMPLE_SEED
) -> PairSample:
    """Draw `size` pairs uniformly from a stream of (sources, targets) chunks in one pass, holding
    only the sample (reservoir sampling, Algorithm R: pair i replaces a random slot with probability
    size / (i + 1)). A corpus of at most `size` pairs is returned whole, in order, so small corpora
    train exactly the tokenizer they trained before sampling existed.

    SentencePiece's `input_sentence_size` does the same, for the same reason: a few million
    sentences give the same subword vocabulary as the whole of a much larger corpus."""
    rng = np.random.default_rng(seed)
    slots: list[int] = []  # corpus index of the pair in each reservoir slot
    source: list[str] = []
    target: list[str] = []
    seen = 0
    for chunk_source, chunk_target in chunks:
        fill = min(len(chunk_source), max(size - seen, 0))  # while the reservoir is not yet full
        slots.extend(range(seen, seen + fill))
        source.extend(chunk_source[:fill])
        target.extend(chunk_target[:fill])
        positions = np.arange(seen + fill, seen + len(chunk_source))  # (n,) corpus indices
        if len(positions):
            draws = rng.integers(0, positions + 1)  # (n,) slot candidates, each in [0, i]
            for k in np.flatnonzero(draws < size).tolist():  # later draws overwrite earlier ones
                slot, i = int(draws[k]), int(positions[k])
                slots[slot] = i
                source[slot] = chunk_source[i - seen]
                target[slot] = chunk_target[i - seen]
        seen += len(chunk_source)
    order = sorted(range(len(slots)), key=slots.__getitem__)  # back to corpus order
    return PairSample([source[k] for k in order], [target[k] for k in order], seen)


def _chain(first: list[str], second: list[str]) -> Iterator[str]:
    yield from first
    yield from second


def _train_one(texts: Iterator[str], length: int, config: TokenizerConfig) -> Tokenizer:
    tokenizer = empty_tokenizer(config)
    if config.kind == "bpe":
        trainer = trainers.BpeTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing unknown
            show_progress=False,
        )
    elif config.kind == "unigram":
        # No min_frequency here: unigram starts from all frequent substrings and prunes the pieces
        # whose removal costs the corpus likelihood least until vocab_size remain.
        trainer = trainers.UnigramTrainer(
            vocab_size=config.vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            unk_token=UNK,
            show_progress=False,
        )
    else:
        trainer = trainers.WordLevelTrainer(
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
        )
    tokenizer.train_from_iterator(texts, trainer, length=length)
    return tokenizer


def empty_tokenizer(config: TokenizerConfig) -> Tokenizer:
    """Untrained tokenizer with the normaliser, pre-tokenizer and decoder that make it reversible."""
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if config.lowercase else [])
    if config.kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        # add_prefix_space=False: a prefix space would come back from decoding as an extra space.
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
    elif config.kind == "wordlevel":
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Metaspace(prepend_scheme="always"), pre_tokenizers.Punctuation()]
        )
        tokenizer.decoder = decoders.Metaspace(prepend_scheme="always")
    elif config.kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
        tokenizer.decoder = decoders.Metaspace(prepend_scheme="always")
    else:
        raise ValueError(
            f"data.tokenizer.kind must be bpe, unigram or wordlevel, not {config.kind!r}"
        )
    tokenizer.normalizer = normalizers.Sequence(steps)
    return tokenizer


def _check_special_tokens(tokenizer: Tokenizer, side: str) -> None:
    """The whole project assumes PAD/UNK/BOS/EOS = 0/1/2/3; fail loudly if a tokenizer disagrees."""
    for token, expected in zip(SPECIAL_TOKENS, (PAD_ID, UNK_ID, BOS_ID, EOS_ID), strict=True):
        found = tokenizer.token_to_id(token)
        if found != expected:
            raise ValueError(
                f"the {side} tokenizer maps {token} to id {found}, expected {expected}; "
                "it was not built by transformer.tokenization.tokenizer.train_tokenizers"
            )


def _encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """The library's ids (no special tokens), a word at a time where that is exact and faster."""
    return encode_by_words(tokenizer, texts)
