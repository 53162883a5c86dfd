"""python -m transformer <subcommand>: the same as the installed `transformer` command."""

import sys

from transformer.commands.main import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m transformer"))
