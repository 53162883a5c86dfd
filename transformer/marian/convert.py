"""Import pretrained OPUS-MT / Marian translation models as checkpoints of this project.

    pip install -e ".[convert]"
    python -m transformer.marian.convert marian Helsinki-NLP/opus-mt-en-de opus-mt-en-de.pt
    python -m transformer.marian.convert marian path/to/save_pretrained_dir opus-mt-en-de.pt
    python -m transformer.marian.convert marian-npz model.npz opus-mt.pt --vocab opus.vocab.yml \\
        --spm source.spm target.spm

The output is an ordinary checkpoint (config, tokenizers as JSON, weights; step 0): translate.py,
serve.py, `--quantize int8`, the CTranslate2 export, averaging and `train.init_from` take it as
they take one written by train.py. What is read, and from where:
- a Hugging Face `MarianMTModel` (hub name, downloaded into the huggingface_hub cache, or a local
  `save_pretrained` directory): config.json, the weights, source.spm / target.spm and vocab.json
  (target_vocab.json too for models with separate vocabularies);
- a native Marian model: the .npz (its weights and its `special:model.yml` options), the
  vocabulary (.yml or .json; one, or source and target) and the two .spm models.
The readers (`marian_hf.py`, `marian_npz.py`) give the same Hugging Face-named weights to
`marian_weights.py`, which maps them onto this model, and the vocabularies to
`marian_tokenizer.py`. What cannot be converted faithfully is refused in one line (exit status 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from transformer.checkpoint import CheckpointError, save_checkpoint
from transformer.cli import USER_ERROR
from transformer.config import Config, DataConfig, TokenizerConfig, config_to_dict
from transformer.marian.hf import model_directory, read_hf_model
from transformer.marian.npz import read_npz_model
from transformer.marian.tokenizer import ConversionError, marian_tokenizer
from transformer.marian.weights import MarianModel, marian_state_dict
from transformer.model import build_transformer
from transformer.tokenization.tokenizer import TokenizerPair

__all__ = ["ConversionError", "convert_hf", "convert_npz", "converted_checkpoint", "main"]


def converted_checkpoint(
    marian: MarianModel,
    source_spm: Path,
    target_spm: Path,
    source_lang: str = "src",
    target_lang: str = "tgt",
    origin: str = "",
) -> dict[str, Any]:
    """The checkpoint payload: config, tokenizers, weights (checked by loading them)."""
    model_config = marian.model_config()
    source = marian_tokenizer(source_spm, marian.source_vocabulary)
    target = marian_tokenizer(target_spm, marian.target_vocabulary)
    try:
        state = marian_state_dict(marian)
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
    """`python -m transformer.marian.convert marian SOURCE OUT.pt`."""
    directory = model_directory(source)
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
    """`python -m transformer.marian.convert marian-npz MODEL.npz OUT.pt --vocab ... --spm ...`."""
    marian = read_npz_model(Path(npz), [Path(v) for v in vocab], max_positions)
    payload = converted_checkpoint(marian, Path(spm[0]), Path(spm[-1]), origin=str(npz))
    save_checkpoint(payload, output)
    return payload


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m transformer.marian.convert",
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
        return USER_ERROR
    model = payload["config"]["model"]
    print(
        f"converted {payload['converted_from']} -> {args.output} (d_model {model['d_model']}, "
        f"{model['n_encoder_layers']}+{model['n_decoder_layers']} layers, vocabularies "
        f"{model['src_vocab_size']}/{model['tgt_vocab_size']}, {model['activation']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
