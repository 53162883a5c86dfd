"""The attention picture: right labels and shape, readable subword labels, batched maps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import tiny_model_config

from transformer.config import TokenizerConfig
from transformer.inference.attention_plot import (
    TITLE,
    attention_figure,
    last_layer_cross_attention,
    token_labels,
    write_attention_pngs,
)
from transformer.model import build_transformer
from transformer.tokenization.tokenizer import train_tokenizers

TEXTS = ["Ich sehe vier Vögel .", "Der Zug fährt in neun Minuten ab ."] * 20


def test_figure_has_one_tick_label_per_token_and_says_what_it_shows() -> None:
    weights = torch.rand(4, 5).softmax(dim=-1)  # 3 output tokens + </s>, 5 source tokens
    source = ["▁I", "▁see", "▁four", "▁birds", "▁."]
    output = ["Ich", "▁sehe", "▁Vögel"]
    figure = attention_figure(weights, source, output, caption="I see four birds .")
    axes, colorbar = figure.axes  # the heatmap and its colour scale
    assert [label.get_text() for label in axes.get_xticklabels()] == source
    assert [label.get_text() for label in axes.get_yticklabels()] == [*output, "</s>"]
    assert axes.images[0].get_array().shape == (4, 5)
    assert colorbar.get_ylabel() == "attention weight"
    title = figure.get_suptitle()
    assert TITLE in title and "last decoder layer, heads averaged" in title
    assert "I see four birds ." in title


def test_figure_refuses_labels_that_do_not_match_the_weights() -> None:
    with pytest.raises(ValueError, match="needs 2 output labels and 2 source labels"):
        attention_figure(torch.rand(3, 2), ["a", "b"], ["x"])


def test_byte_level_labels_read_as_text_with_visible_word_starts() -> None:
    tokenizers = train_tokenizers(TEXTS, TEXTS, TokenizerConfig(vocab_size=300, min_frequency=1))
    text = "Ich sehe vier Vögel ."
    labels = token_labels(tokenizers.target, tokenizers.encode_target([text])[0])
    assert "".join(labels).replace("▁", " ") == text  # "Ã¶" is shown as "ö", "Ġ" as "▁"
    assert all("Ġ" not in label for label in labels)


def test_wordlevel_labels_keep_the_metaspace_mark() -> None:
    config = TokenizerConfig(kind="wordlevel", vocab_size=100, min_frequency=1)
    tokenizers = train_tokenizers(TEXTS, TEXTS, config)
    labels = token_labels(tokenizers.target, tokenizers.encode_target(["Ich sehe Vögel"])[0])
    assert labels == ["▁Ich", "▁sehe", "▁Vögel"]


def test_batched_maps_equal_one_by_one_and_rows_are_distributions() -> None:
    torch.manual_seed(0)
    model = build_transformer(tiny_model_config()).eval()
    sources = [torch.tensor([5, 6, 7, 8, 9]), torch.tensor([10, 11]), torch.tensor([12, 13, 14])]
    outputs = [[4, 5], [6, 7, 8, 9], []]
    device = torch.device("cpu")
    batched = last_layer_cross_attention(model, sources, outputs, device)
    for src, out, weights in zip(sources, outputs, batched, strict=True):
        assert weights.shape == (len(out) + 1, len(src))
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(len(out) + 1))
        alone = last_layer_cross_attention(model, [src], [out], device)[0]
        torch.testing.assert_close(weights, alone, atol=1e-5, rtol=1e-5)


def test_pngs_are_named_by_line_and_skip_empty_lines(tmp_path: Path) -> None:
    tokenizers = train_tokenizers(TEXTS, TEXTS, TokenizerConfig(vocab_size=300, min_frequency=1))
    config = tiny_model_config(
        src_vocab_size=tokenizers.src_vocab_size, tgt_vocab_size=tokenizers.tgt_vocab_size
    )
    model = build_transformer(config).eval()
    sentences = ["Ich sehe vier Vögel .", "", "Der Zug ."]
    outputs = [[5, 6, 7], [], [8]]
    written = write_attention_pngs(
        model, tokenizers, sentences, outputs, tmp_path / "pictures", 11, torch.device("cpu")
    )
    assert [p.name for p in written] == ["00011.png", "00013.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
