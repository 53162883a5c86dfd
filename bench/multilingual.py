"""Per-direction test BLEU of a multilingual model beside bilingual ones, and its zero-shot
directions with the language its outputs are in.

    python bench/multilingual.py --data path/to/multi30k \\
        --multilingual runs/ml60/checkpoints/best.pt \\
        --bilingual en-de=runs/ende60/checkpoints/best.pt en-fr=runs/enfr60/checkpoints/best.pt \\
        --zero-shot de-fr fr-cs

Every model translates `--split` (default test_2016_flickr, read as {split}.{lang}[.gz] from
`--data`) with the same decoding (`--beam`, `--length-penalty`); the multilingual model is asked
for each direction with its target-language tag (Translator.translate's tgt_lang), a bilingual one
translates its own direction. Scores are sacreBLEU's (cased BLEU, chrF), as in training.

Output language of the zero-shot directions: each output sentence is given the language whose
training vocabulary (`{train}.{lang}` words seen at least 3 times, minus the words every language
shares, such as numbers and names) covers most of its words; the table gives the share of outputs
in the asked language and in the one that dominates otherwise. A simple check, not a language-id
model: it tells "answered in French" from "copied the German" or "fell back to English".
Asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections import Counter
from pathlib import Path

import torch

from transformer.checkpoint import load_checkpoint, load_model
from transformer.config import config_from_dict
from transformer.inference.translator import Translator
from transformer.metrics import score_translations


def read_lines(directory: Path, split: str, lang: str) -> list[str]:
    for name in (f"{split}.{lang}.gz", f"{split}.{lang}"):
        path = directory / name
        if path.is_file():
            opener = gzip.open if name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as file:
                return [line.rstrip("\n") for line in file]
    raise SystemExit(f"error: no {split}.{lang}[.gz] in {directory}")


def words(sentence: str) -> list[str]:
    return [w.strip(".,;:!?\"'()").lower() for w in sentence.split() if w.strip(".,;:!?\"'()")]


def language_vocabularies(directory: Path, split: str, languages: list[str]) -> dict[str, set[str]]:
    """Words seen at least 3 times in each language's training text, minus those of every language."""
    counts = {
        lang: Counter(w for line in read_lines(directory, split, lang) for w in words(line))
        for lang in languages
    }
    vocab = {lang: {w for w, n in count.items() if n >= 3} for lang, count in counts.items()}
    shared = set.intersection(*vocab.values())
    return {lang: words_of - shared for lang, words_of in vocab.items()}


def guess_language(sentence: str, vocabularies: dict[str, set[str]]) -> str:
    hits = {lang: sum(w in vocab for w in words(sentence)) for lang, vocab in vocabularies.items()}
    best = max(hits, key=hits.__getitem__)
    return best if hits[best] > 0 else "?"


def translate_direction(
    translator: Translator, sources: list[str], tgt_lang: str | None, batch: int = 256
) -> list[str]:
    outputs = []
    for start in range(0, len(sources), batch):
        chunk = sources[start : start + batch]
        outputs += [nbest[0].text for nbest in translator.translate(chunk, tgt_lang=tgt_lang)]
    return outputs


def load_translator(path: str, args: argparse.Namespace) -> Translator:
    return Translator.with_options(
        load_model(path),
        torch.device("cpu"),
        beam_size=args.beam,
        nbest=1,
        length_penalty=args.length_penalty,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="directory of {split}.{lang}[.gz]")
    parser.add_argument("--multilingual", required=True, help="the multilingual checkpoint")
    parser.add_argument("--bilingual", nargs="*", default=[], help="DIRECTION=CHECKPOINT ...")
    parser.add_argument("--zero-shot", nargs="*", default=[], help="directions never trained")
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--train-split", default="train", help="for the language check")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="first N sentences only (0 = all)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    multilingual = load_translator(args.multilingual, args)
    trained = [f"{s}-{t}" for s, t in multilingual_directions(args.multilingual)]
    bilingual = dict(item.split("=", 1) for item in args.bilingual)

    def texts(direction: str) -> tuple[list[str], list[str]]:
        src, tgt = direction.split("-")
        sources = read_lines(args.data, args.split, src)
        references = read_lines(args.data, args.split, tgt)
        n = args.limit or len(sources)
        return sources[:n], references[:n]

    print(
        f"{args.split}, beam {args.beam}, length penalty {args.length_penalty}; cased BLEU / chrF\n"
    )
    print("| direction | multilingual BLEU | chrF | bilingual BLEU | chrF | difference |")
    print("|---|---|---|---|---|---|")
    for direction in trained:
        sources, references = texts(direction)
        tgt = direction.split("-")[1]
        scores = score_translations(translate_direction(multilingual, sources, tgt), references)
        row = f"| {direction} | {scores.bleu:.2f} | {scores.chrf:.2f} |"
        if direction in bilingual:
            alone = load_translator(bilingual[direction], args)
            single = score_translations(translate_direction(alone, sources, None), references)
            row += f" {single.bleu:.2f} | {single.chrf:.2f} | {scores.bleu - single.bleu:+.2f} |"
        else:
            row += " | | |"
        print(row, flush=True)

    if args.zero_shot:
        languages = sorted({lang for d in trained + args.zero_shot for lang in d.split("-")})
        vocabularies = language_vocabularies(args.data, args.train_split, languages)
        print("\nzero-shot (never trained):\n")
        print("| direction | BLEU | chrF | outputs in the target language | otherwise mostly |")
        print("|---|---|---|---|---|")
        for direction in args.zero_shot:
            sources, references = texts(direction)
            tgt = direction.split("-")[1]
            if tgt not in multilingual.tokenizers.language_tags:
                print(f"| {direction} | {tgt} is not a target language of this model | | | |")
                continue
            outputs = translate_direction(multilingual, sources, tgt)
            scores = score_translations(outputs, references)
            guessed = Counter(guess_language(output, vocabularies) for output in outputs)
            share = guessed[tgt] / len(outputs)
            others = [(lang, n) for lang, n in guessed.most_common() if lang != tgt]
            other = f"{others[0][0]} ({others[0][1] / len(outputs):.0%})" if others else "-"
            print(
                f"| {direction} | {scores.bleu:.2f} | {scores.chrf:.2f} | {share:.0%} | {other} |"
            )
    return 0


def multilingual_directions(path: str) -> list[tuple[str, str]]:
    return config_from_dict(load_checkpoint(path)["config"]).data.directions()


if __name__ == "__main__":
    sys.exit(main())
