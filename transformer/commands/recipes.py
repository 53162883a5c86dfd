"""`transformer recipes`: the recipes that come with the package, by name, with where they are."""

from __future__ import annotations

import argparse

from transformer.commands.common import USER_ERROR
from transformer.recipes import find_recipe, recipe_names, recipe_summary


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="List the installed recipes (train --config NAME), or print one to start "
        "your own from: transformer recipes --show tiny > my_recipe.yaml",
    )
    parser.add_argument("--show", metavar="NAME", help="print this recipe's YAML")
    args = parser.parse_args(argv)
    names = recipe_names()
    if args.show:
        if args.show not in names:
            parser.exit(
                USER_ERROR,
                f"error: no recipe named {args.show!r}; choose one of: {', '.join(names)}\n",
            )
        print(find_recipe(args.show).read_text(encoding="utf-8"), end="")
        return 0
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {recipe_summary(find_recipe(name))}")
    return 0
