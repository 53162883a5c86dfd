"""torch.profiler table of training steps of the recipe's model: where a step's CPU time goes.

    flock /tmp/bench.lock env PYTHONPATH=$PWD python bench/experiments/train_profile.py --precision bf16

Builds the recipe (configs/multi30k_en_de.yaml) on Multi30k en->de as train.py does, takes real
token batches of data.max_tokens, runs `--warmup` untimed steps and then profiles `--steps` steps
(forward under autocast, the project's loss, backward, fused AdamW), and prints the operators by
their own CPU time. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from transformer.data.batching import Batch
from transformer.training.precision import step_loss_sum
from transformer.training.start import make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/: peers.py
from peers import recipe_model_and_batches  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps")
    parser.add_argument("--rows", type=int, default=20, help="operators shown")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    config, model, _, batches = recipe_model_and_batches(args.warmup + args.steps)
    optimizer = make_optimizer(model, config)
    device = torch.device("cpu")

    def step(batch: Batch) -> None:
        loss = step_loss_sum(model, batch, device, args.precision, 0.1)
        (loss / batch.n_tgt_tokens).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    for batch in batches[: args.warmup]:
        step(batch)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for batch in batches[args.warmup :]:
            step(batch)
    print(
        f"{args.precision}, {torch.get_num_threads()} threads, {args.steps} steps of <= "
        f"{config.data.max_tokens} tokens"
    )
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows)
    print(table)


if __name__ == "__main__":
    main()
