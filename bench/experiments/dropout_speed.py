"""Forward + backward time of one dropout layer on a CPU: nn.Dropout, a bool mask, the project's.

    python bench/experiments/dropout_speed.py
    python bench/experiments/dropout_speed.py --rows 2000 --widths 256 1024 --dtypes bf16 fp32

Four ways to drop the same fraction of a (rows, width) activation, each timed alone and in turn:
`nn.Dropout` (bernoulli_ per element), 16-bit random integers turned into a bool mask applied with
`masked_fill` (the project's first layer), the project's 0/1 multiplier from 16 random bits per
element (its layer until issue 24's sixth round), and `transformer.dropout.Dropout` (the same
multiplier from 8 bits per element wherever p allows: see transformer/dropout.py). The shapes are those of
a training step of the recipe (about 2,000 real target tokens per batch; d_model 256, d_ff 1,024).
Prints milliseconds per call (median of `--repeats` rounds); asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from transformer.device import keep_freed_cpu_memory
from transformer.dropout import Dropout, keep_mask

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def bool_mask_dropout(x: Tensor, p: float) -> Tensor:
    """The project's layer before it multiplied: the same draws, applied through a bool mask."""
    dropped_levels = round(p * 65536)
    words = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64)
    uniform = words.view(torch.int16)[: x.numel()].view(x.shape)
    dropped = uniform < dropped_levels - 32768  # (*x.shape) bool
    return x.masked_fill(dropped, 0.0).mul_(65536 / (65536 - dropped_levels))


def sixteen_bit_dropout(x: Tensor, p: float) -> Tensor:
    """The project's layer with 16 random bits per element, whatever p."""
    dropped_levels = round(p * 65536)
    keep = keep_mask(x.shape, dropped_levels, x.dtype, x.device, bits=16)
    return torch.mul(x, keep).mul_(65536 / (65536 - dropped_levels))


def forward_backward_ms(layer: Callable[[Tensor], Tensor], x: Tensor, calls: int) -> float:
    """Milliseconds per forward + backward of `layer` on a leaf copy of x."""
    leaf = x.detach().clone().requires_grad_()
    grad = torch.randn_like(x)
    start = time.perf_counter()
    for _ in range(calls):
        layer(leaf).backward(grad)
    return (time.perf_counter() - start) / calls * 1e3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="tokens per batch")
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    parser.add_argument("--p", type=float, default=0.1, help="drop probability")
    parser.add_argument("--calls", type=int, default=20, help="calls per timed round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the median is shown")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_cpu_memory(torch.device("cpu"))  # as train.py: no page faults on fresh tensors
    layers: dict[str, Callable[[Tensor], Tensor]] = {
        "nn.Dropout": nn.Dropout(args.p).train(),
        "bool mask": lambda x: bool_mask_dropout(x, args.p),
        "16-bit draws": lambda x: sixteen_bit_dropout(x, args.p),
        "project": Dropout(args.p).train(),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, p {args.p}")
    print(f"{'shape':>14} {'dtype':>5} " + " ".join(f"{name:>12}" for name in layers))
    for dtype_name in args.dtypes:
        for width in args.widths:
            x = torch.randn(args.rows, width, dtype=DTYPES[dtype_name])
            times: dict[str, list[float]] = {name: [] for name in layers}
            for layer in layers.values():
                forward_backward_ms(layer, x, 3)  # warm-up
            for _ in range(args.repeats):  # in turn, so drift hits every layer alike
                for name, layer in layers.items():
                    times[name].append(forward_backward_ms(layer, x, args.calls))
            medians = " ".join(f"{statistics.median(times[name]):9.3f} ms" for name in layers)
            print(f"{str((args.rows, width)):>14} {dtype_name:>5} {medians}")


if __name__ == "__main__":
    main()
