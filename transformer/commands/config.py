"""`transformer config --markdown`: the table of every configuration key, read from the dataclasses
(docs/configuration.md shows it; a test keeps the two equal)."""

from __future__ import annotations

import argparse

from transformer.commands.common import USER_ERROR
from transformer.config import config_markdown


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Document the configuration keys that YAML recipes and overrides may set.",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the table of every key, in Markdown"
    )
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.print_help()
        return USER_ERROR
    print(config_markdown(), end="")
    return 0
