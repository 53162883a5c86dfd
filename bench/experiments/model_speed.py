"""Forward+backward time of the Transformer on one fixed batch, in fp32 and with bf16 autocast.

    python bench/experiments/model_speed.py                       # the paper's base model, 64 x 20 tokens
    python bench/experiments/model_speed.py --d-model 256 --layers 3 --heads 4 --d-ff 1024

Prints the parameter count and, per precision, the median time of a training step (forward, loss,
backward) over a few repeats after warm-up, and the target tokens per second that implies.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from transformer.config import ModelConfig
from transformer.model import build_transformer, count_parameters


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-model", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6, help="encoder and decoder layers each")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--d-ff", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=20, help="source and target tokens")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    return parser.parse_args(argv)


def time_step(model: torch.nn.Module, src: torch.Tensor, tgt: torch.Tensor, bf16: bool) -> float:
    """Seconds for one forward + loss + backward."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    start = time.perf_counter()
    with autocast:
        logits = model(src, tgt)  # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tgt.flatten())
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ModelConfig(
        src_vocab_size=args.vocab,
        tgt_vocab_size=args.vocab,
        d_model=args.d_model,
        n_heads=args.heads,
        n_encoder_layers=args.layers,
        n_decoder_layers=args.layers,
        d_ff=args.d_ff,
        share_embeddings=True,
    )
    model = build_transformer(config).train()
    src = torch.randint(4, args.vocab, (args.batch, args.length))
    tgt = torch.randint(4, args.vocab, (args.batch, args.length))
    print(f"parameters: {count_parameters(model):,}  (shared vocabulary {args.vocab})")
    print(f"batch: {args.batch} x {args.length} tokens, {torch.get_num_threads()} threads")
    print(f"{'precision':<10} {'step (s)':>9} {'tgt tok/s':>10}")
    for name, bf16 in (("fp32", False), ("bf16", True)):
        time_step(model, src, tgt, bf16)  # warm-up
        times = [time_step(model, src, tgt, bf16) for _ in range(args.repeats)]
        median = statistics.median(times)
        print(f"{name:<10} {median:>9.3f} {args.batch * args.length / median:>10.0f}")


if __name__ == "__main__":
    main()
