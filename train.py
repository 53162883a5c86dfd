"""Train a translation model: the same as `transformer train` (transformer/commands/train.py).

python train.py --config configs/tiny.yaml train.max_steps=50
torchrun --nproc-per-node 2 train.py --config tiny train.device=cpu
"""

import sys

from transformer.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
