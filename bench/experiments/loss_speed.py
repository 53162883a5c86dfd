"""Forward + backward of the training loss on a step's logits: the project's against its earlier form.

    python bench/experiments/loss_speed.py
    python bench/experiments/loss_speed.py --rows 2000 --vocab 8000 12000 --dtypes bf16 fp32

`transformer.training.loss.token_loss_sum` (label-smoothed cross entropy, 128-row chunks, each
through torch's fused `log_softmax` / `softmax` reading the logits' own dtype) against the form it
replaced on 2026-12-02, kept here as the reference: the same chunks, but each converted to a float32
copy first and then `logsumexp` (forward) and `sub` + `exp_` (backward). Random logits of a
step's shape ((rows, vocabulary), ~2,000 real target tokens per 4,096-token batch), 5% PAD labels.
Prints milliseconds per forward + backward (median of --repeats rounds, the two forms in turn) and
the largest difference between their losses and gradients; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torch import Tensor

from transformer.tokenization.tokenizer import PAD_ID
from transformer.training.loss import ROWS_PER_CHUNK, token_loss_sum

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class _EarlierSmoothedCrossEntropySum(torch.autograd.Function):
    """The loss as it was before 2026-12-02: float32 copies, logsumexp, exp_."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor, smoothing: float) -> Tensor:
        ctx.dtype = dtype = torch.promote_types(logits.dtype, torch.float32)
        total = torch.zeros((), dtype=dtype)
        log_normaliser = torch.empty(labels.shape, dtype=dtype)
        for start in range(0, labels.numel(), ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            z, chunk_labels = logits[rows].to(dtype), labels[rows]  # (n, V), (n,)
            chunk_normaliser = z.logsumexp(dim=-1)  # (n,)
            label_logits = z.gather(1, chunk_labels[:, None]).squeeze(1)  # (n,)
            per_token = chunk_normaliser - (1 - smoothing) * label_logits - smoothing * z.mean(-1)
            total += (per_token * (chunk_labels != PAD_ID)).sum()
            log_normaliser[rows] = chunk_normaliser
        ctx.save_for_backward(logits, log_normaliser, labels)
        ctx.smoothing = smoothing
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        logits, log_normaliser, labels = ctx.saved_tensors
        smoothing, V = ctx.smoothing, logits.size(-1)
        grad = torch.empty_like(logits)
        for start in range(0, labels.numel(), ROWS_PER_CHUNK):
            rows = slice(start, start + ROWS_PER_CHUNK)
            chunk_labels = labels[rows]
            chunk = torch.sub(logits[rows].to(ctx.dtype), log_normaliser[rows, None]).exp_()
            chunk.sub_(smoothing / V)
            chunk[torch.arange(chunk_labels.numel()), chunk_labels] -= 1 - smoothing
            chunk.mul_(((chunk_labels != PAD_ID) * grad_output)[:, None])
            grad[rows] = chunk
        return grad, None, None


def forward_backward(loss_sum: Any, logits: Tensor, labels: Tensor) -> tuple[float, Tensor, Tensor]:
    """Seconds of one forward + backward, the loss and the gradient."""
    leaf = logits.detach().requires_grad_()
    start = time.perf_counter()
    loss = loss_sum(leaf, labels, 0.1)
    loss.backward()
    return time.perf_counter() - start, loss.detach(), leaf.grad


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="real target tokens per batch")
    parser.add_argument("--vocab", type=int, nargs="+", default=[8000, 12000])
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    parser.add_argument("--calls", type=int, default=10, help="calls per timed round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the median is shown")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    forms = {"earlier": _EarlierSmoothedCrossEntropySum.apply, "project": token_loss_sum}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rows} rows")
    print(
        f"{'logits':>16} {'dtype':>5} {'earlier ms':>11} {'project ms':>11} {'ratio':>6} "
        f"{'loss diff':>10} {'grad diff':>10}"
    )
    generator = torch.Generator().manual_seed(0)
    for dtype_name in args.dtypes:
        for vocab in args.vocab:
            logits = (3 * torch.randn(args.rows, vocab, generator=generator)).to(DTYPES[dtype_name])
            labels = torch.randint(4, vocab, (args.rows,), generator=generator)
            labels[torch.rand(args.rows, generator=generator) < 0.05] = PAD_ID
            times: dict[str, list[float]] = {name: [] for name in forms}
            results = {name: forward_backward(form, logits, labels) for name, form in forms.items()}
            for _ in range(args.repeats):  # in turn, so drift hits both alike
                for name, form in forms.items():
                    taken = [forward_backward(form, logits, labels)[0] for _ in range(args.calls)]
                    times[name].append(sum(taken) / len(taken))
            earlier, project = (statistics.median(times[name]) * 1e3 for name in forms)
            loss_diff = (results["earlier"][1] - results["project"][1]).abs().item()
            grad_diff = (results["earlier"][2].float() - results["project"][2].float()).abs().max()
            print(
                f"{str((args.rows, vocab)):>16} {dtype_name:>5} {earlier:11.2f} {project:11.2f} "
                f"{earlier / project:5.2f}x {loss_diff:10.2e} {grad_diff.item():10.2e}"
            )


if __name__ == "__main__":
    main()
