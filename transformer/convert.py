"""Import pretrained OPUS-MT / Marian translation models as checkpoints of this project.

    pip install -e ".[convert]"
    python -m transformer.convert marian Helsinki-NLP/opus-mt-en-de opus-mt-en-de.pt
    python -m transformer.convert marian path/to/save_pretrained_dir opus-mt-en-de.pt
    python -m transformer.convert marian-npz model.npz opus-mt.pt --vocab opus.vocab.yml \\
        --spm source.spm target.spm

The output is an ordinary checkpoint (config, tokenizers as JSON, weights; step 0): translate.py,
serve.py, `--quantize int8`, the CTranslate2 export, averaging and `train.init_from` take it as
they take one written by train.py. What is read, and from where:
- a Hugging Face `MarianMTModel` (hub name, downloaded into the huggingface_hub cache, or a local
  `save_pretrained` directory): config.json, the weights, source.spm / target.spm and vocab.json
  (target_vocab.json too for models with separate vocabularies);
- a native Marian model: the .npz (its weights and its `special:model.yml` options), the
  vocabulary (.yml or .json; one, or source and target) and the two .spm models.
Both paths give the same Hugging Face-named weights to `transformer.marian_weights`, which maps them
onto this model, and the vocabularies to `transformer.marian_tokenizer`. What cannot be converted
faithfully is refused in one line (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from transformer.checkpoint import CheckpointError, save_checkpoint
from transformer.config import Config, DataConfig, TokenizerConfig, config_to_dict
from transformer.marian_tokenizer import MarianTokenizerError, MarianVocabulary, marian_tokenizer
from transformer.marian_weights import MarianConversionError, MarianModel, marian_state_dict
from transformer.model import build_transformer
from transformer.tokenizer import TokenizerPair

HF_ACTIVATIONS = {"swish": "swish", "silu": "swish", "relu": "relu", "gelu": "gelu"}
# Marian's "gelu" is x * sigmoid(1.702 x), not this model's exact GELU: refused.
NPZ_ACTIVATIONS = {"swish": "swish", "relu": "relu"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class ConversionError(ValueError):
    """A model that cannot be read or converted; the message says what to do."""


def _refuse_unless(condition: bool, message: str) -> None:
    if not condition:
        raise ConversionError(message)


# --- reading vocabularies --------------------------------------------------------------------------


def read_vocabulary(path: Path) -> MarianVocabulary:
    """A Hugging Face vocab.json ({token: id}, <pad> included)."""
    try:
        return MarianVocabulary.from_tokens(read_tokens(path))
    except MarianTokenizerError as error:
        raise ConversionError(f"{str(path)!r}: {error}") from None


def read_tokens(path: Path) -> list[str]:
    """A vocab.json ({token: id}) or Marian .yml vocabulary, as tokens in id order."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConversionError(f"cannot read vocabulary {str(path)!r}: {error.strerror}") from None
    try:
        if path.suffix == ".json":
            mapping = json.loads(text)
        else:  # BaseLoader keeps every key a string: tokens such as "null" or "yes" stay tokens
            mapping = yaml.load(text, Loader=yaml.BaseLoader)
        ids = {str(token): int(i) for token, i in mapping.items()}
    except (ValueError, AttributeError, yaml.YAMLError) as error:
        raise ConversionError(
            f"{str(path)!r} is not a vocabulary of token: id lines ({type(error).__name__})"
        ) from None
    _refuse_unless(
        sorted(ids.values()) == list(range(len(ids))),
        f"the ids in {str(path)!r} are not 0..V-1 without gaps or repeats",
    )
    tokens = [""] * len(ids)
    for token, i in ids.items():
        tokens[i] = token
    return tokens


# --- a Hugging Face model (hub or directory) -------------------------------------------------------


def _hub_snapshot(name: str) -> Path:
    """The files of a hub model in the huggingface_hub cache (downloaded if need be)."""
    from huggingface_hub import constants, snapshot_download

    from transformer.data import hub_unreachable

    offline = bool(constants.HF_HUB_OFFLINE)
    if not offline and (problem := hub_unreachable(constants.ENDPOINT)):
        raise ConversionError(
            f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} to download {name!r} "
            f"({problem}); if you downloaded it before, set HF_HUB_OFFLINE=1 to use the cached "
            "copy, else give the path of a directory saved with save_pretrained"
        )
    try:
        # Only what conversion reads (not the TensorFlow / Rust copies of the weights).
        directory = Path(
            snapshot_download(name, allow_patterns=["*.json", "*.spm", "*.safetensors"])
        )
        if not (directory / WEIGHT_FILES[0]).is_file():
            directory = Path(snapshot_download(name, allow_patterns=["*.json", "*.spm", "*.bin"]))
    except Exception as error:  # huggingface_hub raises many types: not found, offline, network
        if offline:
            raise ConversionError(
                f"HF_HUB_OFFLINE=1 is set and {name!r} is not in the huggingface_hub cache; "
                "unset HF_HUB_OFFLINE to download it, or give a local save_pretrained directory"
            ) from None
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ConversionError(
            f"cannot download {name!r} from the Hugging Face Hub ({type(error).__name__}: "
            f"{first_line}); check the name, or give a local save_pretrained directory"
        ) from None
    return directory


