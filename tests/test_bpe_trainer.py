"""Byte-level BPE trained from counted words is the tokenizer `train_tokenizers` trains."""

from __future__ import annotations

import pytest
from tokenizers import pre_tokenizers

from tests.test_word_encoder import NASTY, ORDINARY
from transformer.config import TokenizerConfig
from transformer.tokenization import bpe_trainer
from transformer.tokenization.bpe_trainer import train_tokenizers_by_counts
from transformer.tokenization.tokenizer import empty_tokenizer, train_tokenizers

SOURCE = ORDINARY * 20 + NASTY * 2
TARGET = ORDINARY[::-1] * 20 + NASTY[::-1] * 2


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"joint": False, "lowercase": True},
        {"min_frequency": 1, "vocab_size": 600},  # a vocabulary larger than the merges can fill
    ],
)
def test_same_tokenizer_as_training_on_the_sentences(
    settings: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        bpe_trainer, "BATCH_TEXTS", 50
    )  # several batches, texts with NUL among them
    monkeypatch.setattr(bpe_trainer, "REPEATS", 7)  # frequent words fed in several strings
    config = TokenizerConfig(**{"vocab_size": 300, "min_frequency": 2, **settings})
    expected = train_tokenizers(SOURCE, TARGET, config)
    assert train_tokenizers_by_counts(SOURCE, TARGET, config).to_json() == expected.to_json()


@pytest.mark.parametrize("kind", ["unigram", "wordlevel"])
def test_other_kinds_are_trained_on_the_sentences(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    monkeypatch.setattr(bpe_trainer, "train_tokenizers", lambda *args: calls.append(args))
    config = TokenizerConfig(kind=kind)
    train_tokenizers_by_counts(SOURCE, TARGET, config)
    assert calls == [(SOURCE, TARGET, config)]


def test_counts_are_the_pre_tokens_of_every_sentence() -> None:
    config = TokenizerConfig()
    reference = empty_tokenizer(config)
    expected: dict[str, int] = {}
    for text in SOURCE:
        for piece in bpe_trainer._pre_tokens(reference, text):
            expected[piece] = expected.get(piece, 0) + 1
    assert bpe_trainer._count(SOURCE, config) == expected


def test_byte_level_pieces_hold_no_whitespace() -> None:
    """The scratch trainer cuts the fed strings at whitespace: no byte-level character is one."""
    assert not any(character.isspace() for character in pre_tokenizers.ByteLevel.alphabet())
