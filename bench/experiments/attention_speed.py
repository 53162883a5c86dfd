"""Attention at decoding's shapes on a CPU: PyTorch's fused kernel against the explicit form.

    python bench/experiments/attention_speed.py
    python bench/experiments/attention_speed.py --sentences 64 --beam 5 --source-length 20 --threads 1
    python bench/experiments/attention_speed.py --training      # forward + backward at training's shapes

Times `F.scaled_dot_product_attention` and `transformer.model.explicit_attention` (q k^T, softmax,
@ v) on the queries a batched search makes at every step, random values, d_model 256, 4 heads:
- cross-attention: the beams of each sentence folded onto its source, (b, H, beam, Dh) queries
  against (b, H, S, Dh) keys under a padding mask (the shape `fold_rows` makes); greedy (beam 1)
  for comparison;
- self-attention: one new query per row, (b * beam, H, 1, Dh), against t cached positions (a
  time-major cache viewed as (rows, H, t, Dh), as `LayerCache` returns it).
`--training`: forward + backward of float32 attention at the shapes of ~4,096-token training batches
((batch, 4, T, 64) for T from 8 to 100, padding-masked and causal), with and without dropout on the
probabilities (0.1): the fused kernel against the explicit form with the project's dropout.
`fused_attention` uses the explicit form for training on a CPU, and for 2..FEW_QUERIES query
positions when decoding on a CPU (the folded cross-attention of beam search); the fused kernel
otherwise. Prints microseconds per call (median of --repeats rounds of --calls calls, the two forms
in turn); asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from transformer.model import FEW_QUERIES, causal_mask, explicit_attention


def microseconds(call: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls * 1e6


def compare(name: str, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, args) -> None:
    """The two forms at a decoding shape (keys are also the values)."""
    forms = {
        "fused": lambda: F.scaled_dot_product_attention(q, k, k, attn_mask=mask),
        "explicit": lambda: explicit_attention(q, k, k, mask),
    }
    compare_forms(name, forms, args)


def compare_training(batch: int, length: int, causal: bool, dropout_p: float, args) -> None:
    """Forward + backward of both forms on (batch, 4, length, 64) float32 queries/keys/values."""
    q, k, v = (torch.randn(batch, 4, length, 64, requires_grad=True) for _ in range(3))
    grad = torch.randn(batch, 4, length, 64)
    mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    mask[batch // 2 :, :, :, length * 3 // 4 :] = False  # half the sentences shorter: padding
    explicit_mask = causal_mask(length, length, q.device) if causal else mask

    def fused() -> None:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=None if causal else mask, dropout_p=dropout_p, is_causal=causal
        )
        out.backward(grad)

    def explicit() -> None:
        explicit_attention(q, k, v, explicit_mask, dropout_p).backward(grad)

    kind = "causal" if causal else "masked"
    name = f"train {kind} ({batch}, 4, {length}, 64) dropout {dropout_p}"
    compare_forms(name, {"fused": fused, "explicit": explicit}, args)


def compare_forms(name: str, forms: dict[str, Callable[[], object]], args) -> None:
    times: dict[str, list[float]] = {form: [] for form in forms}
    for call in forms.values():
        microseconds(call, 5)  # warm-up
    for _ in range(args.repeats):
        for form, call in forms.items():
            times[form].append(microseconds(call, args.calls))
    fused, explicit = (statistics.median(times[form]) for form in forms)
    print(f"{name:<52} {fused:9.0f} {explicit:9.0f} {fused / explicit:7.2f}x")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=64, help="sentences per batch")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--source-length", type=int, default=20)
    parser.add_argument("--cached", type=int, nargs="+", default=[5, 10, 20], help="positions t")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--training", action="store_true", help="training shapes, with backward")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, H, Dh, S = args.sentences, 4, 64, args.source_length
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; FEW_QUERIES {FEW_QUERIES}"
    )
    print(f"{'shape':<52} {'fused us':>9} {'explicit':>9} {'ratio':>8}")
    if args.training:
        for batch, length in [(260, 8), (130, 16), (64, 32), (40, 64), (25, 100)]:
            for causal in (False, True):
                for dropout_p in (0.0, 0.1):
                    compare_training(batch, length, causal, dropout_p, args)
        return
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