def _model_directory(source: str) -> Path:
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/")) or source.count("/") != 1:
        raise ConversionError(
            f"{source!r} is neither a directory saved with save_pretrained nor a hub name such "
            "as Helsinki-NLP/opus-mt-en-de"
        )
    return _hub_snapshot(source)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConversionError(f"{str(path)!r} is missing; is this a MarianMTModel directory?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConversionError(f"cannot read {str(path)!r} ({type(error).__name__})") from None


def check_hf_config(config: dict[str, Any]) -> None:
    """Refuse, in one line, what this model cannot compute the way MarianMTModel does."""
    _refuse_unless(
        config.get("model_type") == "marian",
        f"model_type is {config.get('model_type')!r}, not 'marian'; only MarianMTModel "
        "(OPUS-MT) checkpoints are supported",
    )
    _refuse_unless(
        config.get("scale_embedding", False),
        "scale_embedding=False is not supported (this model multiplies embeddings by sqrt(d_model))",
    )
    _refuse_unless(
        not config.get("normalize_embedding", False), "normalised embeddings are not supported"
    )
    _refuse_unless(
        not config.get("normalize_before", False),
        "normalize_before=True (pre-norm) is not supported: MarianMTModel is post-norm",
    )
    _refuse_unless(
        config.get("activation_function") in HF_ACTIVATIONS,
        f"activation_function {config.get('activation_function')!r} is not supported "
        f"({', '.join(HF_ACTIVATIONS)} are)",
    )
    for ours, marian in (("d_ff", "ffn_dim"), ("n_heads", "attention_heads")):
        encoder, decoder = config.get(f"encoder_{marian}"), config.get(f"decoder_{marian}")
        _refuse_unless(
            encoder == decoder,
            f"encoder_{marian} ({encoder}) != decoder_{marian} ({decoder}): this model has one "
            f"{ours} for both stacks",
        )
    _refuse_unless(
        config.get("decoder_start_token_id") == config.get("pad_token_id"),
        "decoder_start_token_id differs from pad_token_id; only Marian's usual start is supported",
    )


def read_hf_model(directory: Path) -> tuple[MarianModel, dict[str, Any]]:
    """A `save_pretrained` directory as a MarianModel, and its tokenizer_config.json (or {})."""
    config = _read_json(directory / "config.json")
    check_hf_config(config)
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise ConversionError(f"no weights ({' or '.join(WEIGHT_FILES)}) in {str(directory)!r}")
    tokenizer_config_path = directory / "tokenizer_config.json"
    tokenizer_config = _read_json(tokenizer_config_path) if tokenizer_config_path.is_file() else {}
    source_vocabulary = read_vocabulary(directory / "vocab.json")
    target_vocabulary = source_vocabulary
    if tokenizer_config.get("separate_vocabs", False):
        target_vocabulary = read_vocabulary(directory / "target_vocab.json")
    for role, vocabulary, size in (
        ("source", source_vocabulary, config["vocab_size"]),
        ("target", target_vocabulary, config.get("decoder_vocab_size") or config["vocab_size"]),
    ):
        _refuse_unless(
            len(vocabulary.tokens) == size and vocabulary.pad_id == config["pad_token_id"],
            f"the {role} vocabulary ({len(vocabulary.tokens)} tokens, <pad> {vocabulary.pad_id}) "
            f"does not match config.json ({size} tokens, pad_token_id {config['pad_token_id']})",
        )
        _refuse_unless(
            vocabulary.eos_id == config.get("eos_token_id"),
            f"the {role} vocabulary's </s> is id {vocabulary.eos_id}, config.json's eos_token_id "
            f"{config.get('eos_token_id')}",
        )

    from transformers import MarianMTModel  # heavy: only once the files look right

    try:
        hf_model = MarianMTModel.from_pretrained(directory)
    except Exception as error:  # corrupt or foreign weight files
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ConversionError(
            f"transformers cannot load the weights in {str(directory)!r} ({first_line})"
        ) from None
    shared = bool(config.get("share_encoder_decoder_embeddings", True))
    marian = MarianModel(
        weights=dict(hf_model.state_dict()),
        d_model=config["d_model"],
        n_heads=config["encoder_attention_heads"],
        n_encoder_layers=config["encoder_layers"],
        n_decoder_layers=config["decoder_layers"],
        d_ff=config["encoder_ffn_dim"],
        activation=HF_ACTIVATIONS[config["activation_function"]],
        max_positions=config["max_position_embeddings"],
        dropout=float(config.get("dropout", 0.1)),
        attention_dropout=float(config.get("attention_dropout", 0.0)),
        share_embeddings=shared,
        tie_output=bool(config.get("tie_word_embeddings", True)),
        source_vocabulary=source_vocabulary,
        target_vocabulary=target_vocabulary,
    )
    return marian, tokenizer_config


# --- a native Marian model (.npz) --------------------------------------------------------------------

NPZ_ATTENTION = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}


