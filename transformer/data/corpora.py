"""Training data from several corpora and several directions: what to read, in which direction,
with which target-language tag.

    corpora = open_corpora(config.data)
    corpora.streams     # one TrainingStream per (corpus, direction), read in chunks by prepare.py
    corpora.validation  # every direction's validation pairs, one after the other
    corpora.validation_directions  # (n,) the direction (index into corpora.directions) of each

A bilingual config (`data.dataset` one corpus, `data.src_lang` -> `data.tgt_lang`) is one stream
and one direction, read exactly as before. `data.dataset` may list several corpora, each with a
weight (mixture.py) and, for multilingual training, the directions it gives (`pairs`, else every
direction of `data.pairs`). Each (corpus, direction) is opened with `data.open_corpus`, so every
format, check and message of a single corpus applies to each; the validation and test pairs of a
direction come from the first corpus that gives it (the others are read for training only, and
need no validation or test split).

When the config trains into more than one target language (`DataConfig.multilingual`), every
source starts with the tag of its target language (tokenizer.py: `>>de<<`); so does every
source of a run that starts from a checkpoint whose tokenizer has tags.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from transformer.config import DataConfig, parse_pair
from transformer.data.loading import Corpus, open_corpus
from transformer.data.pairs import DataError, PairSource, ParallelText


@dataclass
class TrainingStream:
    """The training pairs of one corpus in one direction."""

    source: PairSource
    direction: str  # "en-de"
    weight: float  # the corpus's data.dataset[].weight
    where: str  # for messages and the prepared data's record: the corpus as the config names it


@dataclass
class Corpora:
    """What a run trains and validates on, over every corpus and direction."""

    directions: list[str]  # "en-de", ... in data.pairs order
    streams: list[TrainingStream]
    validation: ParallelText  # every direction's validation pairs, in `directions` order
    validation_directions: list[int]  # the direction of each validation pair
    test: ParallelText
    test_directions: list[int]

    def stream_direction_ids(self) -> list[int]:
        """The direction (index into `directions`) of each stream."""
        return [self.directions.index(stream.direction) for stream in self.streams]


def open_corpora(config: DataConfig) -> Corpora:
    """Open every (corpus, direction) the config names; read validation and test, not train."""
    directions = [f"{source}-{target}" for source, target in config.directions()]
    streams: list[TrainingStream] = []
    evaluation: dict[str, Corpus] = {}  # direction -> the first corpus that gives it
    for number, source in enumerate(config.training_sources()):
        wanted = [parse_pair(pair, "") for pair in source.pairs] or config.directions()
        where = source.dataset + (f" ({source.subset})" if source.subset else "")
        for src_lang, tgt_lang in wanted:
            direction = f"{src_lang}-{tgt_lang}"
            one = replace(
                config,
                dataset=source.dataset,
                subset=source.subset,
                src_lang=src_lang,
                tgt_lang=tgt_lang,
                pairs=[],
            )
            several = len(directions) > 1 or number > 0
            corpus = _open_one(one, number, direction, several, direction not in evaluation)
            streams.append(TrainingStream(corpus.train, direction, source.weight, where))
            evaluation.setdefault(direction, corpus)
    missing = [direction for direction in directions if direction not in evaluation]
    if missing:
        raise DataError(
            f"no corpus in data.dataset gives {', '.join(missing)}; add one that does, or remove "
            "them from data.pairs"
        )
    validation, validation_directions = _concatenate(
        [evaluation[direction].validation for direction in directions]
    )
    test, test_directions = _concatenate([evaluation[direction].test for direction in directions])
    return Corpora(directions, streams, validation, validation_directions, test, test_directions)


def _open_one(
    config: DataConfig, number: int, direction: str, several: bool, evaluation: bool
) -> Corpus:
    """One corpus in one direction (with its validation and test when `evaluation`); with
    several, a failure says which one it was."""
    try:
        return open_corpus(config, evaluation)
    except DataError as error:
        if not several:
            raise
        raise DataError(
            f"data.dataset[{number}] ({config.dataset}), {direction}: {error}"
        ) from error


def _concatenate(texts: list[ParallelText]) -> tuple[ParallelText, list[int]]:
    """One ParallelText of several, and the index of the text each pair came from."""
    source = [sentence for text in texts for sentence in text.source]
    target = [sentence for text in texts for sentence in text.target]
    labels = [k for k, text in enumerate(texts) for _ in range(len(text))]
    return ParallelText(source, target), labels
