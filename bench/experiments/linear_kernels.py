"""Float32 linear layers: `F.linear` (MKL's sgemm) against oneDNN with the weight packed once
(`transformer.inference.onednn_linear.PackedLinear`, what translate.py, serve.py and validation decode with).

    python bench/experiments/linear_kernels.py
    python bench/experiments/linear_kernels.py --threads 1 --d-model 512 --d-ff 2048 --vocab-size 32000

Rows are the shapes of a search step (x (M, in) times each weight of a decoder layer and the
output projection) for a few M: 1 (greedy, one sentence), 5 (beam 5, one sentence), 64 (greedy,
64 sentences), 320 (beam 5, 64 sentences) and 2,000 (an encoder batch). Each cell is the best of
--repeats timings of --calls calls; the last line is the square matmul peak of each kernel.
Both compute the same float32 products (the script checks they agree to 1e-4). Asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from transformer.inference.onednn_linear import PackedLinear, packing_works


def best_milliseconds(call: Callable[[], object], calls: int, repeats: int) -> float:
    for _ in range(max(3, calls // 10)):  # warm-up: allocations, kernel choice
        call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e3


def compare(linear: nn.Linear, x: torch.Tensor, calls: int, repeats: int) -> tuple[float, float]:
    """Milliseconds per call of x (M, in) through F.linear and through the packed layer."""
    packed = PackedLinear(linear.eval())
    with torch.no_grad():
        torch.testing.assert_close(packed(x), linear(x), rtol=1e-4, atol=1e-4)
        plain = best_milliseconds(lambda: F.linear(x, linear.weight, linear.bias), calls, repeats)
        onednn = best_milliseconds(lambda: packed(x), calls, repeats)
    return plain, onednn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--d-ff", type=int, default=1024)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--rows", default="1,5,64,320,2000", help="comma list of M")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not packing_works():
        raise SystemExit("this torch build cannot pack linear layers for oneDNN")
    D, d_ff, V = args.d_model, args.d_ff, args.vocab_size
    shapes = {
        f"{D}->{3 * D} (qkv)": (D, 3 * D),
        f"{D}->{D} (out, query)": (D, D),
        f"{D}->{d_ff} (ff in)": (D, d_ff),
        f"{d_ff}->{D} (ff out)": (d_ff, D),
        f"{D}->{V} (vocab)": (D, V),
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; ms per call, best of "
        f"{args.repeats} x {args.calls} calls; F.linear / packed oneDNN (speed-up)"
    )
    torch.manual_seed(0)
    for rows in (int(m) for m in args.rows.split(",")):
        cells = []
        for name, (d_in, d_out) in shapes.items():
            x = torch.randn(rows, d_in)  # (M, in)
            plain, onednn = compare(nn.Linear(d_in, d_out), x, args.calls, args.repeats)
            cells.append(f"{name} {plain:.3f}/{onednn:.3f} ({plain / onednn:.2f}x)")
        print(f"M={rows:<5} " + "  ".join(cells))
    side = 2048
    square = torch.randn(side, side)
    plain, onednn = compare(nn.Linear(side, side, bias=False), square, 5, args.repeats)
    flops = 2 * side**3
    print(
        f"{side}^3 matmul GFLOP/s: F.linear {flops / plain / 1e6:.0f}, "
        f"packed oneDNN {flops / onednn / 1e6:.0f}"
    )


if __name__ == "__main__":
    main()