def check_npz_options(options: dict[str, Any]) -> None:
    """Refuse native Marian options this model cannot reproduce exactly."""
    _refuse_unless(
        options.get("type") == "transformer",
        f"--type {options.get('type')!r}: only transformer models are supported",
    )
    _refuse_unless(not options.get("right-left", False), "right-to-left models are not supported")
    _refuse_unless(
        options.get("transformer-decoder-autoreg", "self-attention") == "self-attention",
        "only --transformer-decoder-autoreg self-attention is supported",
    )
    _refuse_unless(
        options.get("transformer-ffn-activation", "swish") in NPZ_ACTIVATIONS,
        f"--transformer-ffn-activation {options.get('transformer-ffn-activation')!r} is not "
        "supported (Marian's gelu is a sigmoid approximation; swish and relu are)",
    )
    layout = (
        options.get("transformer-preprocess", ""),
        options.get("transformer-postprocess", "dan"),
        options.get("transformer-postprocess-top", ""),
    )
    _refuse_unless(
        layout == ("", "dan", ""),
        f"pre/post-processing {layout} is not supported: only post-norm ('', 'dan', '') models "
        "(OPUS-MT's) are; pre-norm native models are not imported yet",
    )
    _refuse_unless(
        options.get("transformer-postprocess-emb", "d") == "d",
        "normalised embeddings (--transformer-postprocess-emb with n) are not supported",
    )
    _refuse_unless(
        options.get("transformer-ffn-depth", 2) == 2
        and options.get("transformer-decoder-ffn-depth", 0) in (0, 2),
        "only feed-forward blocks of depth 2 are supported",
    )


