"""A Marian model's weights, under Hugging Face's `MarianMTModel` names, as this project's model.

`transformer/marian/convert.py` reads a model (a Hugging Face directory or a native Marian .npz) into a
`MarianModel`; `marian_state_dict` maps it onto `transformer.model.Transformer`. The two
architectures are the same post-norm encoder-decoder (embeddings x sqrt(D) + sinusoids, then
attention -> dropout -> add -> LayerNorm and feed-forward -> dropout -> add -> LayerNorm); what
differs is only where things are kept:

- query, key and value are three Linear layers in Marian, one stacked `in_proj` here;
- `final_logits_bias` (added to Marian's logits) is the output projection's bias here;
- the embeddings are shared, and the output projection tied, as in the model (separate otherwise);
- the vocabulary order (special ids): rows are reordered, see `MarianVocabulary`;
- the sinusoid table: Marian puts the sines in the first half of the D channels and the cosines in
  the second; this model interleaves them (sin, cos, sin, cos, ...), with the same frequencies.
  Rather than a second table layout in the model, the importer permutes the channels of the
  residual stream: every weight that reads or writes the residual stream (embedding columns,
  attention input columns and output rows, feed-forward input columns and output rows, LayerNorm
  scales and shifts, the output projection's columns) is re-indexed so that Marian's channel k
  becomes our channel `2k` (k < D/2) or `2(k - D/2) + 1`. Every operation on the residual stream
  is either channel-wise (add, LayerNorm, biases) or a linear map whose residual axis is permuted
  with it, and attention heads live on the projections' *other* axis, so the converted model
  computes exactly the same function: no arithmetic is done on any weight, only copies (LayerNorm
  sums its channels in another order, a difference of float rounding only). The model, its int8
  and CTranslate2 paths and fine-tuning stay as they are, with no option to keep in step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from transformer.config import ModelConfig
from transformer.marian.tokenizer import ConversionError, MarianVocabulary
from transformer.tokenization.tokenizer import BOS_ID

BOS_LOGIT_OFFSET = 100.0  # our <s>'s output logit sits this far below <pad>'s (see below)


@dataclass
class MarianModel:
    """What the importer needs from a Marian model, whatever file it came from."""

    weights: dict[str, Tensor]  # Hugging Face MarianMTModel names (see `marian_state_dict`)
    d_model: int
    n_heads: int
    n_encoder_layers: int
    n_decoder_layers: int
    d_ff: int
    activation: str  # relu | gelu | swish (already mapped to this project's names)
    max_positions: int
    dropout: float
    attention_dropout: float
    share_embeddings: bool  # encoder and decoder embeddings are one matrix
    tie_output: bool  # the output projection is the decoder embedding matrix
    source_vocabulary: MarianVocabulary
    target_vocabulary: MarianVocabulary  # the same object when the vocabulary is shared

    def model_config(self) -> ModelConfig:
        """This project's model config for it (vocabularies one larger: our added <s>)."""
        if self.d_model % 2:
            raise ConversionError(f"d_model {self.d_model} is odd; sinusoids need it even")
        config = ModelConfig(
            src_vocab_size=len(self.source_vocabulary.tokens) + 1,
            tgt_vocab_size=len(self.target_vocabulary.tokens) + 1,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_encoder_layers=self.n_encoder_layers,
            n_decoder_layers=self.n_decoder_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            activation=self.activation,
            norm_placement="post",
            max_positions=self.max_positions,
            tie_output_embedding=self.tie_output,
            share_embeddings=self.share_embeddings,
            pad_id=0,
            source_eos=True,  # Marian appends </s> to every source sentence
        )
        config.validate()
        return config


def residual_order(d_model: int) -> Tensor:
    """(D,) long: our channel c holds Marian's channel `residual_order(D)[c]`, so that Marian's
    sines (its channels 0 .. D/2 - 1) land on our even channels and its cosines on the odd ones."""
    half = d_model // 2
    marian_channel_of_ours = torch.empty(d_model, dtype=torch.long)
    marian_channel_of_ours[0::2] = torch.arange(half)  # sin of frequency k: ours 2k, Marian's k
    marian_channel_of_ours[1::2] = torch.arange(half, d_model)  # cos: ours 2k + 1, Marian's D/2 + k
    return marian_channel_of_ours


def _linear(weights: dict[str, Tensor], name: str, order: Tensor, permute: str) -> list[Tensor]:
    """Weight (out, in) and bias (out,) of Marian's Linear `name`, with the residual axis
    re-indexed: permute="in" (it reads the stream: columns) or "out" (it writes it: rows)."""
    weight, bias = weights[f"{name}.weight"], weights[f"{name}.bias"]
    if permute == "in":
        return [weight[:, order], bias]
    return [weight[order], bias[order]]


