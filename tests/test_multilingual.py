"""Several corpora and directions: one prepared split with target-language tags, per-direction
validation, corpus weights, and the clear errors around them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_model_config
from transformer.config import DataConfig, SourceConfig, SplitsConfig, TokenizerConfig
from transformer.data.batching import make_loader
from transformer.data.corpora import open_corpora
from transformer.data.loading import DataError
from transformer.data.prepare import PreparedData, fingerprint, prepare_data
from transformer.model import build_transformer
from transformer.tokenization.tokenizer import language_tag
from transformer.training.validation import Directions, validate

ROOT = Path(__file__).parent.parent
# Three "languages" with the same word order: a word-for-word dictionary makes aligned captions.
ENGLISH = "the a dog cat runs sleeps big small red green house tree man woman child".split()
GERMAN = "der ein hund katze rennt schläft groß klein rot grün haus baum mann frau kind".split()
FRENCH = (
    "le un chien chat court dort grand petit rouge vert maison arbre homme femme enfant".split()
)
LANGUAGES = {"en": ENGLISH, "de": GERMAN, "fr": FRENCH}
MAX_POSITIONS = 64


def write_corpus(directory: Path, pairs: int = 60) -> Path:
    """{train,val,test}.{en,de,fr}: the same captions in the three languages."""
    directory.mkdir(parents=True, exist_ok=True)
    sizes = {"train": pairs, "val": 8, "test": 8}
    for split, size in sizes.items():
        offset = {"train": 0, "val": 1000, "test": 2000}[split]
        for lang, words in LANGUAGES.items():
            lines = [
                " ".join(words[(k * 7 + j * 3) % len(words)] for j in range(3 + k % 4))
                for k in range(offset, offset + size)
            ]
            (directory / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def data_config(dataset: object, **changes: object) -> DataConfig:
    config = DataConfig(
        dataset=dataset,  # type: ignore[arg-type]
        splits=SplitsConfig("train", "val", "test"),
        max_length=40,
        tokenizer=TokenizerConfig(kind="wordlevel", vocab_size=100, min_frequency=1),
    )
    return dataclasses.replace(config, **changes)


def prepare(config: DataConfig, root: Path) -> PreparedData:
    return prepare_data(config, MAX_POSITIONS, root)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


def test_each_source_starts_with_its_target_languages_tag_added_once(
    corpus: Path, tmp_path: Path
) -> None:
    config = data_config(str(corpus), pairs=["en-de", "en-fr", "de-en"])
    prepared = prepare(config, tmp_path / "cache")
    tags = prepared.tokenizers.language_tags
    assert sorted(tags) == ["de", "en", "fr"]
    vocabulary = prepared.tokenizers.source.get_vocab(with_added_tokens=True)
    assert sum(token.startswith(">>") for token in vocabulary) == 3  # once each
    assert prepared.directions == ["en-de", "en-fr", "de-en"]
    train = prepared.splits["train"]
    assert len(train) == 3 * 60
    for i in range(len(train)):
        direction = prepared.directions[prepared.stream_directions[int(prepared.train_streams[i])]]
        source = train[i][0].tolist()
        assert source[0] == tags[direction.split("-")[1]]
        assert source[1] not in tags.values()  # one tag, never split into pieces
    # A user's line that starts with a tag encodes to the same single id.
    line = prepared.tokenizers.encode_source([f"{language_tag('fr')} the dog runs"])[0]
    assert (
        line[0] == tags["fr"]
        and line[1:] == prepared.tokenizers.encode_source(["the dog runs"], "fr")[0][1:]
    )


def test_mixed_batches_carry_each_sentences_own_tag(corpus: Path, tmp_path: Path) -> None:
    config = data_config(str(corpus), pairs=["en-de", "en-fr"], pair_temperature=3.0)
    prepared = prepare(config, tmp_path / "cache")
    tags = prepared.tokenizers.language_tags
    from transformer.data.batching import TokenBatchSampler

    train = prepared.splits["train"]
    sampler = TokenBatchSampler(
        train.src_lengths, train.tgt_lengths, 120, seed=1, mixture=prepared.mixture(3.0)
    )
    batches = list(sampler)
    mixed = 0
    for indices, batch in zip(batches, make_loader(train, batches), strict=True):
        expected = [
            tags[prepared.directions[int(prepared.train_streams[i])].split("-")[1]] for i in indices
        ]
        assert batch.src[:, 0].tolist() == expected
        mixed += len(set(expected)) > 1
    assert mixed > 0


def test_per_direction_validation_equals_scoring_each_direction_alone(
    corpus: Path, tmp_path: Path
) -> None:
    from transformer.config import Config
    from transformer.training.start import fit_model_to_tokenizers

    prepared = prepare(data_config(str(corpus), pairs=["en-de", "en-fr"]), tmp_path / "cache")
    config = fit_model_to_tokenizers(Config(model=tiny_model_config()), prepared.tokenizers)
    config = dataclasses.replace(
        config, decode=dataclasses.replace(config.decode, max_len_a=1.0, max_len_b=2)
    )
    torch.manual_seed(0)
    model = build_transformer(config.model)
    split, references = prepared.splits["validation"], prepared.texts["validation"].target
    labels = prepared.sentence_directions["validation"]
    together = validate(
        model,
        split,
        references,
        prepared.tokenizers,
        config,
        torch.device("cpu"),
        directions=Directions(prepared.directions, labels),
    )
    assert sorted(together.per_direction) == ["en-de", "en-fr"]
    for k, name in enumerate(prepared.directions):
        chosen = torch.nonzero(labels == k).flatten().tolist()
        alone_split = type(split)(
            [split[i][0].tolist() for i in chosen], [split[i][1].tolist() for i in chosen]
        )
        alone = validate(
            model,
            alone_split,
            [references[i] for i in chosen],
            prepared.tokenizers,
            config,
            torch.device("cpu"),
        )
        measured = together.per_direction[name]
        assert measured.scores.bleu == pytest.approx(alone.scores.bleu)
        assert measured.scores.chrf == pytest.approx(alone.scores.chrf)
        assert measured.loss == pytest.approx(alone.loss, rel=1e-5)
        assert measured.hypotheses == alone.hypotheses
    means = [r.scores.chrf for r in together.per_direction.values()]
    assert together.scores.chrf == pytest.approx(sum(means) / len(means))


def test_a_bilingual_config_is_one_untagged_stream_taken_whole(
    corpus: Path, tmp_path: Path
) -> None:
    prepared = prepare(data_config(str(corpus)), tmp_path / "cache")
    assert prepared.tokenizers.language_tags == {}
    assert prepared.directions == ["en-de"] and set(prepared.train_streams.tolist()) == {0}
    assert prepared.mixture(1.0).is_identity


def test_several_corpora_with_weights(corpus: Path, tmp_path: Path) -> None:
    tsv = tmp_path / "extra.tsv"
    tsv.write_text("".join(f"big dog {k % 5}\tgroß hund {k % 5}\n" for k in range(20)))
    sources = [SourceConfig(str(corpus)), SourceConfig(str(tsv), weight=3.0)]
    config = data_config(sources)
    prepared = prepare(config, tmp_path / "cache")
    mixture = prepared.mixture(1.0)
    assert mixture.sizes == [60, 20]
    per_pair = [count / size for count, size in zip(mixture.counts, mixture.sizes, strict=True)]
    assert per_pair[1] == pytest.approx(3 * per_pair[0], rel=0.05)
    # A weight changes how often pairs are drawn, not their ids: the same prepared directory.
    reweighted = dataclasses.replace(config, dataset=[sources[0], SourceConfig(str(tsv), weight=1)])
    corpora = open_corpora(reweighted)
    assert fingerprint(reweighted, MAX_POSITIONS, corpora, None) == prepared.directory.name
    assert not prepare(reweighted, tmp_path / "cache").prepared_now


def test_a_direction_that_no_corpus_gives_is_one_clear_error(corpus: Path, tmp_path: Path) -> None:
    sources = [SourceConfig(str(corpus), pairs=["en-de"])]
    with pytest.raises(DataError, match="no corpus in data.dataset gives en-fr"):
        open_corpora(data_config(sources, pairs=["en-de", "en-fr"]))
    with pytest.raises(DataError, match=r"data.dataset\[0\].*en-it.*it"):
        open_corpora(data_config(str(corpus), pairs=["en-de", "en-it"]))


def test_train_py_validates_every_direction_and_logs_them(corpus: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import train

    run_dir = tmp_path / "run"
    status = train.main(
        [
            "--config",
            str(ROOT / "configs" / "tiny.yaml"),
            f"train.run_dir={run_dir}",
            f"data.dataset={corpus}",
            "data.splits.validation=val",
            "data.splits.test=test",
            "data.pairs=[en-de,de-fr]",
            "data.pair_temperature=2",
            "train.device=cpu",
            "train.max_steps=4",
            "train.validate_every=4",
        ]
    )
    assert status == 0
    events = EventAccumulator(str(run_dir)).Reload()
    scalars = set(events.Tags()["scalars"])
    for direction in ("en-de", "de-fr"):
        assert {f"valid/{direction}/bleu", f"valid/{direction}/loss"} <= scalars
    assert "valid/bleu" in scalars
