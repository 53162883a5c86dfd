"""Translate sentences with a trained checkpoint (it carries its config and tokenizers).

    python translate.py -c runs/multi30k_en_de/checkpoints/best.pt "A man is riding a bike."
    python translate.py -c best.pt -i test.en -o test.de --beam 5 --ref test.ref.de
    cat input.txt | python translate.py -c best.pt > output.txt
    python translate.py -c best.pt "A dog runs." --attention attention/   # + attention/00001.png
    python translate.py -c a.pt b.pt -i test.en              # an ensemble of two checkpoints
    python translate.py -c best.pt -i mono.de --sample --top-p 0.9 --nbest 4 --seed 1
    python translate.py -c best.pt -i test.en --prefix-file starts.de   # forced beginnings
    python translate.py -c multi.pt --tgt-lang fr "A dog runs."   # a multilingual model: into fr

The output has one line per input line (an empty line gives an empty line). With --nbest N > 1
each input gives N lines in the Moses n-best format: `index ||| translation ||| score`.

A multilingual model (one trained with data.pairs, or an imported multi-target OPUS-MT model)
needs to know the language to translate into: --tgt-lang for every line, or a line that starts
with its own tag (`>>de<< A dog runs.`), which it keeps.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from transformer.checkpoint import CheckpointError, load_model
from transformer.commands.common import (
    USER_ERROR,
    add_decoding_arguments,
    check_positive,
    start_the_search,
    unreadable_input,
)
from transformer.config import ConfigError
from transformer.inference.quantize import QUANTIZATIONS, QuantizationError
from transformer.metrics import score_translations
from transformer.tokenization.tokenizer import LanguageError

if TYPE_CHECKING:  # imported for real inside main(), after the arguments are checked
    from transformer.inference.translator import Translation, Translator

STDIN_CHUNK_LINES = 256  # lines translated together when reading a pipe


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description="Translate with a trained Transformer checkpoint."
    )
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
    add_decoding_arguments(parser, QUANTIZATIONS)
    parser.add_argument(
        "--tgt-lang",
        metavar="LANG",
        help="the language to translate into, for a multilingual model (e.g. fr: each line gets "
        "the >>fr<< tag; a line starting with its own >>xx<< keeps it)",
    )
    parser.add_argument("--nbest", type=int, help="translations per sentence (<= beam)")
    parser.add_argument("--ref", help="reference translations: print BLEU, chrF and TER to stderr")
    parser.add_argument(
        "--attention",
        metavar="DIR",
        help="also write DIR/00001.png, ... : the cross-attention of each (non-empty) input line's "
        "best translation (last decoder layer, heads averaged)",
    )
    parser.add_argument(
        "--errors",
        choices=("strict", "replace"),
        default="strict",
        help="input that is not valid UTF-8: stop and name the line (strict, default) or "
        "translate it with U+FFFD in place of the bad bytes (replace)",
    )
    add_sampling_and_prefix_arguments(parser)
    args = parser.parse_args(argv)
    split_checkpoints_from_sentences(args)
    check_sampling_and_prefix_arguments(parser, args)
    if args.sentences and args.input:
        parser.error("give sentences as arguments or --input, not both")
    check_positive(parser, args, "beam", "nbest", "max_batch_tokens", "threads")
    if args.nbest and args.beam and args.nbest > args.beam and not args.sample:
        parser.error("--nbest cannot exceed --beam")
    for path, what in ((args.input, "input file"), (args.ref, "reference file")):
        problem = path and unreadable_input(path, what)
        if problem:
            parser.error(problem)
    if args.engine == "ctranslate2" and (args.attention or len(args.checkpoint) > 1):
        what = (
            "--attention draws the PyTorch model's attention"
            if args.attention
            else ("an ensemble averages PyTorch models")
        )
        parser.error(f"{what}: leave out --engine ctranslate2")
    if args.attention and Path(args.attention).is_file():
        parser.error(
            f"--attention wants a directory for the pictures; {args.attention!r} is a file"
        )
    if args.output:
        problem = output_problem(Path(args.output), args.input)
        if problem:
            parser.error(problem)
    return args


def output_problem(output: Path, input_path: str | None) -> str | None:
    """Why translations could not be written to `output`, checked before any work is done."""
    if output.is_dir():
        return f"output {str(output)!r} is a directory; give a file name"
    directory = output.parent
    if not directory.is_dir():
        return f"output directory {str(directory)!r} does not exist; create it first"
    if not os.access(directory, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        return f"output {str(output)!r} is not writable (permission denied)"
    if input_path and output.exists() and output.samefile(input_path):
        return f"output {str(output)!r} is the input file; writing would destroy it"
    return None


class InputError(ValueError):
    """Input text that cannot be read; the message names the file and the line."""


# Characters that str.splitlines() treats as line ends: kept out of translations, so that the
# output has exactly one line per input line whoever reads it.
LINE_BREAKS = str.maketrans(dict.fromkeys("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029", " "))


def decode_lines(lines: Iterable[bytes], name: str, errors: str) -> Iterator[str]:
    """Lines split at b"\n" only (a trailing "\r" of CRLF files removed), decoded as UTF-8.
    With errors="strict" a bad line stops everything with its file name and line number."""
    for number, line in enumerate(lines, start=1):
        line = line.removesuffix(b"\n").removesuffix(b"\r")
        try:
            yield line.decode("utf-8", errors=errors)
        except UnicodeDecodeError as error:
            raise InputError(
                f"{name} line {number} is not valid UTF-8 (byte {line[error.start]:#04x} at "
                f"offset {error.start}); fix the file, or pass --errors replace to translate "
                "it with U+FFFD in place of the bad bytes"
            ) from None


def read_input_file(path: str, errors: str) -> list[str]:
    """All lines of `-i FILE`, decoded before the model is loaded."""
    with open(path, "rb") as file:  # a pipe or FIFO too: read once, as a stream
        data = file.read()
    lines = data.split(b"\n")
    if lines[-1] == b"":  # the file ends with a newline (or is empty)
        lines.pop()
    return list(decode_lines(lines, path, errors))


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
    problem = args.prefix_file and unreadable_input(args.prefix_file, "prefix file")
    if problem:
        parser.error(problem)


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


def input_chunks(args: argparse.Namespace, file_lines: list[str] | None) -> Iterator[list[str]]:
    if args.sentences:
        yield list(args.sentences)
    elif file_lines is not None:
        yield from chunks(file_lines, max(1, len(file_lines)))
    else:  # stdin: an interactive terminal gets each line translated as soon as it is typed
        size = 1 if sys.stdin.isatty() else STDIN_CHUNK_LINES
        raw = getattr(sys.stdin, "buffer", None)  # bytes, so that a bad byte can be named
        lines = sys.stdin if raw is None else decode_lines(raw, "<stdin>", args.errors)
        yield from chunks(lines, size)


def write_translations(results: list, out: TextIO, nbest: int, first_index: int) -> list[str]:
    best = []
    for offset, translations in enumerate(results):
        best.append(translations[0].text.translate(LINE_BREAKS))
        if nbest == 1:
            out.write(best[-1] + "\n")
        else:
            for t in translations:
                text = t.text.translate(LINE_BREAKS)
                out.write(f"{first_index + offset} ||| {text} ||| {t.score:.4f}\n")
    out.flush()
    return best


def draw_attention(
    translator: Translator,
    chunk: list[str],
    results: list[list[Translation]],
    directory: str,
    first_number: int,
    tgt_lang: str | None,
) -> None:
    """--attention: one PNG per non-empty line, named by line number (matplotlib loads only here)."""
    from transformer.inference.attention_plot import write_attention_pngs

    outputs = [translations[0].tokens for translations in results]
    write_attention_pngs(
        translator.model,
        translator.tokenizers,
        chunk,
        outputs,
        directory,
        first_number,
        translator.device,
        translator.check_target_language(tgt_lang),
    )


def build_translator(args: argparse.Namespace) -> Translator:
    """Load the checkpoint(s) and apply the command line's decoding options."""
    from transformer.device import (
        keep_freed_cpu_memory,
        reserve_search_threads,
        resolve_device,
    )
    from transformer.inference.translator import Translator, choose_beam

    threads = reserve_search_threads(args.threads)
    device = resolve_device(args.device, setting="--device")
    keep_freed_cpu_memory(device)  # each batch's search allocates the same tensors again
    members = [load_model(path, device) for path in args.checkpoint]
    nbest = args.nbest or 1
    # Sampling draws nbest times instead of searching with beams.
    beam = 1 if args.sample else choose_beam(args.beam, nbest, members[0].config.decode.beam_size)
    translator = Translator.with_options(
        members,
        device,
        names=args.checkpoint,
        beam_size=beam,
        length_penalty=args.length_penalty,
        nbest=nbest,
        batch_tokens=args.max_batch_tokens,
        sample=args.sample or None,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        quantize=args.quantize,
        engine=args.engine,
        threads=threads,
    )
    start_the_search(threads, args.engine)
    return translator


