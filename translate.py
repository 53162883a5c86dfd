"""Translate with a checkpoint: the same as `transformer translate` (transformer/commands/translate.py).

python translate.py -c runs/tiny/checkpoints/best.pt "twenty-one"
"""

import sys

from transformer.commands.translate import main

if __name__ == "__main__":
    sys.exit(main())
