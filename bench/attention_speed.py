"""Attention at decoding's shapes on a CPU: PyTorch's fused kernel against the explicit form.

    python bench/attention_speed.py
    python bench/attention_speed.py --sentences 64 --beam 5 --source-length 20 --threads 1

Times `F.scaled_dot_product_attention` and `transformer.model.explicit_attention` (q k^T, softmax,
@ v) on the queries a batched search makes at every step, random values, d_model 256, 4 heads:
- cross-attention: the beams of each sentence folded onto its source, (b, H, beam, Dh) queries
  against (b, H, S, Dh) keys under a padding mask (the shape `fold_rows` makes); greedy (beam 1)
  for comparison;
- self-attention: one new query per row, (b * beam, H, 1, Dh), against t cached positions (a
  time-major cache viewed as (rows, H, t, Dh), as `LayerCache` returns it).
`fused_attention` uses the explicit form for 2..FEW_QUERIES query positions on a CPU (the folded
cross-attention of beam search) and the fused kernel otherwise. Prints microseconds per call
(median of --repeats rounds of --calls calls, the two forms in turn); asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from transformer.model import FEW_QUERIES, explicit_attention


def microseconds(call: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e6


def compare(name: str, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, args) -> None:
    forms = {
        "fused": lambda: F.scaled_dot_product_attention(q, k, k, attn_mask=mask),
        "explicit": lambda: explicit_attention(q, k, k, mask),
    }
    times: dict[str, list[float]] = {form: [] for form in forms}
    for call in forms.values():
        microseconds(call, 5)  # warm-up
    for _ in range(args.repeats):
        for form, call in forms.items():
            times[form].append(microseconds(call, args.calls))
    fused, explicit = (statistics.median(times[form]) for form in forms)
    print(f"{name:<44} {fused:9.0f} {explicit:9.0f} {fused / explicit:7.2f}x")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=64, help="sentences per batch")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--source-length", type=int, default=20)
    parser.add_argument("--cached", type=int, nargs="+", default=[5, 10, 20], help="positions t")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, H, Dh, S = args.sentences, 4, 64, args.source_length
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; FEW_QUERIES {FEW_QUERIES}"
    )
    print(f"{'shape':<44} {'fused us':>9} {'explicit':>9} {'ratio':>8}")
    keys = torch.randn(b, H, S, Dh)
    mask = torch.ones(b, 1, 1, S, dtype=torch.bool)
    mask[b // 2 :, :, :, S * 3 // 4 :] = False  # half the sentences shorter: padding
    for beam in sorted({1, args.beam}):
        queries = torch.randn(b, H, beam, Dh)
        compare(f"cross q {tuple(queries.shape)} k {tuple(keys.shape)}", queries, keys, mask, args)
    rows = b * args.beam
    for t in args.cached:
        cache = torch.randn(t, rows, H, Dh)  # time-major, as LayerCache keeps it
        queries = torch.randn(rows, H, 1, Dh)
        compare(
            f"self q {tuple(queries.shape)} t {t}", queries, cache.permute(1, 2, 0, 3), None, args
        )


if __name__ == "__main__":
    main()
