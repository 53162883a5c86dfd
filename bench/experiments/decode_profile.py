"""Where decoding spends its time: torch.profiler over one batched search of the model that
`marian_decode_speed.py` times (d 256, 3+3 layers, random weights, EOS never chosen, so every
sentence generates exactly --new-tokens tokens).

    python bench/experiments/decode_profile.py                   # greedy, 64 sentences
    python bench/experiments/decode_profile.py --beam 5 --threads 1
    python bench/experiments/decode_profile.py --beam 5 --unpacked   # F.linear (MKL), as before packing

Sources are random ids of 8 to 24 tokens (no corpus needed). Prints the time per search, the
tokens per second, and the profiler's table of operators by their own time. Asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from transformer.inference.decoding import BEAM_DEFAULTS, SearchSettings, beam_search, greedy_search
from transformer.inference.onednn_linear import pack_linear_layers
from transformer.tokenization.tokenizer import EOS_ID, PAD_ID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/: peers.py
from peers import project_model  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beam", type=int, default=1, help="1: greedy search")
    parser.add_argument(
        "--unpacked", action="store_true", help="linear layers through F.linear, not packed oneDNN"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=20, help="tokens per sentence, EOS incl.")
    parser.add_argument("--repeats", type=int, default=3, help="timed searches before profiling")
    parser.add_argument("--rows", type=int, default=20, help="operators in the table")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = argparse.Namespace(d_model=256, layers=3, heads=4, d_ff=1024, max_positions=256)
    torch.manual_seed(0)
    model = project_model(sizes, args.vocab_size).eval()
    with torch.no_grad():
        model.projection.linear.bias[EOS_ID] = -1e4  # EOS only where the search forces it
    if not args.unpacked:
        model = pack_linear_layers(model)  # as translate.py decodes float32 on a CPU
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 25, (args.batch_size,), generator=generator)
    src = torch.full((args.batch_size, int(lengths.max())), PAD_ID)  # (B, S)
    for i, length in enumerate(lengths.tolist()):
        src[i, :length] = torch.randint(4, args.vocab_size, (length,), generator=generator)
    limits = {"max_len_a": 0.0, "max_len_b": args.new_tokens - 1}

    def search() -> None:
        if args.beam == 1:
            greedy_search(model, src, SearchSettings(**limits))
        else:
            beam_search(model, src, replace(BEAM_DEFAULTS, **limits), beam_size=args.beam)

    search()  # warm-up
    start = time.perf_counter()
    for _ in range(args.repeats):
        search()
    seconds = (time.perf_counter() - start) / args.repeats
    name = "greedy" if args.beam == 1 else f"beam {args.beam}"
    print(
        f"{name}, {args.batch_size} sentences x {args.new_tokens} tokens, "
        f"{torch.get_num_threads()} threads: {seconds * 1000:.0f} ms per search, "
        f"{args.batch_size * args.new_tokens / seconds:.0f} tokens/s"
    )
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        search()
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
