"""The `transformer` command: one subcommand per module of this folder.

    transformer train --config tiny            # the same as: python -m transformer train ...
    transformer translate -c runs/tiny/checkpoints/best.pt "twenty-one"
    transformer --help                         # the subcommands

Each subcommand's module is imported only when it runs, so that `transformer --help` and a
mistyped name answer at once, and a missing optional extra (serve, convert, export) concerns only
the subcommand that needs it. Each module's `main(argv, prog)` parses its own options, so
`transformer <subcommand> --help` and its exit codes are the subcommand's own.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from transformer.commands.common import USER_ERROR

# name -> one line for the overview; the module is transformer.commands.<name>
SUBCOMMANDS = {
    "train": "train a model from a recipe (--config tiny | multi30k_en_de | FILE.yaml)",
    "translate": "translate sentences, a file or stdin with a checkpoint",
    "serve": "an HTTP API and web page over a checkpoint ([serve] extra)",
    "prepare": "encode a recipe's training data once into memory-mapped files",
    "average": "average a run's last N checkpoints into one",
    "convert": "import a pretrained OPUS-MT / Marian model ([convert] extra)",
    "export": "export a checkpoint to CTranslate2, float32 or int8 ([export] extra)",
    "recipes": "list the installed recipes, or print one",
    "config": "print the table of every configuration key",
}


def overview(prog: str) -> str:
    width = max(map(len, SUBCOMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items())
    return (
        f"usage: {prog} <subcommand> [options]\n\n"
        "An encoder-decoder Transformer for machine translation.\n\n"
        f"subcommands:\n{rows}\n\n"
        f"`{prog} <subcommand> --help` shows a subcommand's options.\n"
    )


def main(argv: list[str] | None = None, prog: str = "transformer") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(overview(prog), end="")
        return 0 if argv else USER_ERROR
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        close = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(
            f"{prog}: error: unknown subcommand {name!r}{hint} "
            f"(choose from {', '.join(SUBCOMMANDS)})",
            file=sys.stderr,
        )
        return USER_ERROR
    module = importlib.import_module(f"transformer.commands.{name}")
    return module.main(rest, prog=f"{prog} {name}")
