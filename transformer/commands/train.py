"""`transformer train`: train a translation model from a recipe, with dotted overrides.

    transformer train --config multi30k_en_de           # an installed recipe, by name
    transformer train --config tiny train.max_steps=50 data.max_tokens=1024
    transformer train --config my_recipe.yaml --resume  # a YAML file of your own
    torchrun --nproc-per-node 2 -m transformer train --config tiny train.device=cpu   # 2 processes

Exit status: 0 done (or nothing left to do), 1 training diverged, 2 a problem with the config, the
data, a checkpoint or the run directory (one line on stderr says which), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys

from transformer.checkpoint import CheckpointError
from transformer.commands.common import FAILED, INTERRUPTED, USER_ERROR, add_config_arguments
from transformer.config import ConfigError, load_config
from transformer.data.loading import DataError
from transformer.recipes import recipe_names
from transformer.training.divergence import DivergenceError


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train an encoder-decoder Transformer for translation.",
        epilog="Overrides use dotted keys, e.g. train.lr=3e-4 data.max_tokens=2048 "
        f"model.d_model=256. Installed recipes: {', '.join(recipe_names())}.",
    )
    add_config_arguments(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--resume", action="store_true", help="continue from <run_dir>/checkpoints/last.pt"
    )
    group.add_argument(
        "--overwrite", action="store_true", help="delete an existing run in train.run_dir first"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        from transformer.training.distributed import (
            RanksLostError,  # heavy imports after argument errors
        )
        from transformer.training.loop import train

        config = load_config(args.config, args.overrides)
        result = train(config, resume=args.resume, overwrite=args.overwrite)
    except (ConfigError, DataError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
    except (DivergenceError, RanksLostError) as error:
        print(f"error: {error}", file=sys.stderr)
        return FAILED
    if result.interrupted:
        return INTERRUPTED
    best = result.state.best_bleu
    print(
        f"Done at step {result.state.step}. Best validation BLEU {best:.2f}; checkpoints in "
        f"{result.run_dir / 'checkpoints'}."
    )
    return 0
