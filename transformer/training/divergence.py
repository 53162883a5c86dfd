"""The divergence guard: a step whose loss or gradient is not finite, or whose loss has exploded, is
not applied, and a run that keeps producing such steps stops with a clear message instead of
writing NaN (or useless) weights to disk.

Exploded: more than EXPLODED_LOSS_PER_TOKEN per target token. A model that guesses uniformly over
V words scores ln(V) (9 for 8,000), and training only goes down from there; 1,000 means the right
word's logit sits ~1,000 below the best one's. A far too high learning rate gets there while every
number stays finite (the loss's log-softmax and attention's softmax subtract the row maximum), so
looking for NaN alone would let such a run train on to its end (lr=1e4 on the tiny recipe: 1e8 per
token by step 40, all finite).

Why this policy. fairseq raises `FloatingPointError("gradients are Nan/Inf")` on the first
non-finite fp32 gradient norm (checking it on the host every step), and in fp16 skips overflowing
updates while it halves the loss scale, giving up ("Minimum loss scale reached ... your loss is
probably exploding") once the scale has fallen ~20 times. We do the fp16 thing in every precision:
one bad batch (a rare spike) costs one skipped step instead of the run, while a run that has truly
diverged produces bad steps in a row and stops after `train.max_bad_steps` of them.

Without a host sync per step. The check is a flag tensor computed on the device; AdamW's fused
kernel takes it as `found_inf` (the GradScaler protocol) and leaves the weights, the moments and its
step count untouched when it is set. The counters stay on the device too and are read only where
the loop already syncs: at each logging window and before every checkpoint.

Under DDP the flag is all-reduced, so every rank skips the same steps: DDP's gradient all-reduce
already spreads a NaN to every rank's gradient norm, but the loss is each rank's own.
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm import tqdm

from transformer.training import distributed

EXPLODED_LOSS_PER_TOKEN = 1000.0


class DivergenceError(RuntimeError):
    """Training produced `train.max_bad_steps` non-finite steps in a row; the message says what
    to try."""


class DivergenceGuard:
    """Counts non-finite steps on the device; `check` reads the counts and stops a diverged run."""

    def __init__(self, max_bad_steps: int, device: torch.device) -> None:
        self.max_bad_steps = max_bad_steps
        self.in_a_row = torch.zeros((), dtype=torch.int64, device=device)
        self.total = torch.zeros((), dtype=torch.int64, device=device)
        self.reported_total = 0

    def bad_step_flag(self, loss_sum: Tensor, grad_norm: Tensor, tokens: int) -> Tensor:
        """1.0 when this step's loss or gradient norm is NaN/inf, or its loss over `tokens` target
        tokens has exploded, else 0.0 (float32, on the device: the `found_inf` an optimizer with
        `_step_supports_amp_scaling` expects)."""
        exploded = loss_sum > EXPLODED_LOSS_PER_TOKEN * max(1, tokens)
        bad = ~(torch.isfinite(loss_sum) & torch.isfinite(grad_norm)) | exploded  # () bool
        if distributed.is_distributed():  # the loss is per rank: every rank must skip alike
            bad = distributed.sum_across_ranks(bad.float()) > 0
        self.in_a_row.add_(1).mul_(bad)  # +1 on a bad step, back to 0 on a good one
        self.total.add_(bad)
        return bad.float()

    def check(self, step: int) -> None:
        """One host sync: warn about newly skipped steps; raise DivergenceError past the limit."""
        in_a_row, total = torch.stack([self.in_a_row, self.total]).tolist()
        if total > self.reported_total:
            tqdm.write(
                f"step {step}: skipped {total - self.reported_total} update(s) with a non-finite "
                f"or exploded loss or gradient ({total} so far in this process)"
            )
            self.reported_total = total
        if in_a_row >= self.max_bad_steps:
            raise DivergenceError(
                f"training diverged: the last {in_a_row} steps (up to step {step}) had a "
                "non-finite loss or gradient, or a loss above "
                f"{EXPLODED_LOSS_PER_TOKEN:g} per token, and were skipped (train.max_bad_steps="
                f"{self.max_bad_steps}); the checkpoints on disk hold finite weights. Lower "
                "train.lr or raise train.warmup_steps and start a new run"
            )


def step_unless_bad(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, bad_step: Tensor
) -> None:
    """One optimizer step that changes nothing when `bad_step` is 1.0, decided on the device.

    With fp16 the GradScaler already finds inf/NaN gradients and hands its own `found_inf` to the
    optimizer (it sees the same gradients, so it skips the same steps). Otherwise we hand ours,
    through the same attribute: fused AdamW reads `found_inf` and skips its whole update."""
    if scaler.is_enabled():
        scaler.step(optimizer)
        return
    optimizer.found_inf = bad_step  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf  # type: ignore[attr-defined]
