"""Serve translations over HTTP: a JSON API and a web page, with a checkpoint alone.

    pip install -e ".[serve]"
    python serve.py -c runs/multi30k_en_de/checkpoints/best.pt
    # then open http://127.0.0.1:8000/ or:
    curl -s 127.0.0.1:8000/translate -H 'Content-Type: application/json' \\
        -d '{"text": "A man is riding a bike."}'
    # a multilingual model: say the target language per request
    curl -s 127.0.0.1:8000/translate -H 'Content-Type: application/json' \\
        -d '{"text": "A man is riding a bike.", "tgt_lang": "fr"}'

Concurrent requests are decoded together in batches (--max-batch-tokens, --max-wait-ms). The
server listens on 127.0.0.1 only unless --host says otherwise. The app is in transformer/serving/app.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transformer.checkpoint import CheckpointError, load_model
from transformer.commands.common import (
    USER_ERROR,
    add_decoding_arguments,
    check_positive,
    start_the_search,
)
from transformer.config import ConfigError
from transformer.inference.export import ExportError
from transformer.inference.quantize import QUANTIZATIONS, QuantizationError

LIMITS = ("max_sentences", "max_chars", "max_beam", "max_batch_tokens", "max_body_bytes")


def parse_args(argv: list[str] | None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve a trained Transformer checkpoint over HTTP."
    )
    parser.add_argument("-c", "--checkpoint", required=True, help="a .pt file written by train.py")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    add_decoding_arguments(parser, QUANTIZATIONS, for_server=True)
    parser.add_argument("--name", help="model name shown to clients (default: from the path)")
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=10.0,
        help="the longest a request waits for others to share its batch (10 ms)",
    )
    parser.add_argument("--max-sentences", type=int, default=64, help="per request (64)")
    parser.add_argument("--max-chars", type=int, default=10_000, help="per request (10000)")
    parser.add_argument("--max-beam", type=int, default=10, help="largest beam a request may ask")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=1_000_000,
        help="largest request body; a larger one is refused (413) before it is read (1000000)",
    )
    args = parser.parse_args(argv)
    check_positive(parser, args, "beam", "threads", *LIMITS)
    if args.max_wait_ms < 0:
        parser.error("--max-wait-ms cannot be negative")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be between 0 and 65535, not {args.port}")
    if args.beam and args.beam > args.max_beam:
        parser.error(f"--beam ({args.beam}) cannot exceed --max-beam ({args.max_beam})")
    return args


def model_name(checkpoint: str) -> str:
    """`run/best.pt` for runs/run/checkpoints/best.pt: the file name alone rarely says which model."""
    path = Path(checkpoint)
    if path.parent.name == "checkpoints" and path.parent.parent.name:
        return f"{path.parent.parent.name}/{path.name}"
    return path.name


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        import uvicorn

        from transformer.serving.app import ServeSettings, create_app
    except ImportError as error:
        print(
            f"error: serving needs the [serve] extra ({error.name} is missing); "
            "install it with: pip install -e '.[serve]'",
            file=sys.stderr,
        )
        return USER_ERROR
    try:
        from transformer.device import (
            keep_freed_cpu_memory,
            reserve_search_threads,
            resolve_device,
        )
        from transformer.inference.translator import Translator

        threads = reserve_search_threads(args.threads)
        device = resolve_device(args.device, setting="--device")
        keep_freed_cpu_memory(device)  # each request's search allocates the same tensors again
        loaded = load_model(args.checkpoint, device)
        translator = Translator.with_options(
            loaded,
            device,
            beam_size=args.beam,
            length_penalty=args.length_penalty,
            batch_tokens=args.max_batch_tokens,
            quantize=args.quantize,
            names=[args.checkpoint],
            engine=args.engine,
            threads=threads,
        )
        start_the_search(threads, args.engine)  # in the batcher's worker thread
    except (CheckpointError, ConfigError, ExportError, QuantizationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
    settings = ServeSettings(
        name=args.name or model_name(args.checkpoint),
        max_wait_ms=args.max_wait_ms,
        **{name: getattr(args, name) for name in LIMITS},
    )
    app = create_app(loaded, translator, settings)
    print(
        f"serving {settings.name} ({translator.languages}) at http://{args.host}:{args.port}/ "
        "(API at /docs; Ctrl-C stops)",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