def read_prefixes(args: argparse.Namespace, file_lines: list[str] | None) -> list[str] | None:
    """The prefix file's lines, checked against the input's line count when it is known."""
    if not args.prefix_file:
        return None
    prefixes = read_input_file(args.prefix_file, args.errors)
    if args.sentences or file_lines is not None:
        count = len(args.sentences) or len(file_lines or [])
        if count != len(prefixes):
            raise ValueError(
                f"{args.prefix_file} has {len(prefixes)} lines but the input has {count}; "
                "give one prefix line (possibly empty) per input line"
            )
    return prefixes


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        import torch

        file_lines = read_input_file(args.input, args.errors) if args.input else None
        translator = build_translator(args)
        translator.check_target_language(args.tgt_lang)  # before any line is read or written
        prefixes = read_prefixes(args, file_lines)
    except (CheckpointError, ConfigError, InputError, QuantizationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    hypotheses: list[str] = []
    nbest = translator.decode_config.nbest
    try:
        with torch.inference_mode():
            for chunk in input_chunks(args, file_lines):
                chunk_prefixes = None
                if prefixes is not None:
                    chunk_prefixes = prefixes[len(hypotheses) : len(hypotheses) + len(chunk)]
                    if len(chunk_prefixes) < len(chunk):
                        print(
                            f"error: {args.prefix_file} has fewer lines than the input",
                            file=sys.stderr,
                        )
                        return USER_ERROR
                results = translator.translate(chunk, chunk_prefixes, tgt_lang=args.tgt_lang)
                first_line = len(hypotheses) + 1
                if args.attention:
                    draw_attention(
                        translator, chunk, results, args.attention, first_line, args.tgt_lang
                    )
                hypotheses += write_translations(results, out, nbest, len(hypotheses))
    except InputError as error:
        print(f"error: {error} ({len(hypotheses)} lines before it translated)", file=sys.stderr)
        return USER_ERROR
    except LanguageError as error:
        print(f"error: {error.numbered(first=len(hypotheses) + 1)}", file=sys.stderr)
        return USER_ERROR
    finally:
        if args.output:
            out.close()
    if args.ref:
        with open(args.ref, encoding="utf-8") as file:  # a pipe or FIFO too
            references = file.read().splitlines()
        if len(references) != len(hypotheses):
            print(
                f"error: {args.ref} has {len(references)} lines but the input had "
                f"{len(hypotheses)}; give one reference line per input line",
                file=sys.stderr,
            )
            return USER_ERROR
        scores = score_translations(hypotheses, references)
        print(f"BLEU {scores.bleu:.2f}  {scores.bleu_signature}", file=sys.stderr)
        print(f"chrF {scores.chrf:.2f}  {scores.chrf_signature}", file=sys.stderr)
        print(f"TER {scores.ter:.2f}  {scores.ter_signature}", file=sys.stderr)
    return 0
