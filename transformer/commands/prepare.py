"""`transformer prepare`: encode a recipe's training data once, ahead of training (on a CPU
machine before a GPU job, say); `transformer train` with the same recipe (and run_dir or
data.cache_dir) then maps the same files.

    transformer prepare --config multi30k_en_de [key=value ...]
"""

from __future__ import annotations

import argparse
import sys

from transformer.checkpoint import CheckpointError
from transformer.commands.common import USER_ERROR, add_config_arguments
from transformer.config import ConfigError, load_config
from transformer.data.loading import DataError
from transformer.data.prepare import cache_root, prepare_data, starting_tokenizers


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Encode a config's training split once into files that train reads.",
        epilog="Overrides use dotted keys, e.g. data.dataset=wmt14 data.subset=de-en",
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        tokenizers, source_eos = starting_tokenizers(config)
        prepared = prepare_data(
            config.data, config.model.max_positions, cache_root(config), tokenizers, source_eos
        )
    except (CheckpointError, ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
    size = sum(p.stat().st_size for p in prepared.directory.rglob("*") if p.is_file())
    print(
        f"{prepared.directory} ({size / 1e6:.1f} MB); transformer train with this config reads it"
    )
    return 0
