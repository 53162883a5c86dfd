"""`transformer average`: average the weights of a run's last N step checkpoints into one file to
translate with.

    transformer average runs/tiny/checkpoints --last 2 -o runs/tiny/averaged.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transformer.checkpoint import (
    CheckpointError,
    average_checkpoints,
    save_checkpoint,
    step_checkpoints,
)
from transformer.commands.common import USER_ERROR


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Average the weights of the last N step_*.pt checkpoints of a run. The result "
        "keeps the newest checkpoint's config and tokenizers and drops the optimiser state: it is "
        "for translate, not for --resume. Compare it with best.pt on validation data "
        "(bench/quality.py does) before relying on it.",
    )
    parser.add_argument(
        "directory", help="a run's checkpoints directory, e.g. runs/tiny/checkpoints"
    )
    parser.add_argument(
        "--last",
        type=int,
        default=5,
        metavar="N",
        help="how many of the most recent step checkpoints (default 5; a run keeps "
        "train.keep_checkpoints of them)",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT.pt", help="where to write the average"
    )
    args = parser.parse_args(argv)
    if args.last < 1:
        parser.error("--last must be at least 1")
    return args


def average(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not directory.is_dir():
        raise CheckpointError(f"{str(directory)!r} is not a directory of checkpoints")
    paths = step_checkpoints(directory)[-args.last :]
    if len(paths) < args.last:
        raise CheckpointError(
            f"asked for the last {args.last} checkpoints but {str(directory)!r} holds "
            f"{len(paths)} step_N.pt files; raise train.keep_checkpoints or lower --last"
        )
    save_checkpoint(average_checkpoints(paths), args.output)
    print(
        f"averaged {len(paths)} checkpoints ({', '.join(p.name for p in paths)}) -> {args.output}"
    )
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        return average(args)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
