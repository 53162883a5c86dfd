"""Reading a Hugging Face `MarianMTModel` (a hub name or a `save_pretrained` directory) for
`transformer.marian.convert`: config.json checked, the weights through transformers, the vocabularies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformer.marian.tokenizer import ConversionError, read_vocabulary, refuse_unless
from transformer.marian.weights import MarianModel

HF_ACTIVATIONS = {"swish": "swish", "silu": "swish", "relu": "relu", "gelu": "gelu"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _hub_snapshot(name: str) -> Path:
    """The files of a hub model in the huggingface_hub cache (downloaded if need be)."""
    from huggingface_hub import constants, snapshot_download

    from transformer.data.loading import hub_unreachable

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


def model_directory(source: str) -> Path:
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
    refuse_unless(
        config.get("model_type") == "marian",
        f"model_type is {config.get('model_type')!r}, not 'marian'; only MarianMTModel "
        "(OPUS-MT) checkpoints are supported",
    )
    refuse_unless(
        config.get("scale_embedding", False),
        "scale_embedding=False is not supported (this model multiplies embeddings by sqrt(d_model))",
    )
    refuse_unless(
        not config.get("normalize_embedding", False), "normalised embeddings are not supported"
    )
    refuse_unless(
        not config.get("normalize_before", False),
        "normalize_before=True (pre-norm) is not supported: MarianMTModel is post-norm",
    )
    refuse_unless(
        config.get("activation_function") in HF_ACTIVATIONS,
        f"activation_function {config.get('activation_function')!r} is not supported "
        f"({', '.join(HF_ACTIVATIONS)} are)",
    )
    for ours, marian in (("d_ff", "ffn_dim"), ("n_heads", "attention_heads")):
        encoder, decoder = config.get(f"encoder_{marian}"), config.get(f"decoder_{marian}")
        refuse_unless(
            encoder == decoder,
            f"encoder_{marian} ({encoder}) != decoder_{marian} ({decoder}): this model has one "
            f"{ours} for both stacks",
        )
    refuse_unless(
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
        refuse_unless(
            len(vocabulary.tokens) == size and vocabulary.pad_id == config["pad_token_id"],
            f"the {role} vocabulary ({len(vocabulary.tokens)} tokens, <pad> {vocabulary.pad_id}) "
            f"does not match config.json ({size} tokens, pad_token_id {config['pad_token_id']})",
        )
        refuse_unless(
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