def _npz_linear(arrays: Any, name: str) -> dict[str, torch.Tensor]:
    """Marian stores x @ W: weight (in, out) -> nn.Linear's (out, in); bias (1, out) -> (out,)."""
    return {
        "weight": torch.from_numpy(arrays[f"{name[0]}_W{name[1]}"]).float().T,
        "bias": torch.from_numpy(arrays[f"{name[0]}_b{name[1]}"]).float().reshape(-1),
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
    _refuse_unless(
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
                    linear = _npz_linear(arrays, (f"{marian}_{block}", letter))
                    for part, value in linear.items():
                        weights[f"{hf}.{hf_block}.{projection}.{part}"] = value
                norm = f"{hf_block}_layer_norm" if block == "self" else "encoder_attn_layer_norm"
                weights[f"{hf}.{norm}.weight"] = tensor(f"{marian}_{block}_Wo_ln_scale").reshape(-1)
                weights[f"{hf}.{norm}.bias"] = tensor(f"{marian}_{block}_Wo_ln_bias").reshape(-1)
            for number in ("1", "2"):
                for part, value in _npz_linear(arrays, (f"{marian}_ffn", number)).items():
                    weights[f"{hf}.fc{number}.{part}"] = value
            weights[f"{hf}.final_layer_norm.weight"] = tensor(f"{marian}_ffn_ffn_ln_scale").reshape(
                -1
            )
            weights[f"{hf}.final_layer_norm.bias"] = tensor(f"{marian}_ffn_ffn_ln_bias").reshape(-1)
    return weights


def read_npz_model(path: Path, vocab_paths: list[Path], max_positions: int) -> MarianModel:
    """A native Marian .npz and its vocabularies (one shared, or source and target)."""
    import numpy as np

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
        _refuse_unless("<pad>" not in tokens, f"{str(vocab_path)!r} already has a <pad>")
        try:
            vocabularies.append(MarianVocabulary.from_tokens([*tokens, "<pad>"]))
        except MarianTokenizerError as error:
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


# --- writing the checkpoint ------------------------------------------------------------------------


def converted_checkpoint(
    marian: MarianModel,
    source_spm: Path,
    target_spm: Path,
    source_lang: str = "src",
    target_lang: str = "tgt",
    origin: str = "",
) -> dict[str, Any]:
    """The checkpoint payload: config, tokenizers, weights (checked by loading them)."""
    try:
        model_config = marian.model_config()
        source = marian_tokenizer(source_spm, marian.source_vocabulary)
        target = marian_tokenizer(target_spm, marian.target_vocabulary)
        state = marian_state_dict(marian)
    except (MarianConversionError, MarianTokenizerError) as error:
        raise ConversionError(str(error)) from None
    except KeyError as error:
        raise ConversionError(f"the model lacks the weight {error}") from None
    joint = marian.source_vocabulary is marian.target_vocabulary
    config = Config(
        model=model_config,
        data=DataConfig(
            src_lang=source_lang,
            tgt_lang=target_lang,
            tokenizer=TokenizerConfig(
                kind="unigram", vocab_size=model_config.src_vocab_size, joint=joint
            ),
        ),
    )
    model = build_transformer(model_config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConversionError(f"the weights do not fit the model ({first_line})") from None
    tokenizers = TokenizerPair(source, target, source_eos=True)
    return {
        "config": config_to_dict(config),
        "tokenizers": tokenizers.to_json(),
        "model": model.state_dict(),
        "step": 0,
        "converted_from": origin,
    }


def convert_hf(source: str, output: str | Path) -> dict[str, Any]:
    """`python -m transformer.convert marian SOURCE OUT.pt`."""
    directory = _model_directory(source)
    marian, tokenizer_config = read_hf_model(directory)
    payload = converted_checkpoint(
        marian,
        directory / "source.spm",
        directory / "target.spm",
        tokenizer_config.get("source_lang") or "src",
        tokenizer_config.get("target_lang") or "tgt",
        origin=source,
    )
    save_checkpoint(payload, output)
    return payload


def convert_npz(
    npz: str | Path,
    output: str | Path,
    vocab: list[str],
    spm: list[str],
    max_positions: int = 512,
) -> dict[str, Any]:
    """`python -m transformer.convert marian-npz MODEL.npz OUT.pt --vocab ... --spm ...`."""
    marian = read_npz_model(Path(npz), [Path(v) for v in vocab], max_positions)
    payload = converted_checkpoint(marian, Path(spm[0]), Path(spm[-1]), origin=str(npz))
    save_checkpoint(payload, output)
    return payload


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m transformer.convert",
        description="Import a pretrained OPUS-MT / Marian model as a checkpoint of this project.",
    )
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    hf = kinds.add_parser("marian", help="a Hugging Face MarianMTModel (hub name or directory)")
    hf.add_argument(
        "source", help="e.g. Helsinki-NLP/opus-mt-en-de, or a save_pretrained directory"
    )
    hf.add_argument("output", metavar="OUT.pt", help="the checkpoint to write")
    npz = kinds.add_parser("marian-npz", help="a native Marian model (.npz)")
    npz.add_argument("npz", metavar="MODEL.npz")
    npz.add_argument("output", metavar="OUT.pt", help="the checkpoint to write")
    npz.add_argument(
        "--vocab",
        nargs="+",
        required=True,
        metavar="VOCAB",
        help="one shared vocabulary, or source and target (.yml or .json)",
    )
    npz.add_argument(
        "--spm",
        nargs=2,
        required=True,
        metavar=("SOURCE.spm", "TARGET.spm"),
        help="the SentencePiece models",
    )
    npz.add_argument(
        "--max-positions", type=int, default=512, help="longest sequence (default 512, OPUS-MT's)"
    )
    args = parser.parse_args(argv)
    if args.kind == "marian-npz" and len(args.vocab) > 2:
        npz.error("--vocab takes one shared vocabulary, or a source and a target one")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.kind == "marian":
            payload = convert_hf(args.source, args.output)
        else:
            payload = convert_npz(args.npz, args.output, args.vocab, args.spm, args.max_positions)
    except (ConversionError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model = payload["config"]["model"]
    print(
        f"converted {payload['converted_from']} -> {args.output} (d_model {model['d_model']}, "
        f"{model['n_encoder_layers']}+{model['n_decoder_layers']} layers, vocabularies "
        f"{model['src_vocab_size']}/{model['tgt_vocab_size']}, {model['activation']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
