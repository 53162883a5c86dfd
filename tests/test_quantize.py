"""Dynamic int8 quantization: a quantized model translates like the float one, through the Python
API and translate.py, and every misuse gives one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import NUMBERS, tiny_model_config, trained_tiny_checkpoint
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from torch.nn.utils.rnn import pad_sequence

import translate
from transformer.checkpoint import load_model
from transformer.inference.decoding import beam_search, greedy_search
from transformer.inference.quantize import (
    QuantizationError,
    check_quantization,
    quantize_model,
)
from transformer.inference.translator import Translator
from transformer.model import build_transformer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_tiny_checkpoint(tmp_path_factory)


def test_linear_layers_become_int8_and_the_output_projection_can_stay_float() -> None:
    torch.manual_seed(0)
    model = build_transformer(tiny_model_config()).eval()
    keys = set(model.state_dict())
    assert type(quantize_model(model, "int8").projection.linear) is DynamicQuantizedLinear
    quantized = quantize_model(model, "int8", output_projection=False)

    assert isinstance(quantized.encoder.layers[0].feed_forward.linear_in, DynamicQuantizedLinear)
    attention = quantized.decoder.layers[0].cross_attention
    assert isinstance(attention.in_proj_parts["query"], DynamicQuantizedLinear)
    assert isinstance(attention.in_proj_parts["key_value"], DynamicQuantizedLinear)
    assert type(quantized.projection.linear) is nn.Linear
    # The float model is left as it was, and so is the checkpoint layout of float models.
    assert type(model.encoder.layers[0].feed_forward.linear_in) is nn.Linear
    assert len(model.decoder.layers[0].cross_attention.in_proj_parts) == 0
    assert set(model.state_dict()) == keys
    assert not any("in_proj_parts" in key for key in keys)


def test_cross_attention_parts_equal_the_sliced_projection() -> None:
    """The split query / key-value layers compute what slicing the fused in_proj computes
    (checked in float, where the split is exact, before int8 rounding enters)."""
    torch.manual_seed(0)
    attention = build_transformer(tiny_model_config()).decoder.layers[0].cross_attention
    x = torch.randn(3, 5, 32)  # (B, T, D)
    sliced_q, sliced_kv = attention.in_proj_part("query", x), attention.in_proj_part("key_value", x)
    attention.split_in_proj()
    torch.testing.assert_close(attention.in_proj_part("query", x), sliced_q)
    torch.testing.assert_close(attention.in_proj_part("key_value", x), sliced_kv)


@pytest.mark.parametrize("output_projection", [False, True])
def test_quantized_outputs_agree_with_float_on_most_sentences(
    checkpoint: Path, output_projection: bool
) -> None:
    loaded = load_model(checkpoint)
    sources = loaded.tokenizers.encode_source(
        (NUMBERS / "test.en").read_text(encoding="utf-8").splitlines()
    )
    src = pad_sequence([torch.tensor(ids) for ids in sources], batch_first=True)  # (B, S)
    quantized = quantize_model(loaded.model, "int8", output_projection=output_projection)
    projection_type = DynamicQuantizedLinear if output_projection else nn.Linear
    assert type(quantized.projection.linear) is projection_type

    float_greedy = [h.tokens for h in greedy_search(loaded.model, src)]
    int8_greedy = [h.tokens for h in greedy_search(quantized, src)]
    agree = sum(a == b for a, b in zip(float_greedy, int8_greedy, strict=True))
    assert agree >= 0.8 * len(sources), f"greedy: {agree} of {len(sources)} agree"

    float_beam = [n[0].tokens for n in beam_search(loaded.model, src, beam_size=3)]
    int8_beam = [n[0].tokens for n in beam_search(quantized, src, beam_size=3)]
    agree = sum(a == b for a, b in zip(float_beam, int8_beam, strict=True))
    assert agree >= 0.8 * len(sources), f"beam 3: {agree} of {len(sources)} agree"


def test_translator_and_translate_py_quantize(
    checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    loaded = load_model(checkpoint)
    translator = Translator.with_options(loaded, torch.device("cpu"), quantize="int8", beam_size=2)
    assert isinstance(
        translator.model.decoder.layers[0].feed_forward.linear_in, DynamicQuantizedLinear
    )
    assert all(t[0].text for t in translator.translate(["twenty-one", "I see five birds ."]))

    assert translate.main(["-c", str(checkpoint), "--quantize", "int8", "forty-two", "seven"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(lines)


def test_quantization_misuse_gives_clear_messages(
    checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(QuantizationError, match="unknown quantization 'int4'; choose one of: int8"):
        check_quantization("int4", "cpu")
    with pytest.raises(QuantizationError, match="CPU only, not on cuda"):
        check_quantization("int8", torch.device("cuda"))
    # A model on another device is refused before any work (meta stands in for a GPU here).
    loaded = load_model(checkpoint)
    with pytest.raises(QuantizationError, match="CPU only, not on meta"):
        Translator(loaded, loaded.config.decode, torch.device("meta"), quantize="int8")
    with pytest.raises(SystemExit) as exit_info:
        translate.main(["-c", str(checkpoint), "--quantize", "int4", "one"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'int4'" in capsys.readouterr().err
