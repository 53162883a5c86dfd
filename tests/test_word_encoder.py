"""Encoding a word at a time gives exactly the ids of the `tokenizers` library's own encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer

from transformer.config import TokenizerConfig
from transformer.tokenization import word_encoder
from transformer.tokenization.tokenizer import TokenizerPair, _encode, train_tokenizers
from transformer.tokenization.word_encoder import WordEncoder, encode_by_words

ORDINARY = [
    "A man in a blue shirt is standing on a ladder.",
    "Two dogs play in the snow, don't they? It's 3.5 m deep!",
    "Ein Mädchen mit einem roten Hut lächelt. Straße, Größe, Äpfel, Öl.",
    "Café naïve façade 😀 👍🏽 👨‍👩‍👧 中文 字 العربية",
]
NASTY = [
    "",
    " ",
    "  leading and trailing  ",
    "tab\tinside",
    "line\nbreak and\r\nreturn",
    "no\u00a0break\u2009thin\u3000ideographic space",
    "ligature ﬁne ﬂow and full-width Ａｂｃ １２３",
    "¨ ´ ˘ spacing accents that NFKC turns into a space plus a mark",
    "a \u0301 combining acute alone, e\u0301 and é",
    "zero\u200bwidth\u200dsame\ufeffmarks",
    ">>de<< a language tag, <pad> and </s> as text",
    "\x00 a NUL, \x00 and \x00\x00",
    "numbers 1,000 2nd 3rd ⅓ ² ①",
    "ǅungla ß ẞ İstanbul",  # characters whose lower case or NFKC form is longer
]
CORPUS = (ORDINARY + NASTY) * 3


@pytest.fixture(scope="module", params=["bpe", "unigram", "wordlevel"])
def tokenizers(request: pytest.FixtureRequest) -> TokenizerPair:
    config = TokenizerConfig(kind=request.param, vocab_size=300, min_frequency=1, lowercase=True)
    return train_tokenizers(ORDINARY * 5, ORDINARY[::-1] * 5, config)


def library(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def test_the_nasty_corpus_gets_the_library_ids(tokenizers: TokenizerPair) -> None:
    texts = CORPUS * 3  # more than MIN_TEXTS, so the word path is taken where it applies
    assert len(texts) >= word_encoder.MIN_TEXTS
    assert encode_by_words(tokenizers.source, texts) == library(tokenizers.source, texts)
    assert _encode(tokenizers.source, texts) == library(tokenizers.source, texts)


def test_only_byte_level_bpe_takes_the_word_path(tokenizers: TokenizerPair) -> None:
    kind = "bpe" if "ByteLevel" in tokenizers.source.to_str() else "other"
    word_encoder._ENCODERS.clear()
    encode_by_words(tokenizers.source, CORPUS * 3)
    assert (tokenizers.source in word_encoder._ENCODERS) == (kind == "bpe")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from(list(" \t\u00a0ﬁＡé\u0301a.,'s😀>< \x00")), max_size=12)
        | st.text(max_size=12),
        min_size=1,
        max_size=40,
    )
)
def test_any_text_gets_the_library_ids(bpe: Tokenizer, texts: list[str]) -> None:
    """Random unicode (all of it) and texts made of the characters where splitting at spaces
    could go wrong, against the library, on one word table kept across the examples."""
    encoder = _TABLES.setdefault("bpe", WordEncoder(bpe, word_encoder._signature(bpe)))
    assert encoder.encode(texts) == library(bpe, texts)


_TABLES: dict[str, WordEncoder] = {}


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    """A byte-level BPE tokenizer that has seen the nasty texts, NFKC without lowercasing."""
    config = TokenizerConfig(vocab_size=300, min_frequency=1)
    return train_tokenizers(ORDINARY * 5, NASTY * 5, config).source


def test_the_table_starts_over_when_full(bpe: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(word_encoder, "WORDS_KEPT", 10)
    encoder = WordEncoder(bpe, word_encoder._signature(bpe))
    first = encoder.encode(CORPUS)
    rows = len(encoder.lengths)
    assert rows > 10
    assert encoder.encode(CORPUS) == first == library(bpe, CORPUS)
    assert len(encoder.lengths) <= rows  # emptied, then refilled with this batch's words


def test_a_changed_tokenizer_is_not_served_from_the_old_table() -> None:
    pair = train_tokenizers(ORDINARY * 5, ORDINARY * 5, TokenizerConfig(vocab_size=300))
    tokenizer = pair.source
    texts = ["the ladder is blue"] * word_encoder.MIN_TEXTS
    assert encode_by_words(tokenizer, texts) == library(tokenizer, texts)
    tokenizer.add_tokens(["ladder"])  # an added token is cut out of the text before anything else
    assert encode_by_words(tokenizer, texts) == library(tokenizer, texts)
    assert tokenizer not in word_encoder._ENCODERS  # the word path no longer applies


def test_texts_with_language_tags_are_encoded_whole(bpe: Tokenizer) -> None:
    """Tags added as ordinary (not special) tokens, as multilingual runs add >>xx<<: the library
    cuts them out of the raw text first, so texts holding one go whole; the others by words."""
    tagged = Tokenizer.from_str(bpe.to_str())
    tagged.encode_special_tokens = True
    tagged.add_tokens(
        [AddedToken(">>de<<", normalized=False), AddedToken(">>fr<<", normalized=False)]
    )
    texts = CORPUS * 3 + ["x>>de<<y a dog", "a dog >>fr<<", "a dog"]
    assert encode_by_words(tagged, texts) == library(tagged, texts)
    assert tagged in word_encoder._ENCODERS
    assert library(tagged, [">>de<<"])[0] == [tagged.token_to_id(">>de<<")]  # cut out: one id
    matched_normalized = Tokenizer.from_str(bpe.to_str())
    matched_normalized.encode_special_tokens = True
    matched_normalized.add_tokens([AddedToken("dog", normalized=True)])
    assert encode_by_words(matched_normalized, texts) == library(matched_normalized, texts)
    assert matched_normalized not in word_encoder._ENCODERS
