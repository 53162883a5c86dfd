"""Decoding speed and test BLEU of a trained checkpoint: cached greedy and beam search, batched and
one sentence at a time, against the tutorial's naive full-recompute greedy decoding.

    python bench/experiments/decode_speed.py -c runs/multi30k_en_de/checkpoints/best.pt \\
        --source ../shared/data/multi30k/test_2016_flickr.en.gz \\
        --reference ../shared/data/multi30k/test_2016_flickr.de.gz --batch1-limit 200

Batched modes decode every sentence (and are scored with sacreBLEU); batch-1 modes decode the first
`--batch1-limit` sentences, since one at a time is slow. Output tokens count every generated
subword token including the final EOS. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from transformer.checkpoint import load_model
from transformer.inference.decoding import (
    Hypothesis,
    SearchSettings,
    beam_search,
    greedy_search,
    translate_ids,
)
from transformer.metrics import score_translations
from transformer.model import Transformer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))  # bench/experiments/ -> root
from reference_search import naive_greedy_search  # noqa: E402  (tools/ is not a package)


def read_lines(path: str) -> list[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as file:
        return [line.rstrip("\n") for line in file]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--checkpoint", required=True)
    parser.add_argument("--source", required=True, help="source sentences (.gz or plain)")
    parser.add_argument("--reference", required=True, help="reference translations")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch-tokens", type=int, default=4096, help="batched modes' budget")
    parser.add_argument("--batch1-limit", type=int, default=200, help="sentences for batch-1 modes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser.parse_args(argv)


def one_at_a_time(
    search: Callable[..., list],
    model: Transformer,
    sources: list[torch.Tensor],
    settings: SearchSettings,
    **options: object,
) -> list[Hypothesis]:
    """Decode each sentence alone (batch 1), as an interactive user would."""
    results = []
    for source in sources:
        output = search(model, source[None], settings, **options)[0]
        results.append(output[0] if isinstance(output, list) else output)  # beam: n-best list
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.checkpoint)
    model, tokenizers, decode = loaded.model, loaded.tokenizers, loaded.config.decode
    sources_text, references = read_lines(args.source), read_lines(args.reference)
    max_positions = loaded.config.model.max_positions
    sources = [torch.tensor(ids[:max_positions]) for ids in tokenizers.encode_source(sources_text)]
    few = sources[: args.batch1_limit]
    settings = SearchSettings.from_config(decode)
    greedy_config = replace(decode, beam_size=1, nbest=1, batch_tokens=args.batch_tokens)
    beam_config = replace(greedy_config, beam_size=args.beam)
    device = torch.device("cpu")

    modes: list[tuple[str, int, Callable[[], list[Hypothesis]]]] = [
        (
            "greedy, batched",
            len(sources),
            lambda: [h[0] for h in translate_ids(model, sources, greedy_config, device)],
        ),
        (
            f"beam {args.beam}, batched",
            len(sources),
            lambda: [h[0] for h in translate_ids(model, sources, beam_config, device)],
        ),
        ("greedy, batch 1", len(few), lambda: one_at_a_time(greedy_search, model, few, settings)),
        (
            f"beam {args.beam}, batch 1",
            len(few),
            lambda: one_at_a_time(beam_search, model, few, settings, beam_size=args.beam),
        ),
        (
            "naive greedy (no cache), batch 1",
            len(few),
            lambda: one_at_a_time(naive_greedy_search, model, few, settings),
        ),
    ]
    print(f"checkpoint {args.checkpoint} (step {loaded.step}), {torch.get_num_threads()} threads")
    print(f"{'mode':<34} {'sents':>6} {'seconds':>8} {'sent/s':>8} {'tok/s':>8} {'BLEU':>6}")
    for name, count, run in modes:
        start = time.perf_counter()
        hypotheses = run()
        seconds = time.perf_counter() - start
        tokens = sum(len(h.tokens) + 1 for h in hypotheses)
        bleu = ""
        if count == len(sources):
            texts = tokenizers.decode_target([h.tokens for h in hypotheses])
            bleu = f"{score_translations(texts, references).bleu:.2f}"
        print(
            f"{name:<34} {count:>6} {seconds:>8.1f} {count / seconds:>8.1f} "
            f"{tokens / seconds:>8.0f} {bleu:>6}"
        )
    print(f"BLEU: {score_translations(['x'], ['x']).bleu_signature} (test_2016_flickr)")


if __name__ == "__main__":
    main()
