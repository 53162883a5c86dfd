"""Export to CTranslate2: the exported model computes what this project's model computes, for every
layout a config can ask for, and the command line says clearly what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import (
    NUMBERS,
    tiny_model_config,
    tiny_multilingual_checkpoint,
    trained_tiny_checkpoint,
)
from torch.nn.utils.rnn import pad_sequence

from transformer.checkpoint import load_model
from transformer.commands.export import main
from transformer.config import TokenizerConfig
from transformer.inference.decoding import SearchSettings, greedy_search, max_output_lengths
from transformer.inference.export import export_ctranslate2, write_ctranslate2
from transformer.model import build_transformer
from transformer.tokenization.tokenizer import BOS_ID, EOS_ID, TokenizerPair, train_tokenizers

ctranslate2 = pytest.importorskip(
    "ctranslate2",
    reason="the optional [export] extra is not installed (pip install -e '.[export]')",
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_tiny_checkpoint(tmp_path_factory)


def _numbers_tokenizers(joint: bool) -> TokenizerPair:
    english = (NUMBERS / "train.en").read_text(encoding="utf-8").splitlines()
    german = (NUMBERS / "train.de").read_text(encoding="utf-8").splitlines()
    return train_tokenizers(english, german, TokenizerConfig(vocab_size=120, joint=joint))


@pytest.mark.parametrize(
    "layout",
    [
        dict(norm_placement="pre", activation="relu", joint=True, tied=True),
        dict(norm_placement="post", activation="gelu", joint=False, tied=False),
    ],
    ids=["pre-relu-shared-tied", "post-gelu-separate-untied"],
)
def test_exported_log_probs_equal_the_project_model(layout: dict, tmp_path: Path) -> None:
    """Teacher-forced log-probabilities of every target token (EOS included) from CTranslate2's
    score_batch equal the project's, on random weights: embedding scale, positions, the fused
    projections, norms, activation and vocabularies all have to line up for that."""
    tokenizers = _numbers_tokenizers(layout["joint"])
    config = tiny_model_config(
        src_vocab_size=tokenizers.src_vocab_size,
        tgt_vocab_size=tokenizers.tgt_vocab_size,
        norm_placement=layout["norm_placement"],
        activation=layout["activation"],
        share_embeddings=layout["joint"],
        tie_output_embedding=layout["tied"],
    )
    torch.manual_seed(0)
    model = build_transformer(config).eval()
    write_ctranslate2(model, tokenizers, tmp_path / "ct2", "float32")
    translator = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu")

    sources = ["two hundred and twenty-seven", "The train leaves in six minutes ."]
    targets = ["zweihundertsiebenundzwanzig", "Der Zug fährt in sechs Minuten ab ."]
    src_ids, tgt_ids = tokenizers.encode_source(sources), tokenizers.encode_target(targets)
    results = translator.score_batch(
        [[tokenizers.source.id_to_token(i) for i in ids] for ids in src_ids],
        [[tokenizers.target.id_to_token(i) for i in ids] for ids in tgt_ids],
    )
    for src, tgt, result in zip(src_ids, tgt_ids, results, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([src]), torch.tensor([[BOS_ID] + tgt]))  # (1, T, V)
        log_probs = logits[0].log_softmax(dim=-1)  # (T, V)
        expected = log_probs[torch.arange(len(tgt) + 1), torch.tensor(tgt + [EOS_ID])]  # (T,)
        torch.testing.assert_close(torch.tensor(result.log_probs), expected, atol=2e-4, rtol=1e-4)


def _greedy_both_ways(checkpoint: Path, model_dir: Path) -> tuple[list, list]:
    """Greedy ids of every numbers test sentence from the project and from CTranslate2.

    The project forces EOS at each sentence's own length limit; CTranslate2 has one limit per
    call, so where the project stopped at its limit, CTranslate2's output is cut there too."""
    loaded = load_model(checkpoint)
    lines = (NUMBERS / "test.en").read_text(encoding="utf-8").splitlines()
    sources = loaded.tokenizers.encode_source(lines)
    src = pad_sequence([torch.tensor(ids) for ids in sources], batch_first=True)  # (B, S)
    decode = loaded.config.decode
    project = [
        h.tokens for h in greedy_search(loaded.model, src, SearchSettings.from_config(decode))
    ]
    limits = max_output_lengths(
        src, decode.max_len_a, decode.max_len_b, 0, loaded.config.model.max_positions
    ).tolist()
    translator = ctranslate2.Translator(str(model_dir), device="cpu")
    results = translator.translate_batch(
        [[loaded.tokenizers.source.id_to_token(i) for i in ids] for ids in sources],
        beam_size=1,
        max_decoding_length=max(limits) + 1,
    )
    vocabulary = loaded.tokenizers.target.get_vocab()
    engine = []
    for result, tokens, limit in zip(results, project, limits, strict=True):
        ids = [vocabulary[token] for token in result.hypotheses[0]]
        engine.append(ids[:limit] if len(tokens) == limit else ids)
    return project, engine


