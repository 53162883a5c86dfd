"""Tokenizers: fixed special ids, reversibility up to normalisation, serialisation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models

from transformer.config import ConfigError, TokenizerConfig, load_config
from transformer.tokenization.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    TokenizerPair,
    train_tokenizers,
)

SOURCE = [
    "A man in a blue shirt is standing on a ladder.",
    "Two dogs play in the snow.",
    "A girl  with   a red hat,\tsmiling.",
    "Ünïcödé café — naïve façade ﬁne 😀",
] * 5
TARGET = [
    "Ein Mann in einem blauen Hemd steht auf einer Leiter.",
    "Zwei Hunde spielen im Schnee.",
    "Ein Mädchen mit einem roten Hut lächelt.",
    "Straße, Größe, Äpfel, Öl, Übung.",
] * 5


@pytest.fixture(scope="module")
def bpe() -> TokenizerPair:
    return train_tokenizers(SOURCE, TARGET, TokenizerConfig(vocab_size=400, min_frequency=1))


@pytest.fixture(scope="module")
def unigram() -> TokenizerPair:
    return train_tokenizers(SOURCE, TARGET, TokenizerConfig(kind="unigram", vocab_size=150))


@pytest.mark.parametrize("kind", ["bpe", "unigram", "wordlevel"])
def test_special_token_ids_are_fixed(kind: str) -> None:
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    pair = train_tokenizers(
        SOURCE, TARGET, TokenizerConfig(kind=kind, vocab_size=150, min_frequency=1, joint=False)
    )
    for tokenizer in (pair.source, pair.target):
        ids = [tokenizer.token_to_id(t) for t in ("<pad>", "<unk>", "<s>", "</s>")]
        assert ids == [0, 1, 2, 3]


def test_joint_and_separate_vocabularies() -> None:
    joint = train_tokenizers(SOURCE, TARGET, TokenizerConfig(vocab_size=300, min_frequency=1))
    assert joint.joint and joint.source is joint.target
    assert joint.src_vocab_size == joint.tgt_vocab_size
    separate = train_tokenizers(
        SOURCE, TARGET, TokenizerConfig(vocab_size=300, min_frequency=1, joint=False)
    )
    assert not separate.joint and separate.source is not separate.target


def test_encoding_adds_no_bos_eos(bpe: TokenizerPair) -> None:
    ids = bpe.encode_source(["Two dogs play.", ""])
    assert ids[1] == []
    assert BOS_ID not in ids[0] and EOS_ID not in ids[0]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_bpe_round_trip_is_exact_up_to_normalisation(bpe: TokenizerPair, text: str) -> None:
    # Whitespace runs, tabs, newlines, emoji, unseen scripts: all come back (byte-level BPE).
    (ids,) = bpe.encode_target([text])
    assert UNK_ID not in ids
    assert bpe.decode_target([ids]) == [bpe.target.normalizer.normalize_str(text)]


# Text made of characters the unigram model saw in training, without a leading space.
SEEN = sorted(set("".join(TARGET)) - {"\t"})


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=SEEN, max_size=40).map(lambda text: text.lstrip(" ")))
def test_unigram_round_trip_of_seen_characters_is_exact(unigram: TokenizerPair, text: str) -> None:
    # Spacing included (runs of spaces, a trailing space): Metaspace keeps every space as "▁".
    (ids,) = unigram.encode_target([text])
    assert UNK_ID not in ids
    assert unigram.decode_target([ids]) == [unigram.target.normalizer.normalize_str(text)]


def test_unigram_splits_rare_words_into_pieces_and_unseen_characters_into_unk(
    unigram: TokenizerPair,
) -> None:
    pieces = unigram.target.encode("Schneemann", add_special_tokens=False).tokens
    assert len(pieces) > 1 and pieces[0].startswith("▁")  # no such word: known pieces instead
    assert "".join(pieces) == "▁Schneemann"
    (ids,) = unigram.encode_target(["Zwei Hunde ✓"])  # ✓ never seen: <unk>, dropped on decoding
    assert UNK_ID in ids
    assert unigram.decode_target([ids]) == ["Zwei Hunde "]


def test_normalisation_is_nfkc_and_optionally_lowercase() -> None:
    lower = train_tokenizers(
        SOURCE, TARGET, TokenizerConfig(vocab_size=300, min_frequency=1, lowercase=True)
    )
    text = "ﬁne  ＡBC\tDéjà vu"
    assert lower.decode_target(lower.encode_target([text])) == ["fine  abc\tdéjà vu"]


def test_special_token_text_is_ordinary_text(bpe: TokenizerPair) -> None:
    loaded = TokenizerPair.from_json(bpe.to_json())  # the flag must survive serialisation
    for pair in (bpe, loaded):
        (ids,) = pair.encode_source(["a <pad> b </s>"])
        assert PAD_ID not in ids and EOS_ID not in ids
        assert pair.decode_source([ids]) == ["a <pad> b </s>"]


def test_decode_strips_special_tokens(bpe: TokenizerPair) -> None:
    (ids,) = bpe.encode_target(["Zwei Hunde"])
    assert bpe.decode_target([[BOS_ID, *ids, EOS_ID, PAD_ID]]) == ["Zwei Hunde"]


def test_wordlevel_round_trip_for_known_words() -> None:
    pair = train_tokenizers(
        SOURCE, TARGET, TokenizerConfig(kind="wordlevel", vocab_size=200, min_frequency=1)
    )
    assert pair.decode_target(pair.encode_target(["Zwei Hunde spielen im Schnee."])) == [
        "Zwei Hunde spielen im Schnee."
    ]
    (ids,) = pair.encode_target(["Zwei Katzen"])  # unseen word: <unk>, dropped on decoding
    assert UNK_ID in ids


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
@pytest.mark.parametrize("joint", [True, False])
def test_json_and_directory_round_trip(tmp_path, joint: bool, kind: str) -> None:
    pair = train_tokenizers(
        SOURCE, TARGET, TokenizerConfig(kind=kind, vocab_size=150, min_frequency=1, joint=joint)
    )
    for loaded in (TokenizerPair.from_json(pair.to_json()), _saved_and_loaded(pair, tmp_path)):
        assert loaded.joint == joint
        assert loaded.encode_source(SOURCE) == pair.encode_source(SOURCE)
        assert loaded.encode_target(TARGET) == pair.encode_target(TARGET)


def _saved_and_loaded(pair: TokenizerPair, directory) -> TokenizerPair:
    pair.save(directory)
    return TokenizerPair.load(directory)


def test_foreign_tokenizer_is_rejected() -> None:
    foreign = Tokenizer(models.WordLevel({"[UNK]": 0, "<pad>": 1}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match="maps <pad> to id 1, expected 0"):
        TokenizerPair(foreign, foreign)


def test_unknown_kind_is_a_config_error_that_lists_the_kinds() -> None:
    with pytest.raises(ConfigError, match="must be bpe, unigram or wordlevel, not 'spm'"):
        load_config(None, ["data.tokenizer.kind=spm"])
