"""What `train.precision: auto` measures at start-up, what it costs, and whether it agrees with
longer training steps.

    flock /tmp/bench.lock env PYTHONPATH=$PWD python bench/experiments/precision_probe.py

Builds the recipe's model (configs/multi30k_en_de.yaml) on Multi30k en->de as train.py does, then:
1. runs the start-up probe (`transformer/training/precision.py`: a forward and backward pass of
   the model on a few batches of `PROBE_TOKENS` real training tokens in bf16 and fp32, alternating)
   `--probes` times, and prints its wall time, the seconds it measured and the precision it chose;
2. as a reference, times `--steps` forward and backward passes per precision on full batches of
   data.max_tokens (alternating bf16 and fp32 step by step, after one warm-up step each) and
   prints target tokens/s, so the probe's verdict can be checked against the recipe's own batch
   size. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from transformer.training.precision import PROBE_TOKENS, step_loss_sum, time_training_steps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/: peers.py
from peers import recipe_model_and_batches  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--probes", type=int, default=3, help="times the start-up probe is run")
    parser.add_argument("--steps", type=int, default=6, help="full-size reference steps each")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    config, model, train, batches = recipe_model_and_batches(args.steps + 1)
    device = torch.device("cpu")

    print(f"{torch.get_num_threads()} threads; probe batches of {PROBE_TOKENS} tokens")
    print(f"{'probe':>5} {'wall s':>7} {'bf16 s':>7} {'fp32 s':>7} {'fp32/bf16':>9}  choice")
    for probe in range(1, args.probes + 1):
        start = time.perf_counter()
        seconds = time_training_steps(model, train, config, device, ["bf16", "fp32"])
        wall = time.perf_counter() - start
        ratio = seconds["fp32"] / seconds["bf16"]
        choice = min(seconds, key=seconds.__getitem__)
        print(
            f"{probe:>5} {wall:>7.2f} {seconds['bf16']:>7.3f} {seconds['fp32']:>7.3f} "
            f"{ratio:>9.2f}  {choice}"
        )

    times: dict[str, list[float]] = {"bf16": [], "fp32": []}
    tokens: dict[str, int] = {"bf16": 0, "fp32": 0}
    model.train()
    for index, batch in enumerate(batches):
        for precision in ("bf16", "fp32"):
            start = time.perf_counter()
            step_loss_sum(model, batch, device, precision, 0.1).backward()
            model.zero_grad(set_to_none=True)
            if index:  # the first batch warms up
                times[precision].append(time.perf_counter() - start)
                tokens[precision] += batch.n_tgt_tokens
    speed = {p: tokens[p] / sum(times[p]) for p in times}
    print(
        f"\nreference: {args.steps} forward+backward steps each of <= {config.data.max_tokens} "
        f"tokens: bf16 {speed['bf16']:,.0f} tgt tok/s (median step "
        f"{statistics.median(times['bf16']):.3f} s), fp32 {speed['fp32']:,.0f} tgt tok/s "
        f"({statistics.median(times['fp32']):.3f} s): bf16/fp32 {speed['bf16'] / speed['fp32']:.2f}x"
    )


if __name__ == "__main__":
    main()
