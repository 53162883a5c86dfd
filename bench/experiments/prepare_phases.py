"""Where `transformer prepare` spends its time: the three phases timed one by one.

    python bench/experiments/prepare_phases.py --pairs 3000000                # this checkout
    PYTHONPATH=/tmp/before python bench/experiments/prepare_phases.py --pairs 3000000   # another checkout

On data_scale.py's synthetic corpus (--work, made by `bench/data_scale.py --sizes N` first) with
its settings (configs/multi30k_en_de.yaml: joint byte-level BPE 8k, max_length 100): sampling (one
pass over the corpus, reservoir sample), tokenizer training on the sample, and encoding + cleaning
+ writing (`prepare._encode_into`, a second pass) into a temporary directory. For each: wall
seconds, CPU seconds of the process (all threads) and the load average at its end (the machine
may be shared). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from transformer.config import load_config
from transformer.data import prepare
from transformer.data.loading import open_corpus
from transformer.data.pairs import CHUNK_PAIRS
from transformer.tokenization.tokenizer import reservoir_sample, train_tokenizers

try:  # the code after the change trains byte-level BPE from counted words
    from transformer.tokenization.bpe_trainer import train_tokenizers_by_counts as train
except ImportError:
    train = train_tokenizers


def timed(name: str, work: Callable[[], Any], rows: list[str]) -> Any:
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rows.append(f"| {name} | {wall:.1f} | {cpu:.1f} | {os.getloadavg()[0]:.2f} |")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=3_000_000)
    parser.add_argument("--work", default="/tmp/data_scale", help="data_scale.py's --work")
    args = parser.parse_args()
    corpus_dir = Path(args.work) / f"corpus-{args.pairs}"
    config = load_config(
        Path(__file__).resolve().parent.parent / "configs" / "multi30k_en_de.yaml",
        [f"data.dataset={corpus_dir}", "data.splits.validation=val", "data.splits.test=test"],
    )
    train_split = open_corpus(config.data).train
    rows: list[str] = []
    chunks = ((chunk.source, chunk.target) for chunk in train_split.chunks(CHUNK_PAIRS))
    size = config.data.tokenizer.sample_size
    sample = timed("sampling", lambda: reservoir_sample(chunks, size), rows)
    train_on_sample = partial(train, sample.source, sample.target, config.data.tokenizer)
    tokenizers = timed("tokenizer training", train_on_sample, rows)
    del sample, train_on_sample  # as prepare does: the sample is gone before encoding
    max_positions = config.model.max_positions
    with tempfile.TemporaryDirectory() as directory:
        timed(
            "encoding, cleaning, writing",
            lambda: prepare._encode_into(
                Path(directory), train_split, config.data, max_positions, tokenizers, None
            ),
            rows,
        )
    digest = hashlib.sha256("".join(tokenizers.to_json().values()).encode()).hexdigest()[:16]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\n{args.pairs:,} pairs; tokenizer.json sha256 {digest}; peak RSS {peak:.2f} GB")
    print("| phase | wall s | CPU s | load |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
