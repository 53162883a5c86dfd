"""Time to a validation BLEU: train the default recipe and report when `val` first reached a target.

    python bench/speedrun.py --data ../shared/data/multi30k            # trains ~60 min, then reports
    python bench/speedrun.py --run runs/speedrun                         # reports on a finished run

Runs `train.py --config configs/multi30k_en_de.yaml` on the local Multi30k files (the same command a
user runs, plus `--` overrides passed through), then reads the run's validation history from its
`last.pt`: every validation records the wall-clock minutes since train.py began the run (data
preparation included). Prints the minutes and step of the first validation at or above `--target`
cased BLEU (greedy, all of `val`), the final and best validation BLEU, and the whole curve.
Python's start-up before train.py's first line (imports, ~2-4 s) is printed separately.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "multi30k_en_de.yaml"))
    parser.add_argument("--run", help="report on this finished run directory instead of training")
    parser.add_argument("--run-dir", default="runs/speedrun", help="where a new run goes")
    parser.add_argument("--target", type=float, default=35.0, help="validation BLEU to reach")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides, e.g. train.lr=2e-3")
    return parser.parse_args()


def train(args: argparse.Namespace) -> tuple[Path, float]:
    """Run train.py as a user would; returns the run directory and the command's wall time."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        args.config,
        f"data.dataset={args.data}",
        "data.splits.validation=val",
        "data.splits.test=test_2016_flickr",
        f"train.run_dir={args.run_dir}",
        *args.overrides,
    ]
    print("+", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return Path(args.run_dir), time.perf_counter() - start


def report(run_dir: Path, target: float, wall_seconds: float | None) -> None:
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    state, history = saved["train_state"], saved["train_state"]["history"]
    budget = saved.get("time_budget", state)  # older checkpoints kept it in train_state
    planned = budget["plan"]["last_step"] if "plan" in budget else budget["planned_steps"]
    if not history or "minutes" not in history[0]:
        sys.exit(f"{run_dir} has no timed validation history (trained before it was recorded)")
    print(f"\n{'step':>6} {'minutes':>8} {'val BLEU':>9}")
    for entry in history:
        print(f"{entry['step']:>6} {entry['minutes']:>8.1f} {entry['bleu']:>9.2f}")
    reached = next((entry for entry in history if entry["bleu"] >= target), None)
    print(f"\nrun: {run_dir}   steps: {saved['step']}   planned steps: {planned}")
    print(f"precision: {saved['config']['train']['precision']}")
    if reached is None:
        print(f"time to {target:g} val BLEU: not reached")
    else:
        print(f"time to {target:g} val BLEU: {reached['minutes']:.1f} min (step {reached['step']})")
    print(f"final val BLEU {history[-1]['bleu']:.2f}, best {state['best_bleu']:.2f}")
    total = budget["elapsed_seconds"] / 60
    print(f"run wall time (train.py's own clock): {total:.1f} min")
    if wall_seconds is not None:
        print(f"command wall time: {wall_seconds / 60:.1f} min (start-up and exit included)")


def main() -> None:
    args = parse_args()
    if args.run:
        report(Path(args.run), args.target, None)
        return
    run_dir, wall_seconds = train(args)
    report(run_dir, args.target, wall_seconds)


if __name__ == "__main__":
    main()
