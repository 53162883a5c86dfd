"""What the divergence guard costs per training step: interleaved A/B/C in one process.

    python bench/experiments/guard_cost.py                        # configs/multi30k_en_de.yaml on Multi30k
    python bench/experiments/guard_cost.py --config configs/tiny.yaml --data configs/data/numbers --splits train val test

Three copies of the same run (same config, same initialisation, same batches) take turns, a block
of `--block` optimiser steps each, `--rounds` times:
- before:  the step as it was before the guard: torch's default AdamW (on CPU the per-tensor
           loop), no flag;
- fused:   fused AdamW, still no flag (what switching the optimiser alone does);
- guarded: `loop.train_step` as shipped: fused AdamW told by the guard's on-device flag to
           skip non-finite steps, counters on the device, no host sync.
Step time = wall time of a block / its steps (each block ends with a sync). Prints the median step
time of each and the median over rounds of the per-round ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from transformer.config import load_config
from transformer.training import loop
from transformer.training.run import TrainingRun
from transformer.training.schedule import make_scheduler
from transformer.training.start import start_run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/multi30k_en_de.yaml")
    parser.add_argument("--data", default="../shared/data/multi30k")
    parser.add_argument("--splits", nargs=3, default=["train", "val", "test_2016_flickr"])
    parser.add_argument("--max-tokens", type=int, default=2048, help="tokens per batch")
    parser.add_argument("--block", type=int, default=5, help="steps per block")
    parser.add_argument("--rounds", type=int, default=6, help="blocks of each variant")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser.parse_args()


def make_run(args: argparse.Namespace, run_dir: Path) -> TrainingRun:
    train_split, validation, test = args.splits
    overrides = [
        f"data.dataset={args.data}",
        f"data.splits.train={train_split}",
        f"data.splits.validation={validation}",
        f"data.splits.test={test}",
        f"data.max_tokens={args.max_tokens}",
        f"train.run_dir={run_dir}",
        "train.device=cpu",
        f"train.threads={args.threads}",
    ]
    return start_run(load_config(args.config, overrides))


def unguarded_step(run: TrainingRun, batches: list) -> None:
    """train_step with the guard taken out: no flag, a plain optimiser step."""
    guard_flag, skip_step = run.guard.bad_step_flag, loop.step_unless_bad
    run.guard.bad_step_flag = lambda loss, norm, tokens: None  # type: ignore[method-assign]
    loop.step_unless_bad = lambda optimizer, scaler, bad: scaler.step(optimizer)
    try:
        loop.train_step(run, batches)
    finally:
        run.guard.bad_step_flag = guard_flag  # type: ignore[method-assign]
        loop.step_unless_bad = skip_step


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs = {
            name: make_run(args, Path(scratch) / name) for name in ("before", "fused", "guarded")
        }
    before = runs["before"]
    implementation = ("fused", "foreach")  # left to torch's default, as before the guard
    groups = [
        {key: value for key, value in group.items() if key not in implementation}
        for group in before.optimizer.param_groups
    ]
    before.optimizer = torch.optim.AdamW(groups)
    before.scheduler = make_scheduler(before.optimizer, before.config.train, before.step_plan)
    steps: dict[str, Callable[[TrainingRun, list], object]] = {
        "before": unguarded_step,
        "fused": unguarded_step,
        "guarded": loop.train_step,
    }
    epoch = list(itertools.islice(loop.optimizer_steps(before), len(before.sampler)))
    batches = [epoch[index % len(epoch)] for index in range(args.block * args.rounds)]
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(args.rounds + 1):  # round 0 warms up and is not counted
        block = batches[(round_index % args.rounds) * args.block :][: args.block]
        for name, run in runs.items():
            start = time.perf_counter()
            for step_batches in block:
                steps[name](run, step_batches)
            if run.device.type == "cuda":
                torch.cuda.synchronize()
            if round_index:
                times[name].append((time.perf_counter() - start) / len(block))
    config = before.config
    print(
        f"{config.model.d_model} d_model, {config.model.n_encoder_layers}+"
        f"{config.model.n_decoder_layers} layers, {args.max_tokens} tokens per batch, "
        f"{torch.get_num_threads()} threads; {args.rounds} rounds of {args.block} steps each"
    )
    for name, values in times.items():
        print(f"{name:>8}: {1000 * statistics.median(values):8.1f} ms/step (median of blocks)")
    # Ratios within each round (the three blocks ran back to back), then their median: robust to
    # the load of other processes drifting between rounds.
    for label, (a, b) in {
        "guarded / before": ("guarded", "before"),
        "guarded / fused": ("guarded", "fused"),
    }.items():
        ratios = sorted(x / y for x, y in zip(times[a], times[b], strict=True))
        print(
            f"{label}: median {statistics.median(ratios):.3f} "
            f"(rounds: min {ratios[0]:.3f}, max {ratios[-1]:.3f})"
        )


if __name__ == "__main__":
    main()
