"""What the subcommands share: the exit codes, the options several of them take (a recipe with
overrides; the decoding options of translate and serve), and the check that an input path can be
read.

Every command of the project (`transformer <subcommand>`, `python -m transformer <subcommand>` and
the root scripts train.py, translate.py, serve.py) exits with 0 on success; USER_ERROR (2, as
argparse does) when the input, a file, a checkpoint or a setting is wrong, with one line that says
what to change; FAILED (1) when the work itself failed (training diverged, a torchrun rank was
lost) or on a bug (Python's own code for an uncaught exception, with its traceback); and 130 after
Ctrl-C (train saves first).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

USER_ERROR = 2  # a wrong input, file, checkpoint or setting; the message says what to change
FAILED = 1  # the work failed (divergence, a lost rank) or a bug (with its traceback)
INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """--config and the dotted overrides, as train and prepare take them."""
    parser.add_argument(
        "--config",
        required=True,
        help="a recipe's name (tiny, multi30k_en_de, ...: `transformer recipes` lists them) or "
        "the path of a YAML file",
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value settings")


def add_decoding_arguments(
    parser: argparse.ArgumentParser, quantizations: Sequence[str], for_server: bool = False
) -> None:
    """The options translate and serve share, under the same names in both. quantizations: what
    --quantize accepts (quantize.QUANTIZATIONS, passed in so that importing this module stays
    cheap)."""
    default = "default beam size" if for_server else "beam size"
    parser.add_argument(
        "--beam", type=int, help=f"{default} (1 = greedy); default: the checkpoint's"
    )
    parser.add_argument("--length-penalty", type=float, help="GNMT alpha for beam search")
    parser.add_argument(
        "--max-batch-tokens",
        "--max-tokens",  # translate.py's earlier name, still accepted
        dest="max_batch_tokens",
        type=int,
        default=4096 if for_server else None,
        help="source tokens x beam decoded together at most"
        + (" (4096)" if for_server else "; default: the checkpoint's decode.batch_tokens"),
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    parser.add_argument(
        "--threads", type=int, help="CPU threads of the search (default: one per core)"
    )
    parser.add_argument(
        "--quantize",
        choices=quantizations,
        help="int8 linear layers (CPU only; faster, slightly different output)",
    )
    parser.add_argument(
        "--engine",
        choices=("torch", "ctranslate2"),
        default="torch",
        help="decode with the PyTorch search (torch, default: every feature) or with CTranslate2 "
        "(faster one sentence at a time; exported beside the checkpoint on first use; "
        "the [export] extra)",
    )


def start_the_search(threads: int, engine: str) -> None:
    """Once the model is loaded (device.reserve_search_threads before it): torch searches with
    `threads`; beside the CTranslate2 engine, which has its own, torch keeps one."""
    import torch

    if engine == "torch":
        torch.set_num_threads(threads)


def check_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    """Refuse (through argparse, exit 2) any of these options given as less than 1."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


def unreadable_input(path: str, what: str) -> str | None:
    """Why `path` cannot be read as an input file, or None if it can. Anything readable will do:
    a regular file, a pipe or FIFO (`-i <(zcat test.en.gz)`), /dev/stdin; not a directory."""
    target = Path(path)
    if not target.exists():
        return f"{what} {path!r} not found"
    if target.is_dir():
        return f"{what} {path!r} is a directory; give a file"
    if not os.access(target, os.R_OK):
        return f"{what} {path!r} is not readable (check its permissions)"
    return None
