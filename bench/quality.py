"""Choose how to translate with a trained run on the validation set, then score that choice on test.

    python bench/quality.py --run runs/multi30k_en_de
    python bench/quality.py --run runs/recipe_a runs/recipe_b   # choose between runs, on val too

Candidates are the run's checkpoints (best.pt, last.pt and the average of the last k step
checkpoints) crossed with decoding settings (greedy, beam search with a few length penalties).
Every candidate translates the validation split; the one with the highest validation BLEU is the
only one that ever sees the test split, so the test score is an honest held-out figure. The data
splits are read through the run's own config (config.yaml), exactly as train.py read them. With
several runs (of one corpus), the choice between them is made on validation as well, and test is
still translated once.

Prints a table of validation BLEU, chrF and TER, then the test BLEU / chrF / TER / lowercased BLEU
with sacreBLEU's signatures, and the BLEU the Multi30k papers report (Moses-tokenized, lowercased:
`papers_bleu`; needs `pip install sacremoses`, a bench-only dependency). Asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from transformer.checkpoint import (
    LoadedModel,
    average_checkpoints,
    load_checkpoint,
    model_from_payload,
    save_checkpoint,
    step_checkpoints,
)
from transformer.config import load_config
from transformer.data.loading import load_corpus
from transformer.inference.translator import Translator
from transformer.metrics import TranslationScores, score_translations
from transformer.model import count_parameters


@dataclass
class Weights:
    description: str  # "best.pt", "average of last 3 (step_750..step_1250)", ...
    loaded: LoadedModel
    payload: dict  # the checkpoint itself, to save the chosen one


@dataclass
class Candidate:
    weights: Weights
    beam_size: int
    length_penalty: float

    @property
    def name(self) -> str:
        decoding = (
            "greedy"
            if self.beam_size == 1
            else f"beam {self.beam_size}, length penalty {self.length_penalty}"
        )
        return f"{self.weights.description}; {decoding}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, nargs="+", help="train.py run directories")
    parser.add_argument("--average", default="2,3,5", help="k values for 'average of last k'")
    parser.add_argument("--beams", default="1,5", help="beam sizes tried (1 = greedy)")
    parser.add_argument("--length-penalties", default="0.6,1.0", help="for beam sizes > 1")
    parser.add_argument("--save", help="also save the chosen checkpoint here (e.g. chosen.pt)")
    return parser.parse_args(argv)


def checkpoints(run: Path, average: list[int], prefix: str = "") -> list[Weights]:
    """best.pt, last.pt and averages of the last k step checkpoints that exist; `prefix` names the
    run when there are several."""
    directory = run / "checkpoints"
    found = []
    for name in ("best.pt", "last.pt"):
        if (directory / name).exists():
            payload = load_checkpoint(directory / name)
            loaded = model_from_payload(payload, directory / name)
            found.append(Weights(prefix + name, loaded, payload))
    steps = step_checkpoints(directory)
    for k in average:
        if 2 <= k <= len(steps):
            payload = average_checkpoints(steps[-k:])
            description = f"{prefix}average of last {k} ({steps[-k].stem}..{steps[-1].stem})"
            found.append(Weights(description, model_from_payload(payload, description), payload))
    return found


def papers_bleu(hypotheses: list[str], references: list[str], lang: str) -> float | None:
    """BLEU as the Multi30k papers compute it (Wu et al. 2021, arXiv 2105.14462; Li et al. 2022:
    multi-bleu.perl on Moses-tokenized, lowercased text), to compare with their tables: sacremoses
    tokenizes the lowercased hypotheses and references, and sacreBLEU scores those tokens as they
    are. Our own figures stay cased sacreBLEU (13a) on detokenized text. None without sacremoses."""
    try:
        from sacremoses import MosesTokenizer
    except ImportError:
        return None
    from sacrebleu.metrics import BLEU

    moses = MosesTokenizer(lang=lang)

    def tokenized(line: str) -> str:
        return moses.tokenize(line.lower(), escape=False, return_str=True)

    bleu = BLEU(tokenize="none", force=True)
    return bleu.corpus_score(
        [tokenized(h) for h in hypotheses], [[tokenized(r) for r in references]]
    ).score


def translate_and_score(
    candidate: Candidate, sources: list[str], references: list[str]
) -> tuple[TranslationScores, float, list[str]]:
    translator = Translator.with_options(
        candidate.weights.loaded,
        torch.device("cpu"),
        beam_size=candidate.beam_size,
        length_penalty=candidate.length_penalty,
        nbest=1,
    )
    start = time.perf_counter()
    hypotheses = [nbest[0].text for nbest in translator.translate(sources)]
    return score_translations(hypotheses, references), time.perf_counter() - start, hypotheses


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [Path(run) for run in args.run]
    for run in runs:
        if not (run / "config.yaml").exists():
            print(f"error: {run} is not a train.py run directory (no config.yaml)", file=sys.stderr)
            return 2
    config = load_config(runs[0] / "config.yaml")
    for run in runs[1:]:
        if load_config(run / "config.yaml").data.splits != config.data.splits:
            print(f"error: {run} was validated on other splits than {runs[0]}", file=sys.stderr)
            return 2
    corpus = load_corpus(config.data)
    validation, test = corpus["validation"], corpus["test"]
    average = [int(k) for k in args.average.split(",")]
    all_weights = [
        weights
        for run in runs
        for weights in checkpoints(run, average, prefix=f"{run.name}: " if len(runs) > 1 else "")
    ]
    candidates = []
    for weights in all_weights:
        for beam in (int(b) for b in args.beams.split(",")):
            penalties = [float(a) for a in args.length_penalties.split(",")] if beam > 1 else [1.0]
            candidates.extend(Candidate(weights, beam, a) for a in penalties)

    names = ", ".join(map(str, runs))
    print(f"runs {names}; {len(validation)} validation and {len(test)} test sentences")
    print(f"{'candidate':<96} {'val BLEU':>8} {'chrF':>6} {'TER':>6} {'seconds':>7}")
    best: tuple[float, Candidate] | None = None
    for candidate in candidates:
        scores, seconds, _ = translate_and_score(candidate, validation.source, validation.target)
        print(
            f"{candidate.name:<96} {scores.bleu:>8.2f} {scores.chrf:>6.2f} {scores.ter:>6.2f} "
            f"{seconds:>7.1f}"
        )
        if best is None or scores.bleu > best[0]:
            best = (scores.bleu, candidate)
    assert best is not None, "the run has no checkpoints"
    chosen = best[1]
    scores, seconds, hypotheses = translate_and_score(chosen, test.source, test.target)
    parameters = count_parameters(chosen.weights.loaded.model)
    print(f"\nchosen on validation: {chosen.name} (val BLEU {best[0]:.2f})")
    print(f"test ({config.data.splits.test}): {scores.summary()}; {seconds:.1f} s to translate")
    papers = papers_bleu(hypotheses, test.target, config.data.tgt_lang)
    if papers is None:
        print("the papers' BLEU (tokenized, lowercased): pip install sacremoses to print it")
    else:
        print(f"the papers' BLEU (Moses-tokenized, lowercased, multi-bleu style): {papers:.2f}")
    print(f"parameters {parameters:,}")
    print(f"BLEU signature: {scores.bleu_signature}")
    print(f"chrF signature: {scores.chrf_signature}")
    print(f"TER signature: {scores.ter_signature}")
    if args.save:
        save_checkpoint(chosen.weights.payload, args.save)
        print(f"saved the chosen weights to {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
