"""Forward + backward of the output projection and the loss: projected chunk by chunk inside the loss
(the project's `projected_loss_sum`) against projecting first and taking the loss of the logits.

    python bench/experiments/output_loss_speed.py
    python bench/experiments/output_loss_speed.py --rows 2176 --vocab 8000 32000 --dtypes bf16 fp32

The shapes are those of a training step of the recipe: about 2,000 real target tokens, d_model
256, a joint vocabulary of 8,000 (32,000 for a larger model's). "logits first" is how the project
trained before issue 24's sixth round: `nn.Linear` writes the (rows, vocab) logits,
`token_loss_sum` (the same chunked loss, on given logits) reads them and keeps their gradient, and
the projection's backward reads that gradient twice (for the states' and the weight's gradients).
bf16 runs under autocast with float32 parameters, as train.py does. The forms run in turn, so drift hits both alike; prints milliseconds
per forward + backward (median of --repeats rounds) and the largest difference between the two
forms' losses; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from transformer.device import keep_freed_cpu_memory
from transformer.training.loss import projected_loss_sum, token_loss_sum

LossForm = Callable[[Tensor, nn.Linear, Tensor], Tensor]
FORMS: dict[str, LossForm] = {
    "logits first": lambda states, projection, labels: token_loss_sum(
        projection(states), labels, 0.1
    ),
    "projected": lambda states, projection, labels: projected_loss_sum(
        states, projection, labels, 0.1
    ),
}


def forward_backward_ms(
    form: LossForm, states: Tensor, projection: nn.Linear, labels: Tensor, bf16: bool, calls: int
) -> tuple[float, float]:
    """(milliseconds per forward + backward, the last loss)."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    start = time.perf_counter()
    for _ in range(calls):
        projection.zero_grad(set_to_none=True)
        states.grad = None
        with autocast:
            loss = form(states, projection, labels)
        (loss / labels.numel()).backward()
    return (time.perf_counter() - start) / calls * 1e3, loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2176, help="real target tokens per batch")
    parser.add_argument("--width", type=int, default=256, help="d_model")
    parser.add_argument("--vocab", type=int, nargs="+", default=[8000, 32000])
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    parser.add_argument("--calls", type=int, default=5, help="calls per timed round")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; the median is shown")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_cpu_memory(torch.device("cpu"))  # as train.py: no page faults on fresh tensors
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, rows {args.rows}")
    print(f"{'vocab':>6} {'dtype':>5} {'logits first':>13} {'projected':>10}", end=" ")
    print(f"{'speed-up':>9} {'loss diff':>10}")
    for vocab in args.vocab:
        generator = torch.Generator().manual_seed(0)
        # The scales of the recipe's trained model (a 60-minute run on Intel AMX, docs/history.md):
        # decoder states of std 1.4, projection weights of std 0.08, so logits of std ~1.5. Far
        # larger logits (std 16 with unit weights) make exp() underflow into denormals and every
        # softmax slow.
        states = 1.4 * torch.randn(args.rows, args.width, generator=generator)
        states.requires_grad_()
        projection = nn.Linear(args.width, vocab)
        with torch.no_grad():
            projection.weight.normal_(0.0, 0.08, generator=generator)
        labels = torch.randint(1, vocab, (args.rows,), generator=generator)
        for dtype in args.dtypes:
            bf16 = dtype == "bf16"
            times: dict[str, list[float]] = {name: [] for name in FORMS}
            losses: dict[str, float] = {}
            for form in FORMS.values():
                forward_backward_ms(form, states, projection, labels, bf16, 1)  # warm-up
            for _ in range(args.repeats):
                for name, form in FORMS.items():
                    ms, losses[name] = forward_backward_ms(
                        form, states, projection, labels, bf16, args.calls
                    )
                    times[name].append(ms)
            before, after = (statistics.median(times[name]) for name in FORMS)
            difference = abs(losses["logits first"] - losses["projected"])
            print(
                f"{vocab:>6} {dtype:>5} {before:10.2f} ms {after:7.2f} ms {before / after:8.2f}x "
                f"{difference:10.2e}"
            )


if __name__ == "__main__":
    main()
