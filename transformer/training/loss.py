"""The training loss: label-smoothed cross entropy over real target tokens, with its gradient
written out.

Label smoothing (Szegedy et al., 2016) trains towards (1 - eps) on the label and eps spread evenly
over the vocabulary. Per token, with logits z over V words and log-normaliser lse = logsumexp(z):

    loss     = (1 - eps) * (lse - z[label]) + eps * mean_v(lse - z[v])
             = lse - (1 - eps) * z[label] - eps * mean(z)
    gradient = softmax(z) - (1 - eps) * onehot(label) - eps / V

which is what F.cross_entropy(label_smoothing=eps) computes. Autograd would get there through
log_softmax, gather and mean, materialising about six (N, V) tensors per step; the formula above
needs two (the softmax in the backward pass, and logsumexp's scratch in the forward). At 2,000
target tokens x 8,000 words each such tensor is 64 MB, and on a CPU these passes cost more than the
output projection's matmul; so they run on chunks of 128 rows that stay in cache. Measured on 2
cores: `python bench/train_speed.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from transformer.tokenizer import PAD_ID

ROWS_PER_CHUNK = 128  # 128 x 8,000 float32 logits are 4 MB: each chunk stays in cache across passes


class _SmoothedCrossEntropySum(torch.autograd.Function):
    """Summed label-smoothed cross entropy of logits (N, V) against labels (N,); rows whose label
    is PAD add nothing.

    The logits stay in their own dtype (bf16 under autocast); each chunk of rows goes through
    torch's fused `log_softmax` (the forward) and `softmax` (the backward), which read the bf16
    chunk and compute in float32, and every further pass runs while the chunk is in cache.
    Whole-matrix passes read and wrote 64 MB each and made the loss 3.6x slower; `logsumexp` and
    `exp_` on a float32 copy of each chunk were 1.4x slower than the fused kernels."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor, smoothing: float) -> Tensor:
        ctx.dtype = dtype = torch.promote_types(logits.dtype, torch.float32)  # float32 at least
        total = torch.zeros((), dtype=dtype, device=logits.device)
        for rows in _chunks(labels.numel()):
            chunk_labels = labels[rows]  # (n,)
            # per token: lse - (1 - eps) * z[label] - eps * mean(z)
            #          = -(1 - eps) * log_p[label] - eps * mean(log_p)
            log_probs = torch.log_softmax(logits[rows], dim=-1, dtype=dtype)  # (n, V) float32
            label_log_probs = log_probs.gather(1, chunk_labels[:, None]).squeeze(1)  # (n,)
            per_token = -(1 - smoothing) * label_log_probs - smoothing * log_probs.mean(-1)
            total += (per_token * (chunk_labels != PAD_ID)).sum()
        ctx.save_for_backward(logits, labels)
        ctx.smoothing = smoothing
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        logits, labels = ctx.saved_tensors
        smoothing, V = ctx.smoothing, logits.size(-1)
        grad = torch.empty_like(logits)  # (N, V) in the logits' dtype
        for rows in _chunks(labels.numel()):
            chunk_labels = labels[rows]  # (n,)
            # softmax - (1 - eps) * onehot - eps / V, in float32
            chunk = torch.softmax(logits[rows], dim=-1, dtype=ctx.dtype)  # (n, V)
            chunk.sub_(smoothing / V)
            chunk[torch.arange(chunk_labels.numel(), device=labels.device), chunk_labels] -= (
                1 - smoothing
            )
            chunk.mul_(((chunk_labels != PAD_ID) * grad_output)[:, None])  # PAD rows: no gradient
            grad[rows] = chunk
        return grad, None, None


def _chunks(n_rows: int) -> list[slice]:
    return [slice(i, i + ROWS_PER_CHUNK) for i in range(0, n_rows, ROWS_PER_CHUNK)]


def token_loss_sum(logits: Tensor, labels: Tensor, label_smoothing: float) -> Tensor:
    """Summed label-smoothed cross entropy over real target tokens (PAD ignored).

    logits (..., V), labels (...) -> scalar: (B, T, V) with (B, T), or packed (N, V) with (N,).
    Computed in float32 whatever the logits' dtype. Summing (rather than averaging) lets the caller
    divide by the token count of a whole accumulated step, so each token weighs the same."""
    flat_logits = logits.reshape(-1, logits.size(-1))  # (N, V)
    return _SmoothedCrossEntropySum.apply(flat_logits, labels.reshape(-1), label_smoothing)


LogitsFunction = Callable[[Tensor, Tensor], Tensor]  # (src, tgt_in) -> logits (R, V)


def batch_loss_sum(
    token_logits: LogitsFunction,
    src: Tensor,
    tgt_in: Tensor,
    labels: Tensor,
    label_smoothing: float,
) -> Tensor:
    """Summed loss of a teacher-forced batch, computed on its real target tokens only.

    token_logits is `model.token_logits` (or its compiled form): (src, tgt_in) -> (R, V) whose
    first N rows are the N real positions of tgt_in (B, T), which are exactly the real positions
    of labels (B, T); any further rows (the extra rows that round R up) get PAD labels: no loss."""
    logits = token_logits(src, tgt_in)  # (R, V)
    real_labels = labels[tgt_in != PAD_ID]  # (N,)
    row_labels = F.pad(real_labels, (0, logits.size(0) - real_labels.numel()), value=PAD_ID)
    return token_loss_sum(logits, row_labels, label_smoothing)  # (R,) labels
