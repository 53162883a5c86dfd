"""translate.py against CTranslate2 on a whole test set, timed from command start to last line.

    pip install ctranslate2                                   # the [export] extra
    python bench/translate_vs_ctranslate2.py -c runs/multi30k_en_de/checkpoints/best.pt
    python bench/translate_vs_ctranslate2.py -c best.pt --beam 1 --data ../shared/data/multi30k
    python bench/translate_vs_ctranslate2.py -c best.pt --one-at-a-time --sentences 200

Six commands translate the same source file (Multi30k test_2016_flickr English, 1,000 sentences or
the first --sentences) with beam search, each in a fresh process, and the wall time of each command
is what a user waits for: interpreter start, imports, loading the model, tokenizing, decoding,
writing the output.
- project torch fp32 / int8: `python translate.py -c CKPT -i SRC -o OUT --beam K [--quantize int8]`,
  the PyTorch search;
- project ctranslate2 fp32 / int8: the same command with `--engine ctranslate2` (its export beside
  the checkpoint made by an untimed first run);
- ctranslate2 float32 / int8: CTranslate2 alone, as a user would write it: this script's
  `ct2-translate` command on the checkpoint exported with `transformer export ctranslate2`, loaded
  with compute_type float32 or int8, tokenized with the exported tokenizer.json, one
  `translate_batch` call over the whole file (CTranslate2 sorts and batches it, 4,096 tokens a
  batch), no torch in the process.
--one-at-a-time decodes one sentence per batch everywhere (`--max-batch-tokens 1`; CTranslate2:
max_batch_size 1), as a server does for a lone client. The same beams, length-penalty exponent (the
checkpoint's; CTranslate2 divides by length ** alpha where the project uses GNMT's ((5 + length) /
6) ** alpha) and threads for every command; CTranslate2 alone stops at its default 256 tokens where
the project stops at a * source length + b (a trained model ends long before either). The commands
run in turn, --repeats times, and each keeps its best time (a shared machine slows some runs); each
also runs on an empty file (its startup: imports, loading the model), and "decoding s" is the
difference, the work that grows with the input. Each output is scored with sacreBLEU against the
reference. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
import time
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
    worker.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="default: its cores"
    )
    worker.add_argument("--one-at-a-time", action="store_true")

    parser.add_argument("-c", "--checkpoint", help="a .pt file written by train.py")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--src-lang", default="en")
    parser.add_argument("--tgt-lang", default="de")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sentences", type=int, help="the first N of the split (default: all)")
    parser.add_argument(
        "--one-at-a-time", action="store_true", help="one sentence per batch in every command"
    )
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
    results = translator.translate_batch(
        tokens,
        beam_size=args.beam,
        length_penalty=args.length_penalty,
        max_batch_size=1 if args.one_at_a_time else 4096 // args.beam,
        batch_type="examples" if args.one_at_a_time else "tokens",
    )
    outputs = [result.hypotheses[0] for result in results]
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
    lines = read_lines(find_split(Path(args.data), args.split, args.src_lang))[: args.sentences]
    source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    references = read_lines(find_split(Path(args.data), args.split, args.tgt_lang))
    references = references[: len(lines)]
    checkpoint = directory / Path(args.checkpoint).name  # the engine exports beside its copy
    shutil.copy(args.checkpoint, checkpoint)
    for quantization in ("float32", "int8"):
        export_ctranslate2(args.checkpoint, directory / f"ct2_{quantization}", quantization)

    python, beam = sys.executable, str(args.beam)
    worker_options = ["--beam", beam, "--threads", str(args.threads)]
    worker_options += ["--length-penalty", str(decode.length_penalty)]
    one_at_a_time = ["--one-at-a-time"] if args.one_at_a_time else []
    worker_options += one_at_a_time
    project_options = ["--threads", str(args.threads), "--beam", beam]
    project_options += ["--max-batch-tokens", "1"] if args.one_at_a_time else []

    def project(input_file: Path, output: Path, *options: str) -> list[str]:
        command = [python, "translate.py", "-c", str(checkpoint), "-i", str(input_file)]
        return command + ["-o", str(output), *project_options, *options]

    def alone(input_file: Path, output: Path, quantization: str) -> list[str]:
        model_dir = str(directory / f"ct2_{quantization}")
        command = [python, str(Path(__file__).resolve()), "ct2-translate", model_dir]
        return (
            command
            + [str(input_file), str(output), "--compute-type", quantization]
            + (worker_options)
        )

    engine = ("--engine", "ctranslate2")
    int8 = ("--quantize", "int8")
    commands = {  # (command, weights) -> (input, output) -> the command; run in this order
        ("project torch", "fp32"): lambda i, o: project(i, o),
        ("project ct2", "fp32"): lambda i, o: project(i, o, *engine),
        ("ctranslate2", "fp32"): lambda i, o: alone(i, o, "float32"),
        ("project torch", "int8"): lambda i, o: project(i, o, *int8),
        ("project ct2", "int8"): lambda i, o: project(i, o, *engine, *int8),
        ("ctranslate2", "int8"): lambda i, o: alone(i, o, "int8"),
    }
    outputs = {key: directory / f"{'_'.join(key).replace(' ', '_')}.txt" for key in commands}
    empty = directory / "empty.txt"  # startup alone: imports and loading the model
    empty.write_text("", encoding="utf-8")
    timed(project(empty, directory / "export.txt", *engine))  # the engine's export, made once
    seconds: dict[tuple[str, str], float] = {}
    startup: dict[tuple[str, str], float] = {}
    for _ in range(args.repeats):  # best of N: the machine may be shared
        for key, command in commands.items():
            took = timed(command(source, outputs[key]))
            seconds[key] = min(seconds.get(key, float("inf")), took)
            took = timed(command(empty, directory / "nothing.txt"))
            startup[key] = min(startup.get(key, float("inf")), took)
    batching = "one sentence a batch" if args.one_at_a_time else "batched"
    print(
        f"{len(lines)} sentences of {args.split}, beam {args.beam}, {batching}, {args.threads} "
        f"threads; torch {torch.__version__}, ctranslate2 {ctranslate2.__version__}"
    )
    header = (
        f"{'command':<13} {'weights':<7} {'seconds':>8} {'sent/s':>7} {'BLEU':>6} "
        f"{'vs ctranslate2':>14} {'startup s':>9} {'decoding s':>10} {'vs ct2':>7}"
    )
    print(header)
    print("-" * len(header))
    for (name, weights), output in outputs.items():
        hypotheses = output.read_text(encoding="utf-8").splitlines()
        bleu = score_translations(hypotheses, references)
        took, started = seconds[(name, weights)], startup[(name, weights)]
        decoding = max(took - started, 1e-3)
        decoding_alone = max(
            seconds["ctranslate2", weights] - startup["ctranslate2", weights], 1e-3
        )
        print(
            f"{name:<13} {weights:<7} {took:>8.2f} {len(lines) / took:>7.1f} {bleu.bleu:>6.2f} "
            f"{seconds['ctranslate2', weights] / took:>13.2f}x {started:>9.2f} {decoding:>10.2f} "
            f"{decoding_alone / decoding:>6.2f}x"
        )
    print(f"outputs in {directory}")


if __name__ == "__main__":
    main()