def _attention(weights: dict[str, Tensor], marian: str, ours: str, order: Tensor) -> dict:
    """q_proj, k_proj, v_proj stacked into in_proj (rows q, k, v, as nn.MultiheadAttention)."""
    parts = [_linear(weights, f"{marian}.{name}_proj", order, "in") for name in "qkv"]
    out_weight, out_bias = _linear(weights, f"{marian}.out_proj", order, "out")
    return {
        f"{ours}.in_proj.weight": torch.cat([weight for weight, _ in parts]),  # (3D, D)
        f"{ours}.in_proj.bias": torch.cat([bias for _, bias in parts]),  # (3D,)
        f"{ours}.out_proj.weight": out_weight,
        f"{ours}.out_proj.bias": out_bias,
    }


def _norm(weights: dict[str, Tensor], marian: str, ours: str, order: Tensor) -> dict:
    return {
        f"{ours}.weight": weights[f"{marian}.weight"][order],
        f"{ours}.bias": weights[f"{marian}.bias"][order],
    }


def _feed_forward(weights: dict[str, Tensor], marian: str, ours: str, order: Tensor) -> dict:
    in_weight, in_bias = _linear(weights, f"{marian}.fc1", order, "in")
    out_weight, out_bias = _linear(weights, f"{marian}.fc2", order, "out")
    return {
        f"{ours}.feed_forward.linear_in.weight": in_weight,
        f"{ours}.feed_forward.linear_in.bias": in_bias,
        f"{ours}.feed_forward.linear_out.weight": out_weight,
        f"{ours}.feed_forward.linear_out.bias": out_bias,
        **_norm(weights, f"{marian}.final_layer_norm", f"{ours}.feed_forward_residual.norm", order),
    }


def marian_state_dict(marian: MarianModel) -> dict[str, Tensor]:
    """The state_dict of `build_transformer(marian.model_config())` holding Marian's weights."""
    w = {name: tensor.detach().float() for name, tensor in marian.weights.items()}
    order = residual_order(marian.d_model)
    src_rows = torch.tensor(marian.source_vocabulary.our_rows)
    tgt_rows = torch.tensor(marian.target_vocabulary.our_rows)
    state = {
        "src_embed.embedding.weight": w["model.encoder.embed_tokens.weight"][src_rows][:, order],
        "tgt_embed.embedding.weight": w["model.decoder.embed_tokens.weight"][tgt_rows][:, order],
        "projection.linear.weight": w["lm_head.weight"][tgt_rows][:, order],
        "projection.linear.bias": w["final_logits_bias"].reshape(-1)[tgt_rows],
    }
    for i in range(marian.n_encoder_layers):
        marian_layer, ours = f"model.encoder.layers.{i}", f"encoder.layers.{i}"
        state.update(_attention(w, f"{marian_layer}.self_attn", f"{ours}.self_attention", order))
        state.update(
            _norm(
                w, f"{marian_layer}.self_attn_layer_norm", f"{ours}.attention_residual.norm", order
            )
        )
        state.update(_feed_forward(w, marian_layer, ours, order))
    for i in range(marian.n_decoder_layers):
        marian_layer, ours = f"model.decoder.layers.{i}", f"decoder.layers.{i}"
        state.update(_attention(w, f"{marian_layer}.self_attn", f"{ours}.self_attention", order))
        state.update(
            _norm(
                w,
                f"{marian_layer}.self_attn_layer_norm",
                f"{ours}.self_attention_residual.norm",
                order,
            )
        )
        state.update(
            _attention(w, f"{marian_layer}.encoder_attn", f"{ours}.cross_attention", order)
        )
        state.update(
            _norm(
                w,
                f"{marian_layer}.encoder_attn_layer_norm",
                f"{ours}.cross_attention_residual.norm",
                order,
            )
        )
        state.update(_feed_forward(w, marian_layer, ours, order))
    # Our <s> has an output column Marian lacks. It is never a label, and the search never
    # outputs it, but it counts in the softmax's normaliser: 100 below <pad>'s logit (whose row it
    # copies), it adds e^-100 of <pad>'s share, so the distribution over Marian's tokens, and the
    # loss of a fine-tuning run's first step, are Marian's (float32 cannot tell the difference).
    # (With label smoothing, eps * 100 / V per token is added to the loss value: it spreads eps
    # over this column too.)
    state["projection.linear.bias"][BOS_ID] -= BOS_LOGIT_OFFSET
    return {name: tensor.contiguous() for name, tensor in state.items()}
