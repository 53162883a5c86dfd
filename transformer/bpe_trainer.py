"""Byte-level BPE trained from counted words: the tokenizers `train_tokenizers` makes, in a fraction
of the time on a sample of millions of sentences.

    pair = train_tokenizers_by_counts(sample.source, sample.target, config.data.tokenizer)

A BPE trainer sees a corpus only as how often each pre-token occurs: its merges come from those
counts alone. The `tokenizers` library counts them by normalising and pre-tokenizing every sentence,
~35 us of CPU each; here the sentences are cut at their single spaces (with the conditions, and the
proof that it gives the same pre-tokens, of `word_encoder`), each distinct word is normalised and
pre-tokenized once, and the trainer is fed every pre-token as often as it occurred, as long strings
of it that a whitespace split cuts back into words. Sentences that break the conditions are
pre-tokenized whole. Same counts, same trainer settings, hence the same merges and vocabulary: the
tests compare the JSON of both tokenizers. Unigram and word-level tokenizers are trained as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from transformer.config import TokenizerConfig
from transformer.tokenizer import (
    SPECIAL_TOKENS,
    UNK,
    TokenizerPair,
    _empty_tokenizer,
    train_tokenizers,
)
from transformer.word_encoder import BOUNDARY, SEPARATOR, is_plain_word

BATCH_TEXTS = 20_000  # sentences split at a time
REPEATS = 50_000  # a pre-token is fed to the trainer at most this many times per string


def train_tokenizers_by_counts(
    src_texts: list[str], tgt_texts: list[str], config: TokenizerConfig
) -> TokenizerPair:
    """What `train_tokenizers(src_texts, tgt_texts, config)` returns, the same JSON, sooner."""
    if config.kind != "bpe":
        return train_tokenizers(src_texts, tgt_texts, config)
    if config.joint:
        joint = _train_bpe(_count(src_texts, config) + _count(tgt_texts, config), config)
        return TokenizerPair(joint, joint)
    source = _train_bpe(_count(src_texts, config), config)
    target = _train_bpe(_count(tgt_texts, config), config)
    return TokenizerPair(source, target)


def _count(texts: list[str], config: TokenizerConfig) -> Counter[str]:
    """How often each pre-token (byte-level, as the trainer sees it) occurs in `texts`."""
    reference = _empty_tokenizer(config)  # its normaliser and pre-tokenizer are the trainer's
    heads: Counter[str] = Counter()  # first words of texts
    words: Counter[str] = Counter()  # every word, first ones included
    whole: list[str] = []  # texts to pre-tokenize whole
    for start in range(0, len(texts), BATCH_TEXTS):
        batch = texts[start : start + BATCH_TEXTS]
        if SEPARATOR.join(batch).count(BOUNDARY) != len(batch) - 1:  # a text holds the marker
            whole += [text for text in batch if BOUNDARY in text]
            batch = [text for text in batch if BOUNDARY not in text]
        heads.update(text.split(" ", 1)[0] for text in batch)
        words.update(SEPARATOR.join(batch).split(" "))
    words.pop(BOUNDARY, None)
    tails = words - heads  # words after a space
    unusable = {w for w in words if not is_plain_word(reference.normalizer.normalize_str(w))}
    if unusable:  # their texts are pre-tokenized whole, and their words not counted
        for text in texts:
            split = text.split(" ")
            if BOUNDARY not in text and not unusable.isdisjoint(split):
                whole.append(text)
                heads[split[0]] -= 1
                tails.subtract(split[1:])
    counts: Counter[str] = Counter()
    for table, prefix in ((heads, ""), (tails, " ")):
        for word, count in table.items():
            if count > 0:
                for piece in _pre_tokens(reference, prefix + word):
                    counts[piece] += count
    for text in whole:
        counts.update(_pre_tokens(reference, text))
    return counts


def _pre_tokens(reference: Tokenizer, text: str) -> list[str]:
    """The trainer's words for `text`: normalised, then pre-tokenized (byte-level strings)."""
    normal = reference.normalizer.normalize_str(text)
    return [piece for piece, _ in reference.pre_tokenizer.pre_tokenize_str(normal)]


def _train_bpe(counts: Counter[str], config: TokenizerConfig) -> Tokenizer:
    """Train on the counts (a scratch tokenizer that splits at spaces: byte-level pre-tokens hold
    none), then put the trained model into the tokenizer `train_tokenizers` would build."""
    scratch = Tokenizer(models.BPE(unk_token=UNK))
    scratch.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(  # the settings of tokenizer._train_one
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    scratch.train_from_iterator(_repeated(counts), trainer)
    tokenizer = _empty_tokenizer(config)
    tokenizer.model = scratch.model
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def _repeated(counts: Counter[str]) -> Iterator[str]:
    """Each pre-token as many times as it occurred, in strings of up to REPEATS copies."""
    for piece, count in counts.items():
        for start in range(0, count, REPEATS):
            yield " ".join([piece] * min(REPEATS, count - start))
