"""Data-parallel scaling: training throughput of P processes (torchrun; Gloo on CPU, NCCL on GPUs)
against one process, at the same global batch.

    flock /tmp/bench.lock env PYTHONPATH=$PWD python bench/scaling.py            # this CPU, P=2
    python bench/scaling.py --processes 4 --device cuda                           # 1 vs 4 GPUs

Every arm trains the project's model (configs/multi30k_en_de.yaml) on Multi30k en->de through the
product's own code: `start_run` builds the run and `train_step` takes the optimiser steps, as
train.py does. The single process accumulates P batches per step (train.accumulate=P); the P ranks
take one batch each, so every step sees the same P batches of data.max_tokens in every arm (the
sampler hands batch k of an epoch to rank k % P). Throughput = real target tokens of the timed
steps (all ranks together) / their wall time, after warm-up steps; rank 0 reports.
Three arms on CPU: 1 process x 1 thread, 1 process x P threads, P processes x 1 thread (on GPUs:
1 process x 1 GPU and P processes x 1 GPU). Scaling efficiency = throughput(P processes) /
(P x throughput(1 process x 1 thread or 1 GPU)): 1.0 is perfect scaling. On CPU the script also
gives P processes against P threads in one process, the other way to use the same cores.
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
MULTI30K = [
    "data.dataset=/work/shared/data/multi30k",
    "data.splits.validation=val",
    "data.splits.test=test_2016_flickr",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="P: ranks (and threads, on CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--max-tokens", type=int, default=4096, help="data.max_tokens per batch")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimiser steps")
    parser.add_argument("--steps", type=int, default=5, help="timed optimiser steps")
    parser.add_argument("--rounds", type=int, default=2, help="arms run alternately, this often")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--accumulate", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker(args: argparse.Namespace) -> None:
    """One arm (run as a plain process or under torchrun): time `train_step` on Multi30k."""
    from transformer.config import load_config
    from transformer.training import distributed
    from transformer.training.loop import optimizer_steps, train_step
    from transformer.training.start import start_run

    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [
            *MULTI30K,
            f"train.run_dir={run_dir}",
            f"train.device={args.device}",
            f"train.threads={args.threads}",
            f"train.accumulate={args.accumulate}",
            f"data.max_tokens={args.max_tokens}",
        ]
        config = load_config(str(ROOT / "configs" / "multi30k_en_de.yaml"), overrides)
        with distributed.process_group(config.train.device, config.train.dist_timeout_s):
            run = start_run(config, overwrite=True)
            steps = optimizer_steps(run)
            for _ in range(args.warmup):
                train_step(run, next(steps))
            distributed.sum_across_ranks([0.0])  # start the clock together
            start, tokens = time.perf_counter(), 0
            for _ in range(args.steps):
                stats = train_step(run, next(steps))
                tokens += stats.tokens
            distributed.sum_across_ranks([0.0])  # wait for the slowest rank
            elapsed = time.perf_counter() - start
            if distributed.is_main():
                result = {"tokens_per_s": tokens / elapsed, "step_s": elapsed / args.steps}
                print("RESULT " + json.dumps(result), flush=True)


def run_arm(args: argparse.Namespace, processes: int, threads: int, accumulate: int) -> dict:
    worker_args = [
        str(Path(__file__).resolve()),
        "--worker",
        f"--device={args.device}",
        f"--max-tokens={args.max_tokens}",
        f"--warmup={args.warmup}",
        f"--steps={args.steps}",
        f"--threads={threads}",
        f"--accumulate={accumulate}",
    ]
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    completed = subprocess.run(
        launcher + worker_args, capture_output=True, text=True, check=False, cwd=ROOT
    )
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise SystemExit(f"the arm failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    P = args.processes
    on_cpu = args.device == "cpu"
    arms = {  # label: (processes, threads, accumulate)
        "1 process x 1 thread" if on_cpu else "1 process x 1 GPU": (1, 1, P),
        f"1 process x {P} threads": (1, P, P),
        f"{P} processes x 1 thread" if on_cpu else f"{P} processes x 1 GPU each": (P, 1, 1),
    }
    if not on_cpu:
        del arms[f"1 process x {P} threads"]
    print(f"global batch: {P} batches of <= {args.max_tokens} tokens per step; {args.steps} steps")
    print(f"{'round':<7}{'arm':<28}{'target tok/s':>14}{'s/step':>10}")
    speed: dict[str, list[float]] = {label: [] for label in arms}
    for round_number in range(1, args.rounds + 1):  # alternate, so that load changes hit all
        for label, (processes, threads, accumulate) in arms.items():
            result = run_arm(args, processes, threads, accumulate)
            speed[label].append(result["tokens_per_s"])
            tokens_per_s, step_s = result["tokens_per_s"], result["step_s"]
            print(f"{round_number:<7}{label:<28}{tokens_per_s:>14.0f}{step_s:>10.3f}", flush=True)
    single, *_, parallel = (statistics.median(values) for values in speed.values())
    print(f"scaling efficiency of {P} processes: {parallel / (P * single):.2f} (medians)")
    if on_cpu:
        threaded = statistics.median(speed[f"1 process x {P} threads"])
        print(f"{P} processes over 1 process x {P} threads: {parallel / threaded:.2f}x (medians)")


if __name__ == "__main__":
    main()
