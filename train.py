"""Train a translation model from a YAML recipe, with dotted overrides.

python train.py --config configs/multi30k_en_de.yaml
python train.py --config configs/tiny.yaml train.max_steps=50 data.max_tokens=1024
python train.py --config configs/multi30k_en_de.yaml --resume
torchrun --nproc-per-node 2 train.py --config configs/tiny.yaml train.device=cpu   # 2 processes

Exit status: 0 done (or nothing left to do), 1 training diverged, 2 a problem with the config, the
data, a checkpoint or the run directory (one line on stderr says which), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys

from transformer.checkpoint import CheckpointError
from transformer.cli import FAILED, INTERRUPTED, USER_ERROR
from transformer.config import ConfigError, load_config
from transformer.data.loading import DataError
from transformer.training.divergence import DivergenceError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train an encoder-decoder Transformer for translation.",
        epilog="Overrides use dotted keys, e.g. train.lr=3e-4 data.max_tokens=2048 model.d_model=256",
    )
    parser.add_argument("--config", required=True, help="a YAML recipe, e.g. configs/tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value settings")
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--resume", action="store_true", help="continue from <run_dir>/checkpoints/last.pt"
    )
    group.add_argument(
        "--overwrite", action="store_true", help="delete an existing run in train.run_dir first"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
