"""`transformer convert`: import a pretrained OPUS-MT / Marian model as a checkpoint of this project
(optional [convert] extra), to translate with or to fine-tune (train.init_from).

    transformer convert marian Helsinki-NLP/opus-mt-en-de opus-mt-en-de.pt
    transformer convert marian path/to/save_pretrained_dir opus-mt-en-de.pt
    transformer convert marian-npz model.npz opus-mt.pt --vocab opus.vocab.yml \\
        --spm source.spm target.spm
"""

from __future__ import annotations

import argparse
import sys

from transformer.checkpoint import CheckpointError
from transformer.commands.common import USER_ERROR
from transformer.marian.convert import convert_hf, convert_npz
from transformer.marian.tokenizer import ConversionError


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
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


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
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