def test_exported_greedy_output_equals_the_project(checkpoint: Path, tmp_path: Path) -> None:
    model_dir = export_ctranslate2(checkpoint, tmp_path / "ct2")
    assert {"model.bin", "config.json", "shared_vocabulary.json", "tokenizer.json"} <= {
        path.name for path in model_dir.iterdir()
    }
    tokenizer = load_model(checkpoint).tokenizers.target
    vocabulary = json.loads((model_dir / "shared_vocabulary.json").read_text(encoding="utf-8"))
    assert vocabulary == [tokenizer.id_to_token(i) for i in range(tokenizer.get_vocab_size())]

    project, engine = _greedy_both_ways(checkpoint, model_dir)
    agree = sum(a == b for a, b in zip(project, engine, strict=True))
    assert agree >= 0.99 * len(project), f"{agree} of {len(project)} sentences agree"


def test_int8_export_loads_and_translates(checkpoint: Path, tmp_path: Path) -> None:
    float_dir = export_ctranslate2(checkpoint, tmp_path / "float32")
    int8_dir = export_ctranslate2(checkpoint, tmp_path / "int8", quantization="int8")
    assert (int8_dir / "model.bin").stat().st_size < 0.5 * (float_dir / "model.bin").stat().st_size
    project, engine = _greedy_both_ways(checkpoint, int8_dir)
    assert all(engine)
    agree = sum(a == b for a, b in zip(project, engine, strict=True))
    assert agree >= 0.8 * len(project), f"{agree} of {len(project)} sentences agree"


def test_a_multilingual_export_keeps_the_tags_and_never_emits_them(tmp_path: Path) -> None:
    """The >>xx<< tags are tokens of the exported vocabulary and of the tokenizer files; a source
    starting with one gets the project's translation into that language; and although the model is
    biased to output >>fr<<, the engine never does (the export pushes the tags' bias out of reach,
    as the project's searches exclude them)."""
    checkpoint = tiny_multilingual_checkpoint(tmp_path / "multi.pt", biased_to_tag="fr")
    model_dir = export_ctranslate2(checkpoint, tmp_path / "ct2")
    loaded = load_model(checkpoint)
    tags = loaded.tokenizers.language_tags
    vocabulary = json.loads((model_dir / "shared_vocabulary.json").read_text(encoding="utf-8"))
    assert {vocabulary[i] for i in tags.values()} == {">>de<<", ">>fr<<"}
    assert TokenizerPair.load(model_dir).language_tags == tags

    translator = ctranslate2.Translator(str(model_dir), device="cpu")
    sentences = ["seven", "two hundred and one"]
    decode = loaded.config.decode
    for language in ("de", "fr"):
        sources = loaded.tokenizers.encode_source(sentences, tgt_lang=language)
        assert all(ids[0] == tags[language] for ids in sources)
        src = pad_sequence([torch.tensor(ids) for ids in sources], batch_first=True)  # (B, S)
        settings = SearchSettings.from_config(decode, never_ids=loaded.tokenizers.language_tag_ids)
        project = [h.tokens for h in greedy_search(loaded.model, src, settings)]
        limits = max_output_lengths(
            src, decode.max_len_a, decode.max_len_b, 0, loaded.config.model.max_positions
        ).tolist()
        results = translator.translate_batch(
            [[loaded.tokenizers.source.id_to_token(i) for i in ids] for ids in sources],
            beam_size=1,
            max_decoding_length=max(limits) + 1,
        )
        for result, expected, limit in zip(results, project, limits, strict=True):
            ids = [vocabulary.index(token) for token in result.hypotheses[0]]
            assert not set(ids) & set(tags.values())
            assert (ids[:limit] if len(expected) == limit else ids) == expected


def test_bad_arguments_give_clear_messages(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["ctranslate2", str(tmp_path / "missing.pt"), str(tmp_path / "out")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    assert main(["ctranslate2", str(checkpoint), str(occupied)]) == 2
    assert "already holds files" in capsys.readouterr().err and (occupied / "notes.txt").exists()
    assert main(["ctranslate2", str(checkpoint), str(occupied), "--force"]) == 0
    assert (occupied / "model.bin").exists() and not (occupied / "notes.txt").exists()

    for argv in (
        ["onnx", str(checkpoint), str(tmp_path / "x")],
        ["ctranslate2", str(checkpoint), str(tmp_path / "x"), "--quantization", "int4"],
        ["ctranslate2", str(checkpoint)],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err
