"""Reading a native Marian model (.npz with its `special:model.yml`) for `transformer.marian.convert`:
the options checked, the parameters renamed to Hugging Face's `MarianMTModel` names, so that both
paths share one mapping onto this model (`transformer.marian.weights`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from transformer.marian.tokenizer import (
    ConversionError,
    MarianVocabulary,
    read_tokens,
    refuse_unless,
)
from transformer.marian.weights import MarianModel

# Marian's "gelu" is x * sigmoid(1.702 x), not this model's exact GELU: refused.
NPZ_ACTIVATIONS = {"swish": "swish", "relu": "relu"}


NPZ_ATTENTION = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}


def check_npz_options(options: dict[str, Any]) -> None:
    """Refuse native Marian options this model cannot reproduce exactly."""
    refuse_unless(
        options.get("type") == "transformer",
        f"--type {options.get('type')!r}: only transformer models are supported",
    )
    refuse_unless(not options.get("right-left", False), "right-to-left models are not supported")
    refuse_unless(
        options.get("transformer-decoder-autoreg", "self-attention") == "self-attention",
        "only --transformer-decoder-autoreg self-attention is supported",
    )
    refuse_unless(
        options.get("transformer-ffn-activation", "swish") in NPZ_ACTIVATIONS,
        f"--transformer-ffn-activation {options.get('transformer-ffn-activation')!r} is not "
        "supported (Marian's gelu is a sigmoid approximation; swish and relu are)",
    )
    layout = (
        options.get("transformer-preprocess", ""),
        options.get("transformer-postprocess", "dan"),
        options.get("transformer-postprocess-top", ""),
    )
    refuse_unless(
        layout == ("", "dan", ""),
        f"pre/post-processing {layout} is not supported: only post-norm ('', 'dan', '') models "
        "(OPUS-MT's) are; pre-norm native models are not imported yet",
    )
    refuse_unless(
        options.get("transformer-postprocess-emb", "d") == "d",
        "normalised embeddings (--transformer-postprocess-emb with n) are not supported",
    )
    refuse_unless(
        options.get("transformer-ffn-depth", 2) == 2
        and options.get("transformer-decoder-ffn-depth", 0) in (0, 2),
        "only feed-forward blocks of depth 2 are supported",
    )


def _npz_linear(arrays: Any, scope: str, suffix: str) -> dict[str, torch.Tensor]:
    """Marian's `{scope}_W{suffix}` and `{scope}_b{suffix}`: it stores x @ W, so the weight (in, out)
    becomes nn.Linear's (out, in); the bias (1, out) becomes (out,)."""
    return {
        "weight": torch.from_numpy(arrays[f"{scope}_W{suffix}"]).float().T,
        "bias": torch.from_numpy(arrays[f"{scope}_b{suffix}"]).float().reshape(-1),
    }


