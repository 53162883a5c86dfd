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
output projection's matmul. Measured on 2 cores: `python bench/train_speed.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from transformer.tokenizer import PAD_ID


class _SmoothedCrossEntropySum(torch.autograd.Function):
    """Summed label-smoothed cross entropy of logits (N, V) float32 against labels (N,); rows whose
    label is PAD add nothing."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor, smoothing: float) -> Tensor:
        log_normaliser = logits.logsumexp(dim=-1)  # (N,)
        label_logits = logits.gather(1, labels[:, None]).squeeze(1)  # (N,)
        per_token = log_normaliser - (1 - smoothing) * label_logits  # (N,)
        per_token = per_token - smoothing * logits.mean(dim=-1)  # (N,)
        real = (labels != PAD_ID).to(logits.dtype)  # (N,)
        ctx.save_for_backward(logits, log_normaliser, labels, real)
        ctx.smoothing = smoothing
        return (per_token * real).sum()

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        logits, log_normaliser, labels, real = ctx.saved_tensors
        smoothing, V = ctx.smoothing, logits.size(-1)
        grad = (logits - log_normaliser[:, None]).exp_()  # (N, V) softmax: the one new tensor
        grad.sub_(smoothing / V)
        rows = torch.arange(labels.numel(), device=labels.device)  # (N,)
        grad[rows, labels] -= 1 - smoothing
        grad.mul_((real * grad_output)[:, None])  # PAD rows get no gradient
        return grad, None, None


def token_loss_sum(logits: Tensor, labels: Tensor, label_smoothing: float) -> Tensor:
    """Summed label-smoothed cross entropy over real target tokens (PAD ignored).

    logits (..., V), labels (...) -> scalar: (B, T, V) with (B, T), or packed (N, V) with (N,).
    Computed in float32 whatever the logits' dtype. Summing (rather than averaging) lets the caller
    divide by the token count of a whole accumulated step, so each token weighs the same."""
    flat_logits = logits.reshape(-1, logits.size(-1)).float()  # (N, V)
    return _SmoothedCrossEntropySum.apply(flat_logits, labels.reshape(-1), label_smoothing)


LogitsFunction = Callable[[Tensor, Tensor], Tensor]


def batch_loss_sum(
    token_logits: LogitsFunction,
    src: Tensor,
    tgt_in: Tensor,
    labels: Tensor,
    label_smoothing: float,
) -> Tensor:
    """Summed loss of a teacher-forced batch, computed on its real target tokens only.

    token_logits is `model.token_logits` (or its compiled form): (src, tgt_in) -> (N, V) for the
    N real positions of tgt_in (B, T), which are exactly the real positions of labels (B, T)."""
    logits = token_logits(src, tgt_in)  # (N, V)
    return token_loss_sum(logits, labels[tgt_in != PAD_ID], label_smoothing)
