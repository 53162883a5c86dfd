"""Translate sentences with a trained checkpoint (it carries its config and tokenizers).

    python translate.py -c runs/multi30k_en_de/checkpoints/best.pt "A man is riding a bike."
    python translate.py -c best.pt -i test.en -o test.de --beam 5 --ref test.ref.de
    cat input.txt | python translate.py -c best.pt > output.txt

The output has one line per input line (an empty line gives an empty line). With --nbest N > 1
each input gives N lines in the Moses n-best format: `index ||| translation ||| score`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from transformer.checkpoint import CheckpointError, load_model
from transformer.config import ConfigError
from transformer.metrics import score_translations
from transformer.quantize import QUANTIZATIONS, QuantizationError

STDIN_CHUNK_LINES = 256  # lines translated together when reading a pipe


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Translate with a trained Transformer checkpoint.")
    parser.add_argument("-c", "--checkpoint", required=True, help="a .pt file written by train.py")
    parser.add_argument("sentences", nargs="*", help="sentences to translate (else -i or stdin)")
    parser.add_argument("-i", "--input", help="a file with one sentence per line")
    parser.add_argument("-o", "--output", help="write translations here instead of stdout")
    parser.add_argument(
        "--beam", type=int, help="beam size (1 = greedy); default: the checkpoint's"
    )
    parser.add_argument("--length-penalty", type=float, help="GNMT alpha for beam search")
    parser.add_argument("--nbest", type=int, help="translations per sentence (<= beam)")
    parser.add_argument("--max-tokens", type=int, help="source tokens per decoding batch")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        help="translate with int8 linear layers (CPU only; faster, slightly different output)",
    )
    parser.add_argument("--ref", help="reference translations: print BLEU and chrF to stderr")
    args = parser.parse_args(argv)
    if args.sentences and args.input:
        parser.error("give sentences as arguments or --input, not both")
    for name in ("beam", "nbest", "max_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.nbest and args.beam and args.nbest > args.beam:
        parser.error("--nbest cannot exceed --beam")
    if args.input and not Path(args.input).is_file():
        parser.error(f"input file {args.input!r} not found")
    if args.ref and not Path(args.ref).is_file():
        parser.error(f"reference file {args.ref!r} not found")
    return args


def chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Group a (possibly endless) stream of lines so that each group is decoded as batches."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def input_chunks(args: argparse.Namespace) -> Iterator[list[str]]:
    if args.sentences:
        yield list(args.sentences)
    elif args.input:
        lines = Path(args.input).read_text(encoding="utf-8").splitlines()
        yield from chunks(lines, max(1, len(lines)))
    else:  # stdin: an interactive terminal gets each line translated as soon as it is typed
        size = 1 if sys.stdin.isatty() else STDIN_CHUNK_LINES
        yield from chunks(sys.stdin, size)


def write_translations(results: list, out: TextIO, nbest: int, first_index: int) -> list[str]:
    best = []
    for offset, translations in enumerate(results):
        best.append(translations[0].text)
        if nbest == 1:
            out.write(translations[0].text + "\n")
        else:
            for t in translations:
                out.write(f"{first_index + offset} ||| {t.text} ||| {t.score:.4f}\n")
    out.flush()
    return best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch

        from transformer.training import resolve_device
        from transformer.translator import Translator

        device = resolve_device(args.device)
        loaded = load_model(args.checkpoint, device)
        nbest = args.nbest or 1
        # n-best needs at least that many beams.
        beam = args.beam or max(nbest, loaded.config.decode.beam_size)
        translator = Translator.with_options(
            loaded,
            device,
            beam_size=beam,
            length_penalty=args.length_penalty,
            nbest=nbest,
            batch_tokens=args.max_tokens,
            quantize=args.quantize,
        )
    except (CheckpointError, ConfigError, QuantizationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    hypotheses: list[str] = []
    try:
        with torch.inference_mode():
            for chunk in input_chunks(args):
                results = translator.translate(chunk)
                hypotheses += write_translations(results, out, nbest, len(hypotheses))
    finally:
        if args.output:
            out.close()
    if args.ref:
        references = Path(args.ref).read_text(encoding="utf-8").splitlines()
        if len(references) != len(hypotheses):
            print(
                f"error: {args.ref} has {len(references)} lines but the input had "
                f"{len(hypotheses)}; give one reference line per input line",
                file=sys.stderr,
            )
            return 2
        scores = score_translations(hypotheses, references)
        print(f"BLEU {scores.bleu:.2f}  {scores.bleu_signature}", file=sys.stderr)
        print(f"chrF {scores.chrf:.2f}  {scores.chrf_signature}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