def npz_to_hf_names(arrays: Any, options: dict[str, Any], vocab_sizes: tuple[int, int]) -> dict:
    """Marian parameter names -> MarianMTModel's, with <pad> appended to each vocabulary as a zero
    row (Marian starts decoding from a zero vector; Hugging Face's converter does the same)."""

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(arrays[name]).float()

    def with_pad_row(matrix: torch.Tensor) -> torch.Tensor:
        return torch.cat([matrix, matrix.new_zeros(1, matrix.size(1))])

    names = set(arrays.files)
    shared = "Wemb" in names
    source = tensor("Wemb") if shared else tensor("encoder_Wemb")
    target = source if shared else tensor("decoder_Wemb")
    refuse_unless(
        (source.size(0), target.size(0)) == vocab_sizes,
        f"the embeddings have {source.size(0)} / {target.size(0)} rows but the vocabularies "
        f"{vocab_sizes[0]} / {vocab_sizes[1]} tokens (without <pad>)",
    )
    if "decoder_ff_logit_out_Wt" in names:
        output = tensor("decoder_ff_logit_out_Wt")  # (V, D): tied layout
    elif "decoder_ff_logit_out_W" in names:
        output = tensor("decoder_ff_logit_out_W").T  # (D, V) -> (V, D)
    else:
        output = target  # tied to the decoder embeddings
    bias = tensor("decoder_ff_logit_out_b").reshape(1, -1)
    weights = {
        "model.encoder.embed_tokens.weight": with_pad_row(source),
        "model.decoder.embed_tokens.weight": with_pad_row(target),
        "lm_head.weight": with_pad_row(output),
        "final_logits_bias": torch.cat([bias, bias.new_zeros(1, 1)], dim=1),
    }
    for side, depth, blocks in (
        ("encoder", options["enc-depth"], (("self", "self_attn"),)),
        ("decoder", options["dec-depth"], (("self", "self_attn"), ("context", "encoder_attn"))),
    ):
        for i in range(depth):
            marian, hf = f"{side}_l{i + 1}", f"model.{side}.layers.{i}"
            for block, hf_block in blocks:
                for letter, projection in NPZ_ATTENTION.items():
                    linear = _npz_linear(arrays, f"{marian}_{block}", letter)
                    for part, value in linear.items():
                        weights[f"{hf}.{hf_block}.{projection}.{part}"] = value
                norm = f"{hf_block}_layer_norm" if block == "self" else "encoder_attn_layer_norm"
                weights[f"{hf}.{norm}.weight"] = tensor(f"{marian}_{block}_Wo_ln_scale").reshape(-1)
                weights[f"{hf}.{norm}.bias"] = tensor(f"{marian}_{block}_Wo_ln_bias").reshape(-1)
            for number in ("1", "2"):
                for part, value in _npz_linear(arrays, f"{marian}_ffn", number).items():
                    weights[f"{hf}.fc{number}.{part}"] = value
            weights[f"{hf}.final_layer_norm.weight"] = tensor(f"{marian}_ffn_ffn_ln_scale").reshape(
                -1
            )
            weights[f"{hf}.final_layer_norm.bias"] = tensor(f"{marian}_ffn_ffn_ln_bias").reshape(-1)
    return weights


def read_npz_model(path: Path, vocab_paths: list[Path], max_positions: int) -> MarianModel:
    """A native Marian .npz and its vocabularies (one shared, or source and target)."""
    try:
        arrays = np.load(path)
        options = yaml.safe_load(arrays["special:model.yml"][:-1].tobytes())
    except (OSError, ValueError, KeyError, yaml.YAMLError) as error:
        raise ConversionError(
            f"{str(path)!r} is not a Marian model .npz with its special:model.yml "
            f"({type(error).__name__})"
        ) from None
    check_npz_options(options)
    vocabularies = []
    for vocab_path in vocab_paths:
        tokens = read_tokens(vocab_path)  # Marian's own: </s> 0, <unk> 1, no <pad>
        refuse_unless("<pad>" not in tokens, f"{str(vocab_path)!r} already has a <pad>")
        try:
            vocabularies.append(MarianVocabulary.from_tokens([*tokens, "<pad>"]))
        except ConversionError as error:
            raise ConversionError(f"{str(vocab_path)!r}: {error}") from None
    source_vocabulary, target_vocabulary = vocabularies[0], vocabularies[-1]
    sizes = (len(source_vocabulary.tokens) - 1, len(target_vocabulary.tokens) - 1)
    try:
        weights = npz_to_hf_names(arrays, options, sizes)
    except KeyError as error:
        raise ConversionError(f"{str(path)!r} lacks the parameter {error}") from None
    shared = "Wemb" in arrays.files
    tied = "decoder_ff_logit_out_W" not in arrays.files
    return MarianModel(
        weights=weights,
        d_model=int(options["dim-emb"]),
        n_heads=int(options["transformer-heads"]),
        n_encoder_layers=int(options["enc-depth"]),
        n_decoder_layers=int(options["dec-depth"]),
        d_ff=int(options["transformer-dim-ffn"]),
        activation=NPZ_ACTIVATIONS[options.get("transformer-ffn-activation", "swish")],
        max_positions=max_positions,
        dropout=float(options.get("transformer-dropout", 0.1)),
        attention_dropout=float(options.get("transformer-dropout-attention", 0.0)),
        share_embeddings=shared,
        tie_output=tied,
        source_vocabulary=source_vocabulary,
        target_vocabulary=target_vocabulary if len(vocabularies) > 1 else source_vocabulary,
    )
