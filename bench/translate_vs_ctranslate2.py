"""translate.py against CTranslate2 on a whole test set, timed from command start to last line.

    pip install ctranslate2                                   # the [export] extra
    python bench/translate_vs_ctranslate2.py -c runs/multi30k_en_de/checkpoints/best.pt
    python bench/translate_vs_ctranslate2.py -c best.pt --beam 1 --data ../shared/data/multi30k

Four commands translate the same source file (Multi30k test_2016_flickr English, 1,000 sentences)
with beam search, each in a fresh process, and the wall time of each command is what a user waits
for: interpreter start, imports, loading the model, tokenizing, decoding, writing the output.
- project fp32 / int8: `python translate.py -c CKPT -i SRC -o OUT --beam K [--quantize int8]`;
- ctranslate2 float32 / int8: this script's `ct2-translate` command on the checkpoint exported with
  `transformer export ctranslate2` (exported once beforehand, not timed), loaded with
  compute_type float32 or int8, tokenized with the exported tokenizer.json.
The work is kept the same: the same beams, the same length-penalty exponent (the checkpoint's;
CTranslate2 divides by length ** alpha where the project uses GNMT's ((5 + length) / 6) ** alpha),
and the project's output limit of int(a * source length + b) tokens, which CTranslate2 gets by
translating the sentences of each source length in one call with that limit. Both engines use the
same number of threads. The four commands run in turn, --repeats times, and each keeps its best
time (a shared machine slows some runs). Each output is scored with sacreBLEU against the
reference. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command")
    worker = commands.add_parser("ct2-translate", help="translate a file with an exported model")
    worker.add_argument("model_dir")
    worker.add_argument("input")
    worker.add_argument("output")
    worker.add_argument("--compute-type", default="float32")
    worker.add_argument("--beam", type=int, default=5)
    worker.add_argument("--length-penalty", type=float, default=1.0)
    worker.add_argument("--max-len-a", type=float, default=1.2)
    worker.add_argument("--max-len-b", type=int, default=10)
    worker.add_argument("--threads", type=int, default=os.cpu_count() or 1)

    parser.add_argument("-c", "--checkpoint", help="a .pt file written by train.py")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--src-lang", default="en")
    parser.add_argument("--tgt-lang", default="de")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each command; best kept")
    args = parser.parse_args(argv)
    if args.command is None and not args.checkpoint:
        parser.error("give --checkpoint (or the ct2-translate command)")
    return args


# --- the CTranslate2 side, as a user would write it ---------------------------------------------


def ct2_translate(args: argparse.Namespace) -> None:
    """Tokenize, translate and detokenize a file with an exported model directory."""
    import ctranslate2
    from tokenizers import Tokenizer

    model_dir = Path(args.model_dir)
    joint = model_dir / "tokenizer.json"
    source = Tokenizer.from_file(str(joint if joint.exists() else model_dir / "source.json"))
    target = Tokenizer.from_file(str(joint if joint.exists() else model_dir / "target.json"))
    source.encode_special_tokens = True  # as the project does: "</s>" in text is just text
    lines = Path(args.input).read_text(encoding="utf-8").splitlines()
    tokens = [e.tokens for e in source.encode_batch(lines, add_special_tokens=False)]
    translator = ctranslate2.Translator(
        str(model_dir), device="cpu", compute_type=args.compute_type, intra_threads=args.threads
    )
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, sentence in enumerate(tokens):
        by_length[len(sentence)].append(i)
    outputs: list[list[str]] = [[] for _ in lines]
    for length, indices in by_length.items():
        limit = int(args.max_len_a * length + args.max_len_b)  # tokens before the EOS
        results = translator.translate_batch(
            [tokens[i] for i in indices],
            beam_size=args.beam,
            length_penalty=args.length_penalty,
            max_decoding_length=limit + 1,
            max_batch_size=4096 // args.beam,
            batch_type="tokens",
        )
        for i, result in zip(indices, results, strict=True):
            outputs[i] = result.hypotheses[0]
    texts = target.decode_batch([[target.token_to_id(t) for t in output] for output in outputs])
    Path(args.output).write_text("".join(text + "\n" for text in texts), encoding="utf-8")


# --- timing both -----------------------------------------------------------------------------------


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as file:
        return file.read().splitlines()


def find_split(data: Path, split: str, lang: str) -> Path:
    for candidate in (data / f"{split}.{lang}", data / f"{split}.{lang}.gz"):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"error: no {split}.{lang}[.gz] in {data}")


def timed(command: list[str]) -> float:
    """Wall seconds from starting the command to its exit (its last line written)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "ct2-translate":
        ct2_translate(args)
        return
    import ctranslate2
    import torch

    from transformer.checkpoint import load_model
    from transformer.inference.export import export_ctranslate2
    from transformer.metrics import score_translations

    decode = load_model(args.checkpoint).config.decode
    directory = Path(tempfile.mkdtemp(prefix="translate_vs_ct2_"))
    source = directory / "source.txt"
    lines = read_lines(find_split(Path(args.data), args.split, args.src_lang))
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    references = read_lines(find_split(Path(args.data), args.split, args.tgt_lang))
    for quantization in ("float32", "int8"):
        export_ctranslate2(args.checkpoint, directory / f"ct2_{quantization}", quantization)

    python, beam = sys.executable, str(args.beam)
    worker_options = ["--beam", beam, "--threads", str(args.threads)]
    worker_options += ["--length-penalty", str(decode.length_penalty)]
    worker_options += ["--max-len-a", str(decode.max_len_a), "--max-len-b", str(decode.max_len_b)]

    def project(output: Path, *options: str) -> list[str]:
        return [
            python,
            "translate.py",
            "-c",
            args.checkpoint,
            "-i",
            str(source),
            "-o",
            str(output),
        ] + ["--beam", beam, *options]

    def ctranslate2_command(output: Path, quantization: str) -> list[str]:
        model_dir = str(directory / f"ct2_{quantization}")
        return [python, str(Path(__file__).resolve()), "ct2-translate", model_dir, str(source)] + [
            str(output),
            "--compute-type",
            quantization,
            *worker_options,
        ]

    runs = {  # (engine, weights) -> the command and the file it writes; engines alternate
        ("project", "fp32"): (project(directory / "project_fp32.txt"), "project_fp32.txt"),
        ("ctranslate2", "fp32"): (
            ctranslate2_command(directory / "ct2_fp32.txt", "float32"),
            "ct2_fp32.txt",
        ),
        ("project", "int8"): (
            project(directory / "project_int8.txt", "--quantize", "int8"),
            "project_int8.txt",
        ),
        ("ctranslate2", "int8"): (
            ctranslate2_command(directory / "ct2_int8.txt", "int8"),
            "ct2_int8.txt",
        ),
    }
    seconds: dict[tuple[str, str], float] = {}
    for _ in range(args.repeats):  # best of N: the machine may be shared
        for key, (command, _output) in runs.items():
            seconds[key] = min(seconds.get(key, float("inf")), timed(command))
    print(
        f"{len(lines)} sentences of {args.split}, beam {args.beam}, {args.threads} threads; "
        f"torch {torch.__version__}, ctranslate2 {ctranslate2.__version__}"
    )
    header = (
        f"{'engine':<12} {'weights':<7} {'seconds':>8} {'sent/s':>7} {'BLEU':>6} {'vs project':>10}"
    )
    print(header)
    print("-" * len(header))
    for (engine, weights), (_command, output) in runs.items():
        hypotheses = (directory / output).read_text(encoding="utf-8").splitlines()
        bleu = score_translations(hypotheses, references).bleu
        took = seconds[(engine, weights)]
        print(
            f"{engine:<12} {weights:<7} {took:>8.2f} {len(lines) / took:>7.1f} {bleu:>6.2f} "
            f"{seconds[('project', weights)] / took:>9.2f}x"
        )
    print(f"outputs in {directory}")


if __name__ == "__main__":
    main()
