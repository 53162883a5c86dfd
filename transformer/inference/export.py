"""Export a checkpoint to a deployment engine: CTranslate2 (https://opennmt.net/CTranslate2).

    pip install -e ".[export]"
    transformer export ctranslate2 runs/multi30k_en_de/checkpoints/best.pt exported/
    transformer export ctranslate2 best.pt exported_int8/ --quantization int8

The output directory holds what CTranslate2 loads (model.bin, config.json, the vocabularies) and
this project's tokenizer files (tokenizer.json, or source.json and target.json), so a user needs
nothing else: see docs/deployment.md for translating with it in a few lines of Python.

The model is described to CTranslate2 through its own Transformer specification
(`ctranslate2.specs.TransformerSpec`), layer by layer. The details that must agree, and do:
- embeddings are multiplied by sqrt(d_model) (the spec's `scale_embeddings`, its default);
- positions: the spec gets this model's own sinusoid table, so its layout (sin and cos interleaved)
  never depends on CTranslate2's built-in one; row 0 is the first token, as here;
- `in_proj` stacks the query, key and value rows, which is the layout of the spec's fused
  self-attention projection; for cross-attention the query rows and the key/value rows are two
  separate projections in the spec;
- pre-norm puts a final layer norm after each stack, post-norm none; layer norm epsilon as trained;
- the vocabularies are the tokenizers' tokens in id order, so ids mean the same thing on both sides,
  and the special tokens are the tokenizers': decoding starts from BOS (<s>) and stops at EOS (</s>);
  sources carry neither, as in this project, unless `model.source_eos` (imported OPUS-MT models):
  then the engine's `add_source_eos` appends </s> to each source, as `encode_source` does;
- the activation: relu, exact GELU or swish (SiLU). Shared and tied embeddings are exported as the same
  matrices, which CTranslate2 stores once;
- a multilingual model's target-language tags (`>>fr<<`) are ordinary tokens of the vocabularies, so
  a source that starts with one asks the engine for that language, as here; and since this project's
  searches never produce a tag (`never_ids`), the exported output bias of each tag is the lowest
  float16 number, so the engine never produces one either (whatever `compute_type` it runs in).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from transformer.checkpoint import load_model
from transformer.model import DecoderBlock, EncoderBlock, MultiHeadAttentionBlock, Transformer
from transformer.tokenization.tokenizer import BOS, EOS, UNK, TokenizerPair

ENGINES = ("ctranslate2",)
# CTranslate2's weight types (its converters' --quantization); "float32" keeps the weights as trained.
CTRANSLATE2_QUANTIZATIONS = (
    "float32",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
)


class ExportError(ValueError):
    """An export that cannot be done; the message says what to do."""


def import_ctranslate2(purpose: str = "exporting to CTranslate2") -> Any:
    """The ctranslate2 module, or one line saying which extra to install."""
    try:
        import ctranslate2
    except ImportError:
        raise ExportError(
            f"{purpose} needs the ctranslate2 package: "
            'pip install -e ".[export]" (or pip install ctranslate2)'
        ) from None
    return ctranslate2


# --- filling the specification -------------------------------------------------------------------


def _array(tensor: Tensor) -> Any:
    """A float32 numpy copy of a weight, as the spec stores it."""
    return tensor.detach().float().cpu().numpy()


def _set_linear(spec: Any, weight: Tensor, bias: Tensor) -> None:
    spec.weight = _array(weight)  # (out, in), as nn.Linear stores it
    spec.bias = _array(bias)


def _set_layer_norm(spec: Any, norm: nn.LayerNorm) -> None:
    spec.gamma = _array(norm.weight)
    spec.beta = _array(norm.bias)


def _set_self_attention(spec: Any, attention: MultiHeadAttentionBlock, norm: nn.LayerNorm) -> None:
    """Fused query/key/value projection (3D rows: q, k, v), output projection, layer norm."""
    _set_linear(spec.linear[0], attention.in_proj.weight, attention.in_proj.bias)
    _set_linear(spec.linear[1], attention.out_proj.weight, attention.out_proj.bias)
    _set_layer_norm(spec.layer_norm, norm)


def _set_cross_attention(spec: Any, attention: MultiHeadAttentionBlock, norm: nn.LayerNorm) -> None:
    """Query rows, then key and value rows (applied to the encoder output), then output."""
    D = attention.in_proj.in_features
    weight, bias = attention.in_proj.weight, attention.in_proj.bias  # (3D, D), (3D,)
    _set_linear(spec.linear[0], weight[:D], bias[:D])
    _set_linear(spec.linear[1], weight[D:], bias[D:])
    _set_linear(spec.linear[2], attention.out_proj.weight, attention.out_proj.bias)
    _set_layer_norm(spec.layer_norm, norm)


def _set_feed_forward(spec: Any, block: EncoderBlock | DecoderBlock) -> None:
    _set_linear(
        spec.linear_0, block.feed_forward.linear_in.weight, block.feed_forward.linear_in.bias
    )
    _set_linear(
        spec.linear_1, block.feed_forward.linear_out.weight, block.feed_forward.linear_out.bias
    )
    _set_layer_norm(spec.layer_norm, block.feed_forward_residual.norm)


def _set_inputs(spec: Any, embedding: nn.Embedding, position_table: Tensor) -> None:
    """Token embeddings (scaled by sqrt(D) in the engine, as here) and the sinusoid table."""
    embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings
    embeddings.weight = _array(embedding.weight)  # (V, D)
    spec.scale_embeddings = True
    spec.position_encodings.encodings = _array(position_table)  # (max_positions, D)


def _vocabulary(tokenizer: Any) -> list[str]:
    """The tokens in id order; ids must run 0..V-1 without a gap for the engine to agree."""
    by_id = {i: token for token, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ExportError("the tokenizer's ids are not 0..V-1 without gaps; cannot export it")
    return [by_id[i] for i in range(len(by_id))]


NEVER_BIAS = torch.finfo(torch.float16).min  # a logit no token can win with, even in float16


def _never_produced(bias: Tensor, ids: tuple[int, ...]) -> Tensor:
    """The output bias with the tokens `ids` (language tags) pushed out of reach. The weights carry
    it, so that no caller of the engine has to remember `suppress_sequences` on every call."""
    bias = bias.detach().clone()  # (V,)
    bias[list(ids)] = NEVER_BIAS
    return bias


def ctranslate2_spec(model: Transformer, tokenizers: TokenizerPair) -> Any:
    """This model as a `ctranslate2.specs.TransformerSpec`, weights in float32."""
    ctranslate2 = import_ctranslate2()
    specs = ctranslate2.specs
    config = model.config
    activations = {
        "relu": specs.Activation.RELU,
        "gelu": specs.Activation.GELU,  # exact (erf) GELU
        "swish": specs.Activation.SWISH,  # x * sigmoid(x), OPUS-MT's
    }
    pre_norm = config.norm_placement == "pre"
    spec = specs.TransformerSpec.from_config(
        (config.n_encoder_layers, config.n_decoder_layers),
        config.n_heads,
        pre_norm=pre_norm,
        activation=activations[config.activation],
    )

    _set_inputs(spec.encoder, model.src_embed.embedding, model.src_position.table)
    for layer_spec, block in zip(spec.encoder.layer, model.encoder.layers, strict=True):
        _set_self_attention(
            layer_spec.self_attention, block.self_attention, block.attention_residual.norm
        )
        _set_feed_forward(layer_spec.ffn, block)

    _set_inputs(spec.decoder, model.tgt_embed.embedding, model.tgt_position.table)
    for layer_spec, block in zip(spec.decoder.layer, model.decoder.layers, strict=True):
        _set_self_attention(
            layer_spec.self_attention, block.self_attention, block.self_attention_residual.norm
        )
        _set_cross_attention(
            layer_spec.attention, block.cross_attention, block.cross_attention_residual.norm
        )
        _set_feed_forward(layer_spec.ffn, block)
    projection = model.projection.linear
    _set_linear(
        spec.decoder.projection,
        projection.weight,
        _never_produced(projection.bias, tokenizers.language_tag_ids),
    )

    if pre_norm:  # post-norm stacks end with the last sub-layer's own norm
        _set_layer_norm(spec.encoder.layer_norm, model.encoder.final_norm)
        _set_layer_norm(spec.decoder.layer_norm, model.decoder.final_norm)

    spec.register_source_vocabulary(_vocabulary(tokenizers.source))
    spec.register_target_vocabulary(_vocabulary(tokenizers.target))
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = UNK, BOS, EOS
    spec.config.decoder_start_token = BOS
    spec.config.add_source_bos = False
    spec.config.add_source_eos = config.source_eos  # the engine appends </s>, as encode_source does
    spec.config.layer_norm_epsilon = model.decoder.layers[0].feed_forward_residual.norm.eps
    return spec


# --- writing the directory -----------------------------------------------------------------------


def export_ctranslate2(
    checkpoint: str | Path,
    output_dir: str | Path,
    quantization: str = "float32",
    force: bool = False,
) -> Path:
    """Write a CTranslate2 model directory for a checkpoint, with its tokenizer files beside it.

    `quantization` is CTranslate2's weight type (int8 stores int8 weights and one float scale per
    row). An existing non-empty output directory is replaced only with force=True."""
    if quantization not in CTRANSLATE2_QUANTIZATIONS:
        raise ExportError(
            f"unknown quantization {quantization!r}; choose one of: "
            f"{', '.join(CTRANSLATE2_QUANTIZATIONS)}"
        )
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ExportError(f"{str(output_dir)!r} is a file; give a directory to export into")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not force:
        raise ExportError(
            f"{str(output_dir)!r} already holds files; choose another directory or pass --force "
            "to replace it"
        )
    import_ctranslate2()  # before loading the checkpoint: say early what is missing
    loaded = load_model(checkpoint, "cpu")
    write_ctranslate2(loaded.model, loaded.tokenizers, output_dir, quantization)
    return output_dir


def write_ctranslate2(
    model: Transformer, tokenizers: TokenizerPair, output_dir: Path, quantization: str
) -> None:
    """The model directory and the tokenizer files; whatever output_dir held is replaced."""
    spec = ctranslate2_spec(model, tokenizers)
    spec.validate()
    spec.optimize(quantization=quantization)
    if output_dir.is_dir():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    spec.save(str(output_dir))
    tokenizers.save(output_dir)
