"""`transformer export`: a checkpoint as a deployment engine's model (optional [export] extra).

transformer export ctranslate2 runs/multi30k_en_de/checkpoints/best.pt exported/
transformer export ctranslate2 best.pt exported_int8/ --quantization int8
"""

from __future__ import annotations

import argparse
import sys

from transformer.checkpoint import CheckpointError
from transformer.commands.common import USER_ERROR
from transformer.inference.export import CTRANSLATE2_QUANTIZATIONS, ExportError, export_ctranslate2


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Export a checkpoint to a deployment engine.",
    )
    engines = parser.add_subparsers(dest="engine", required=True, metavar="ENGINE")
    ct2 = engines.add_parser("ctranslate2", help="a CTranslate2 model directory")
    ct2.add_argument("checkpoint", help="a .pt file written by train.py")
    ct2.add_argument("output_dir", help="the directory to write (created)")
    ct2.add_argument(
        "--quantization",
        default="float32",
        choices=CTRANSLATE2_QUANTIZATIONS,
        help="weight type of the exported model (default float32: as trained)",
    )
    ct2.add_argument("--force", action="store_true", help="replace a non-empty output_dir")
    args = parser.parse_args(argv)
    try:
        output_dir = export_ctranslate2(
            args.checkpoint, args.output_dir, args.quantization, args.force
        )
    except (CheckpointError, ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
    print(f"exported {args.checkpoint} to {output_dir} (CTranslate2, {args.quantization})")
    return 0
