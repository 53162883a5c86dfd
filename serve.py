"""Serve a checkpoint over HTTP: the same as `transformer serve` (transformer/commands/serve.py).

python serve.py -c runs/tiny/checkpoints/best.pt
"""

import sys

from transformer.commands.serve import main

if __name__ == "__main__":
    sys.exit(main())
