"""What the labelled attention heatmaps add to a validation: validation of a checkpoint's validation
split timed without trackers (no figures) and with TensorBoard's (train.num_samples figures drawn
and written), interleaved in one process so that machine load hits both alike.

    python bench/experiments/attention_plot_cost.py -c runs/tiny/checkpoints/best.pt --repeats 3

Uses the checkpoint's own config (data, decoding, train.num_samples). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from transformer.checkpoint import load_model
from transformer.data.prepare import prepare_data
from transformer.training.trackers import open_trackers
from transformer.training.validation import validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--checkpoint", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cpu")
    loaded = load_model(args.checkpoint, device)
    config = loaded.config
    root = Path(tempfile.gettempdir()) / "transformer-bench-prepared"  # reused by later runs
    prepared = prepare_data(config.data, config.model.max_positions, root, loaded.tokenizers)
    split, references = prepared.splits["validation"], prepared.texts["validation"].target
    times: dict[str, list[float]] = {"without figures": [], "with figures": []}
    with tempfile.TemporaryDirectory() as logdir:
        tensorboard = replace(config, train=replace(config.train, loggers=["tensorboard"]))
        trackers = open_trackers(tensorboard, Path(logdir), 0, {}, [])
        for _ in range(args.repeats):
            for name, log_to in (("without figures", None), ("with figures", trackers)):
                start = time.perf_counter()
                validate(loaded.model, split, references, loaded.tokenizers, config, device, log_to)
                times[name].append(time.perf_counter() - start)
        trackers.close()
    base = statistics.median(times["without figures"])
    print(f"\n{len(split)} validation sentences, {config.train.num_samples} figures per validation")
    print("| validation | median seconds | ratio |\n|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
