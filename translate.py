"""Translate sentences with a trained checkpoint (it carries its config and tokenizers).

    python translate.py -c runs/multi30k_en_de/checkpoints/best.pt "A man is riding a bike."
    python translate.py -c best.pt -i test.en -o test.de --beam 5 --ref test.ref.de
    cat input.txt | python translate.py -c best.pt > output.txt
    python translate.py -c a.pt b.pt -i test.en              # an ensemble of two checkpoints
    python translate.py -c best.pt -i mono.de --sample --top-p 0.9 --nbest 4 --seed 1
    python translate.py -c best.pt -i test.en --prefix-file starts.de   # forced beginnings

The output has one line per input line (an empty line gives an empty line). With --nbest N > 1
each input gives N lines in the Moses n-best format: `index ||| translation ||| score`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from transformer.checkpoint import CheckpointError, load_model
from transformer.config import ConfigError
from transformer.metrics import score_translations

if TYPE_CHECKING:  # imported late, in main: `--help` and argument errors need no torch
    from transformer.translator import Translator

STDIN_CHUNK_LINES = 256  # lines translated together when reading a pipe


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Translate with a trained Transformer checkpoint.")
    parser.add_argument(
        "-c",
        "--checkpoint",
        required=True,
        nargs="+",
        help="a .pt file written by train.py; several make an ensemble (same tokenizers): "
        "-c a.pt b.pt [sentences]",
    )
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
    parser.add_argument("--ref", help="reference translations: print BLEU and chrF to stderr")
    add_sampling_and_prefix_arguments(parser)
    args = parser.parse_args(argv)
    split_checkpoints_from_sentences(args)
    check_sampling_and_prefix_arguments(parser, args)
    if args.sentences and args.input:
        parser.error("give sentences as arguments or --input, not both")
    for name in ("beam", "nbest", "max_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.nbest and args.beam and args.nbest > args.beam and not args.sample:
        parser.error("--nbest cannot exceed --beam")
    if args.input and not Path(args.input).is_file():
        parser.error(f"input file {args.input!r} not found")
    if args.ref and not Path(args.ref).is_file():
        parser.error(f"reference file {args.ref!r} not found")
    return args


def split_checkpoints_from_sentences(args: argparse.Namespace) -> None:
    """`-c` takes several checkpoints, so in `-c best.pt "A sentence."` argparse hands it the
    sentence too. The checkpoints are the leading items that name a .pt file or an existing
    file; the sentences start at the first item that does not."""
    if args.sentences:
        return
    items = args.checkpoint
    first_sentence = next(
        (i for i, item in enumerate(items[1:], 1) if not _is_checkpoint_path(item)), len(items)
    )
    args.checkpoint, args.sentences = items[:first_sentence], items[first_sentence:]


def _is_checkpoint_path(item: str) -> bool:
    return item.endswith(".pt") or Path(item).is_file()


def add_sampling_and_prefix_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sample",
        action="store_true",
        help="draw each token at random instead of searching (--nbest N: N draws per sentence)",
    )
    parser.add_argument("--temperature", type=float, help="sampling: <1 sharper, >1 flatter")
    parser.add_argument("--top-k", type=int, help="sampling: among the K most probable tokens")
    parser.add_argument(
        "--top-p", type=float, help="sampling: among the fewest tokens reaching probability P"
    )
    parser.add_argument("--seed", type=int, help="sampling: seed, for the same draws again")
    parser.add_argument(
        "--prefix-file",
        help="forced beginnings of the translations, one line per input line (empty: none)",
    )


def check_sampling_and_prefix_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> None:
    sampling = ("temperature", "top_k", "top_p", "seed")
    given = [f"--{name.replace('_', '-')}" for name in sampling if getattr(args, name) is not None]
    if given and not args.sample:
        parser.error(f"{', '.join(given)} only apply with --sample")
    if args.sample and args.beam is not None:
        parser.error("--sample draws tokens instead of a beam search: leave out --beam")
    if args.temperature is not None and args.temperature <= 0:
        parser.error("--temperature must be greater than 0")
    if args.top_k is not None and args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        parser.error("--top-p must be in (0, 1]")
    if args.prefix_file and not Path(args.prefix_file).is_file():
        parser.error(f"prefix file {args.prefix_file!r} not found")


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


def build_translator(args: argparse.Namespace) -> Translator:
    """Load the checkpoint(s) and apply the command line's decoding options."""
    from transformer.training import resolve_device
    from transformer.translator import Translator, check_ensemble

    device = resolve_device(args.device)
    members = [load_model(path, device) for path in args.checkpoint]
    check_ensemble(members, args.checkpoint)
    nbest = args.nbest or 1
    # n-best needs at least that many beams; sampling draws nbest times instead.
    beam = args.beam or max(nbest, members[0].config.decode.beam_size)
    return Translator.with_options(
        members,
        device,
        beam_size=1 if args.sample else beam,
        length_penalty=args.length_penalty,
        nbest=nbest,
        batch_tokens=args.max_tokens,
        sample=args.sample or None,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )


def read_prefixes(args: argparse.Namespace) -> list[str] | None:
    """The prefix file's lines, checked against the input's line count when it is known."""
    if not args.prefix_file:
        return None
    prefixes = Path(args.prefix_file).read_text(encoding="utf-8").splitlines()
    if args.sentences or args.input:
        count = len(args.sentences) or len(
            Path(args.input).read_text(encoding="utf-8").splitlines()
        )
        if count != len(prefixes):
            raise ValueError(
                f"{args.prefix_file} has {len(prefixes)} lines but the input has {count}; "
                "give one prefix line (possibly empty) per input line"
            )
    return prefixes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch

        translator = build_translator(args)
        prefixes = read_prefixes(args)
    except (CheckpointError, ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    hypotheses: list[str] = []
    nbest = translator.decode.nbest
    try:
        with torch.inference_mode():
            for chunk in input_chunks(args):
                chunk_prefixes = None
                if prefixes is not None:
                    chunk_prefixes = prefixes[len(hypotheses) : len(hypotheses) + len(chunk)]
                    if len(chunk_prefixes) < len(chunk):
                        print(
                            f"error: {args.prefix_file} has fewer lines than the input",
                            file=sys.stderr,
                        )
                        return 2
                results = translator.translate(chunk, chunk_prefixes)
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
