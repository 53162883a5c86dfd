"""Corpus loading (every format, every error), encoding, collate and the loader, on tiny files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import datasets
import pytest
import torch
from datasets.exceptions import DatasetNotFoundError

from transformer.config import DataConfig, SplitsConfig, TokenizerConfig
from transformer.data import loading as data
from transformer.data.batching import Batch, TokenBatchSampler, collate_batch, make_loader
from transformer.data.loading import DataError, ParallelText, encode_split, load_corpus
from transformer.data.prepare import prepare_data
from transformer.tokenization.tokenizer import BOS_ID, EOS_ID, PAD_ID, train_tokenizers

EN = ["A dog runs.", "Two cats sleep.", "A man\u2028reads.", "", "Children play outside."]
DE = ["Ein Hund rennt.", "Zwei Katzen schlafen.", "Ein Mann liest.", "", "Kinder spielen draußen."]
PAIRS = list(zip(EN, DE, strict=True))
ROOT = Path(__file__).parent.parent
REAL_SPLITS = SplitsConfig(train="train", validation="val", test="test")


def write_lines(path: Path, lines: list[str]) -> None:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def config_for(dataset: Path | str, **overrides) -> DataConfig:
    values = {"dataset": str(dataset), "splits": REAL_SPLITS, "carve_size": 1}
    values.update(overrides)
    return DataConfig(**values)


def parallel_directory(root: Path, gz: bool = False) -> Path:
    """train/val/test .en and .de files; the test split has different sentences to tell them apart."""
    suffix = ".gz" if gz else ""
    for split in ("train", "val", "test"):
        write_lines(root / f"{split}.en{suffix}", [f"{split}: {s}" for s in EN])
        write_lines(root / f"{split}.de{suffix}", [f"{split}: {s}" for s in DE])
    return root


def assert_is_corpus(corpus: dict[str, ParallelText]) -> None:
    assert set(corpus) == {"train", "validation", "test"}
    assert corpus["train"].source == [f"train: {s}" for s in EN]  # U+2028 did not split a line
    assert corpus["validation"].target == [f"val: {s}" for s in DE]
    assert corpus["test"].source[0] == "test: A dog runs."


# --- every loader -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_parallel_text_directory(tmp_path: Path, gz: bool) -> None:
    assert_is_corpus(load_corpus(config_for(parallel_directory(tmp_path, gz))))


def test_windows_line_ends_and_byte_order_mark(tmp_path: Path) -> None:
    parallel_directory(tmp_path)
    (tmp_path / "train.en").write_bytes("\ufeffa b\r\nc\r\n".encode())
    (tmp_path / "train.de").write_bytes(b"x y\nz\n")
    assert load_corpus(config_for(tmp_path))["train"].source == ["a b", "c"]


def test_tsv_directory(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        write_lines(tmp_path / f"{split}.tsv", [f"{split}: {e}\t{split}: {d}" for e, d in PAIRS])
    assert_is_corpus(load_corpus(config_for(tmp_path)))


def test_single_tsv_file_is_train_and_the_carve_is_fixed(tmp_path: Path) -> None:
    pairs = [(f"source {i}", f"target {i}") for i in range(20)]
    write_lines(tmp_path / "all.tsv", [f"{s}\t{t}" for s, t in pairs])
    config = config_for(tmp_path / "all.tsv", carve_size=3)
    corpus = load_corpus(config)
    assert [len(corpus[r]) for r in ("train", "validation", "test")] == [14, 3, 3]
    everything = [
        pair for text in corpus.values() for pair in zip(text.source, text.target, strict=True)
    ]
    assert sorted(everything) == sorted(pairs)  # disjoint, nothing lost, pairs still aligned
    assert load_corpus(config) == corpus  # same carve on every run


@pytest.mark.parametrize("schema", ["translation", "flat"])
def test_jsonl_directory_in_both_hub_schemas(tmp_path: Path, schema: str) -> None:
    for split in ("train", "val", "test"):
        rows = [
            {"translation": {"en": f"{split}: {e}", "de": f"{split}: {d}"}}
            if schema == "translation"
            else {"en": f"{split}: {e}", "de": f"{split}: {d}", "id": i}
            for i, (e, d) in enumerate(PAIRS)
        ]
        write_jsonl(tmp_path / f"{split}.jsonl", rows)
    assert_is_corpus(load_corpus(config_for(tmp_path)))


def test_single_jsonl_file_with_null_is_kept_as_empty(tmp_path: Path) -> None:
    rows = [{"en": f"s{i}", "de": None if i == 0 else f"t{i}"} for i in range(6)]
    write_jsonl(tmp_path / "corpus.jsonl", rows)
    corpus = load_corpus(config_for(tmp_path / "corpus.jsonl"))
    assert sum(len(corpus[r]) for r in corpus) == 6
    assert "" in sum((corpus[r].target for r in corpus), [])


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Path]]:
    """Hub names served by `datasets` from local JSON files: the hub code path without a network."""
    served: dict[str, dict[str, Path]] = {}
    real_load = datasets.load_dataset

    def load_dataset(
        name: str, subset: str | None = None, streaming: bool = False
    ) -> datasets.DatasetDict | datasets.IterableDatasetDict:
        if name not in served:
            raise DatasetNotFoundError(f"Dataset '{name}' doesn't exist on the Hub")
        files = {k: str(p) for k, p in served[name].items()}
        return real_load("json", data_files=files, streaming=streaming)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(data, "hub_unreachable", lambda endpoint: None)  # "the hub answers"
    return served


def test_hub_translation_schema_with_only_train_is_carved(tmp_path: Path, fake_hub) -> None:
    rows = [{"id": str(i), "translation": {"en": f"e{i}", "it": f"i{i}"}} for i in range(12)]
    write_jsonl(tmp_path / "books.jsonl", rows)
    fake_hub["Helsinki-NLP/opus_books"] = {"train": tmp_path / "books.jsonl"}
    config = DataConfig(
        dataset="Helsinki-NLP/opus_books", subset="en-it", tgt_lang="it", carve_size=2
    )
    corpus = load_corpus(config)
    assert [len(corpus[r]) for r in ("train", "validation", "test")] == [8, 2, 2]
    assert all(
        s[1:] == t[1:] for c in corpus.values() for s, t in zip(c.source, c.target, strict=True)
    )
    assert load_corpus(config) == corpus


def test_hub_flat_schema_with_three_splits(tmp_path: Path, fake_hub) -> None:
    files = {}
    for split in ("train", "validation", "test"):
        files[split] = tmp_path / f"{split}.jsonl"
        write_jsonl(
            files[split], [{"en": f"{split}: {e}", "de": f"{split}: {d}"} for e, d in PAIRS]
        )
    fake_hub["bentrevett/multi30k"] = files
    corpus = load_corpus(DataConfig())
    assert corpus["validation"].source == [f"validation: {e}" for e in EN]
    assert corpus["test"].target == [f"test: {d}" for d in DE]


@pytest.mark.parametrize("schema", ["translation", "flat"])
def test_hub_streaming_prepares_the_same_ids_as_the_downloaded_split(
    tmp_path: Path, fake_hub, schema: str
) -> None:
    def row(split: str, e: str, d: str) -> dict:
        pair = {"en": f"{split}: {e}", "de": f"{split}: {d}"}
        return {"translation": pair} if schema == "translation" else pair

    files = {split: tmp_path / f"{split}.jsonl" for split in ("train", "validation", "test")}
    for split, path in files.items():
        write_jsonl(path, [row(split, e, d) for e, d in PAIRS * 3])
    fake_hub["wmt14"] = files
    config = DataConfig(dataset="wmt14", tokenizer=TokenizerConfig(vocab_size=300))
    downloaded = prepare_data(config, 64, tmp_path / "a")
    streamed = prepare_data(replace(config, streaming=True), 64, tmp_path / "b")
    train, streamed_train = downloaded.splits["train"], streamed.splits["train"]
    assert len(train) == len(streamed_train) == 15
    for i in range(15):
        assert all(map(torch.equal, train[i], streamed_train[i]))
    assert streamed.texts["test"] == downloaded.texts["test"]


# --- bad input: one clear message -------------------------------------------------------------------


def test_parallel_files_of_different_length(tmp_path: Path) -> None:
    parallel_directory(tmp_path)
    write_lines(tmp_path / "val.de", DE[:3])
    with pytest.raises(DataError, match=r"val\.en has 5 lines but .*val\.de has 3"):
        load_corpus(config_for(tmp_path))


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    parallel_directory(tmp_path, gz=True)
    (tmp_path / "train.de.gz").write_bytes(gzip.compress(b"gut\nGr\xfc\xdfe\n"))
    with pytest.raises(DataError, match=r"train\.de\.gz: line 2 is not valid UTF-8"):
        load_corpus(config_for(tmp_path))


def test_invalid_utf8_in_jsonl(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_bytes(b'{"en": "a", "de": "b"}\n{"en": "\xe9", "de": "c"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 is not valid UTF-8"):
        load_corpus(config_for(tmp_path))


def test_unknown_language_lists_the_languages(tmp_path: Path) -> None:
    parallel_directory(tmp_path)
    with pytest.raises(DataError, match=r"no file train\.fr .*languages found .*: de, en"):
        load_corpus(config_for(tmp_path, tgt_lang="fr"))


def test_unknown_language_in_hub_schema(tmp_path: Path, fake_hub) -> None:
    write_jsonl(tmp_path / "t.jsonl", [{"translation": {"en": "a", "it": "b"}}] * 4)
    fake_hub["opus"] = {"train": tmp_path / "t.jsonl"}
    with pytest.raises(DataError, match=r"language 'de' \(data.tgt_lang\).*available: en, it"):
        load_corpus(DataConfig(dataset="opus"))


def test_unknown_split_lists_the_splits(tmp_path: Path) -> None:
    parallel_directory(tmp_path)
    with pytest.raises(DataError, match=r"split 'validation' .*available splits: test, train, val"):
        load_corpus(config_for(tmp_path, splits=SplitsConfig()))
    with pytest.raises(DataError, match=r"no train split 'training' .*Splits found: test, train"):
        load_corpus(config_for(tmp_path, splits=SplitsConfig(train="training")))


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such file or directory.*contains: "):
        load_corpus(config_for(tmp_path / "nowhere"))


OPUS_BOOKS = DataConfig(
    dataset="Helsinki-NLP/opus_books",
    subset="en-it",
    tgt_lang="it",
    splits=SplitsConfig(train="train", validation="", test=""),
)


def test_unreachable_hub_stops_at_once_naming_the_datasets_own_splits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def retrying_load(*args, **kwargs):
        raise AssertionError("load_dataset (and its ~25 s of retries) must not be reached")

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setattr(datasets, "load_dataset", retrying_load)
    with pytest.raises(DataError) as caught:
        load_corpus(OPUS_BOOKS)
    message = str(caught.value)
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:9" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "train.en + train.it (validation and test carved from train)" in message
    assert "test_2016_flickr" not in message and ".de" not in message  # not Multi30k's names


def test_offline_mode_says_it_is_set_and_names_the_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 sets it
    monkeypatch.setattr(data, "hub_unreachable", lambda endpoint: "must not be asked offline")
    config = DataConfig(dataset="nobody/not-cached", splits=REAL_SPLITS)
    with pytest.raises(DataError) as caught:
        load_corpus(config)
    message = str(caught.value)
    assert "HF_HUB_OFFLINE=1 is set and 'nobody/not-cached' is not in the local cache" in message
    assert "train.en + train.de, val.en + val.de, test.en + test.de" in message


def test_a_run_that_cannot_reach_the_hub_leaves_no_run_directory(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "hub"
    environment = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), environment.get("PYTHONPATH", "")])
    command = [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs/tiny.yaml")]
    command += ["data.dataset=bentrevett/multi30k", f"train.run_dir={run_dir}"]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot reach the Hugging Face Hub at http://127.0.0.1:9")
    assert "Traceback" not in done.stderr
    assert not run_dir.exists() and not run_dir.parent.exists()


def test_unknown_hub_dataset(fake_hub) -> None:
    with pytest.raises(DataError, match="neither a local path nor a dataset on the Hugging Face"):
        load_corpus(DataConfig(dataset="nobody/nothing"))


def test_bad_tsv_line(tmp_path: Path) -> None:
    write_lines(tmp_path / "c.tsv", ["a\tb", "c\td\te"])
    with pytest.raises(DataError, match=r"c\.tsv: line 2 has 3 tab-separated fields"):
        load_corpus(config_for(tmp_path / "c.tsv"))


def test_bad_json(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"en": "a", "de": "b"}\n{"en": \n', encoding="utf-8")
    with pytest.raises(DataError, match="as JSON lines"):
        load_corpus(config_for(tmp_path))


def test_plain_and_gz_of_the_same_file(tmp_path: Path) -> None:
    parallel_directory(tmp_path)
    write_lines(tmp_path / "train.en.gz", EN)
    with pytest.raises(DataError, match=r"train\.en and .*train\.en\.gz exist"):
        load_corpus(config_for(tmp_path))


def test_carve_too_large(tmp_path: Path) -> None:
    write_lines(tmp_path / "c.tsv", ["a\tb"] * 4)
    with pytest.raises(DataError, match="lower data.carve_size"):
        load_corpus(config_for(tmp_path / "c.tsv", carve_size=2))


# --- encoding -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers():
    return train_tokenizers(EN * 3, DE * 3, TokenizerConfig(vocab_size=300, min_frequency=1))


def test_training_drops_empty_and_long_pairs_with_counts(tokenizers, capsys) -> None:
    text = ParallelText(["a", " ", "b", "c " * 30, "d", "e"], ["x", "y", "\t", "z", "w " * 30, "v"])
    split = encode_split(text, tokenizers, max_length=20, max_positions=64, drop=True)
    assert [t.tolist() for t in split[1]] == tokenizers.encode_source(
        ["e"]
    ) + tokenizers.encode_target(["v"])
    assert "kept 2 of 6 pairs; dropped 2 empty, 2 longer than data.max_length=20" in (
        capsys.readouterr().out
    )


def test_training_drops_pairs_that_do_not_fit_the_model(tokenizers, capsys) -> None:
    (target_ids,) = tokenizers.encode_target(["w w w"])
    text = ParallelText(["a", "a"], ["w w w", "v"])
    split = encode_split(
        text, tokenizers, max_length=None, max_positions=len(target_ids), drop=True
    )
    assert len(split) == 1  # target + BOS/EOS would not fit
    assert "1 longer than model.max_positions" in capsys.readouterr().out


def test_validation_keeps_everything_and_truncates_with_a_warning(tokenizers) -> None:
    text = ParallelText(["", "a " * 50, "b"], ["x", "", "y " * 50])
    with pytest.warns(UserWarning, match="truncated 1 source sentences"):
        split = encode_split(text, tokenizers, max_length=None, max_positions=16, drop=False)
    assert len(split) == 3
    assert split.src_lengths.tolist()[0] == 0 and split.tgt_lengths.tolist()[1] == 0
    assert split.src_lengths[1] == 16 and split.tgt_lengths[2] == 15


def test_encoded_split_items_match_the_tokenizer(tokenizers) -> None:
    text = ParallelText(EN, DE)
    split = encode_split(text, tokenizers, max_length=None, max_positions=64, drop=False)
    src, tgt = split[2]
    assert src.dtype == torch.long and src.dim() == 1
    assert src.tolist() == tokenizers.encode_source([EN[2]])[0]
    assert tgt.tolist() == tokenizers.encode_target([DE[2]])[0]
    assert split.src_ids.dtype == torch.int32  # stored compactly
    assert split[-1][0].tolist() == split[4][0].tolist()
    with pytest.raises(IndexError):
        split[5]


def test_prepare_data_trains_the_tokenizer_on_train_only(tmp_path: Path) -> None:
    parallel_directory(tmp_path)
    write_lines(tmp_path / "train.en", EN)  # EN[3] and DE[3] are empty
    write_lines(tmp_path / "train.de", DE)
    write_lines(tmp_path / "test.en", ["Zebras"] * 5)
    write_lines(tmp_path / "test.de", ["Zebras"] * 5)
    config = config_for(tmp_path, tokenizer=TokenizerConfig(kind="wordlevel", min_frequency=1))
    prepared = prepare_data(config, max_positions=64, root=tmp_path / "prepared")
    assert prepared.tokenizers.source.token_to_id("▁Zebras") is None
    splits = prepared.splits
    assert [len(splits[r]) for r in ("train", "validation", "test")] == [4, 5, 5]  # empty dropped
    assert prepared.texts["validation"].source[3] == "val: "


# --- collate and loader -------------------------------------------------------------------------


def test_collate_pads_to_the_longest_and_places_bos_eos() -> None:
    examples = [
        (torch.tensor([10, 11, 12]), torch.tensor([20])),
        (torch.tensor([13]), torch.tensor([21, 22, 23, 24])),
    ]
    batch = collate_batch(examples)
    assert batch.src.tolist() == [[10, 11, 12], [13, PAD_ID, PAD_ID]]  # (B, S) = (2, 3)
    assert batch.tgt_in.tolist() == [
        [BOS_ID, 20, PAD_ID, PAD_ID, PAD_ID],
        [BOS_ID, 21, 22, 23, 24],
    ]
    assert batch.labels.tolist() == [
        [20, EOS_ID, PAD_ID, PAD_ID, PAD_ID],
        [21, 22, 23, 24, EOS_ID],
    ]
    assert batch.n_tgt_tokens == 7
    assert batch.src.dtype == batch.tgt_in.dtype == batch.labels.dtype == torch.long


def test_collate_of_empty_sentences() -> None:
    batch = collate_batch(
        [(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))]
    )
    assert batch.src.shape == (1, 0)
    assert batch.tgt_in.tolist() == [[BOS_ID]] and batch.labels.tolist() == [[EOS_ID]]


def test_loader_yields_batches_that_know_their_indices(tokenizers) -> None:
    split = encode_split(
        ParallelText(EN, DE), tokenizers, max_length=None, max_positions=64, drop=False
    )
    sampler = TokenBatchSampler(split.src_lengths, split.tgt_lengths, 40, shuffle=False)
    batches = list(make_loader(split, sampler))
    assert all(isinstance(b, Batch) for b in batches)
    assert sorted(i for b in batches for i in b.indices.tolist()) == list(range(len(EN)))
    for batch in batches:
        for row, i in enumerate(batch.indices.tolist()):
            src = split[i][0]
            assert batch.src[row, : len(src)].tolist() == src.tolist()
        assert batch.src.shape[1] == max(len(split[i][0]) for i in batch.indices.tolist())
    moved = batches[0].to("cpu")
    assert (
        torch.equal(moved.labels, batches[0].labels)
        and moved.n_tgt_tokens == batches[0].n_tgt_tokens
    )
