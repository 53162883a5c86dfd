"""The training loss: label-smoothed cross entropy over real target tokens, with its gradient
written out, computed together with the output projection so that the (tokens x vocabulary)
logits are never written whole (only their gradient is).

Label smoothing (Szegedy et al., 2016) trains towards (1 - eps) on the label and eps spread evenly
over the vocabulary. Per token, with logits z over V words and log-normaliser lse = logsumexp(z):

    loss     = (1 - eps) * (lse - z[label]) + eps * mean_v(lse - z[v])
             = lse - (1 - eps) * z[label] - eps * mean(z)
    gradient = softmax(z) - (1 - eps) * onehot(label) - eps / V

which is what F.cross_entropy(label_smoothing=eps) computes. Autograd would get there through
log_softmax, gather and mean, materialising about six (N, V) tensors per step. At 2,000 target
tokens x 8,000 words each such tensor is 64 MB, and on a CPU these passes cost more than the output
projection's matmul; so everything runs on chunks of 128 rows that stay in cache.

The output projection runs chunk by chunk too (`projected_loss_sum`): each chunk's logits are made,
turned into the loss and its gradient, and multiplied back through the projection (the states'
gradient) while in cache; the gradient is kept for the projection's weight gradient, one matmul in
the backward. Projecting first wrote the whole logits, read them in the loss's forward and
backward, wrote their gradient and read it in two matmuls: against that, whole training steps of
the recipe were 1.04x faster in bf16 and 1.08x in float32 on a 2-core Intel Xeon (AMX), 1.14x in
both with a 32,000-word vocabulary (issue 24, sixth round, docs/history.md).

The gradient is made in the forward pass: a training loss is differentiated once, and the chunk is
in cache then. The backward only scales it by the incoming gradient (a number). Without autograd
(validation) only the loss is computed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.tokenization.tokenizer import PAD_ID

ROWS_PER_CHUNK = 128  # 128 x 8,000 float32 logits are 4 MB: each chunk stays in cache across passes


def _chunks(n_rows: int) -> list[slice]:
    return [slice(i, i + ROWS_PER_CHUNK) for i in range(0, n_rows, ROWS_PER_CHUNK)]


def _chunk_loss_and_gradient(
    logits: Tensor, labels: Tensor, smoothing: float, with_gradient: bool
) -> tuple[Tensor, Tensor | None]:
    """Summed smoothed cross entropy of one chunk's logits (n, V) against labels (n,) (PAD rows
    count nothing), and, when asked, its gradient (n, V) (PAD rows: zeros). Computed in float32 at
    least, whatever the logits' dtype, by torch's fused log_softmax, which reads bf16 directly."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    log_probs = torch.log_softmax(logits, dim=-1, dtype=dtype)  # (n, V)
    real = labels != PAD_ID  # (n,)
    # per token: lse - (1 - eps) * z[label] - eps * mean(z)
    #          = -(1 - eps) * log_p[label] - eps * mean(log_p)
    label_log_probs = log_probs.gather(1, labels[:, None]).squeeze(1)  # (n,)
    per_token = -(1 - smoothing) * label_log_probs - smoothing * log_probs.mean(-1)
    loss = (per_token * real).sum()
    if not with_gradient:
        return loss, None
    # softmax - (1 - eps) * onehot - eps / V, reusing the log-probabilities' memory
    gradient = log_probs.exp_().sub_(smoothing / logits.size(-1))  # (n, V)
    gradient[torch.arange(labels.numel(), device=labels.device), labels] -= 1 - smoothing
    return loss, gradient.mul_(real[:, None])


class _SmoothedCrossEntropySum(torch.autograd.Function):
    """Summed label-smoothed cross entropy of given logits (N, V) against labels (N,): for any
    model's logits (the peers in bench/train_speed.py, the tests). The gradient, in the logits'
    dtype, is made in the forward pass and kept for the backward."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor, smoothing: float) -> Tensor:
        loss_dtype = torch.promote_types(logits.dtype, torch.float32)
        total = torch.zeros((), dtype=loss_dtype, device=logits.device)
        gradient = torch.empty_like(logits) if ctx.needs_input_grad[0] else None  # (N, V)
        for rows in _chunks(labels.numel()):
            loss, chunk_gradient = _chunk_loss_and_gradient(
                logits[rows], labels[rows], smoothing, gradient is not None
            )
            total += loss
            if gradient is not None:
                gradient[rows] = chunk_gradient
        ctx.gradient = gradient
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        return ctx.gradient * grad_output.to(ctx.gradient.dtype), None, None


class _ProjectedSmoothedCrossEntropySum(torch.autograd.Function):
    """Summed label-smoothed cross entropy of the logits states @ weight^T + bias (N, V) against
    labels (N,), made chunk by chunk (see the module docstring); the matmuls run in `dtype` (bf16
    under autocast), the loss and its gradient in float32 at least. bias may be None."""

    @staticmethod
    def forward(
        ctx: Any,
        states: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        labels: Tensor,
        smoothing: float,
        dtype: torch.dtype,
    ) -> Tensor:
        x, w = states.to(dtype), weight.to(dtype)  # (N, D), (V, D)
        b = None if bias is None else bias.to(dtype)  # (V,)
        loss_dtype = torch.promote_types(dtype, torch.float32)
        with_gradient = any(ctx.needs_input_grad[:3])
        grad_bias = None  # (V,), summed chunk by chunk while each chunk's gradient is in cache
        if with_gradient:
            grad_states = torch.empty_like(x)  # (N, D)
            grad_logits = torch.empty(x.size(0), w.size(0), dtype=dtype, device=x.device)  # (N, V)
            if ctx.needs_input_grad[2]:
                grad_bias = torch.zeros(w.size(0), dtype=loss_dtype, device=x.device)
        total = torch.zeros((), dtype=loss_dtype, device=x.device)
        for rows in _chunks(labels.numel()):
            logits = x[rows] @ w.t() if b is None else torch.addmm(b, x[rows], w.t())  # (n, V)
            loss, gradient = _chunk_loss_and_gradient(
                logits, labels[rows], smoothing, with_gradient
            )
            total += loss
            if with_gradient:
                if grad_bias is not None:
                    grad_bias += gradient.sum(0)
                grad_logits[rows] = gradient  # (n, V), converted to dtype
                torch.mm(grad_logits[rows], w, out=grad_states[rows])  # (n, D)
        if with_gradient:
            ctx.saved = grad_states, grad_logits, grad_bias, x
            ctx.dtypes = states.dtype, weight.dtype, None if bias is None else bias.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grad_states, grad_logits, grad_bias, x = ctx.saved
        states_dtype, weight_dtype, bias_dtype = ctx.dtypes
        scale = grad_output  # the gradient is linear in it: scale the small results, not (N, V)
        # One matmul over all rows; reading grad_logits transposed cost less than writing it so
        grad_weight = (grad_logits.t() @ x).to(weight_dtype).mul_(scale)  # (V, D)
        return (
            grad_states.to(states_dtype) * scale,  # out of place: the saved gradient stays as is
            grad_weight,
            None if grad_bias is None else grad_bias.to(bias_dtype) * scale,
            None,
            None,
            None,
        )


def token_loss_sum(logits: Tensor, labels: Tensor, label_smoothing: float) -> Tensor:
    """Summed label-smoothed cross entropy over real target tokens (PAD ignored).

    logits (..., V), labels (...) -> scalar: (B, T, V) with (B, T), or packed (N, V) with (N,).
    Computed in float32 whatever the logits' dtype. Summing (rather than averaging) lets the caller
    divide by the token count of a whole accumulated step, so each token weighs the same."""
    flat_logits = logits.reshape(-1, logits.size(-1))  # (N, V)
    return _SmoothedCrossEntropySum.apply(flat_logits, labels.reshape(-1), label_smoothing)


def projected_loss_sum(
    states: Tensor, projection: nn.Linear, labels: Tensor, label_smoothing: float
) -> Tensor:
    """token_loss_sum(projection(states), labels, label_smoothing) without the logits: states
    (N, D), labels (N,) -> scalar in float32. The matmuls run in the autocast dtype when autocast
    is on (bf16 on a CPU), else in the states' dtype."""
    device_type = states.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    else:
        dtype = torch.promote_types(states.dtype, projection.weight.dtype)
    with torch.autocast(device_type, enabled=False):  # the dtypes are set explicitly inside
        return _ProjectedSmoothedCrossEntropySum.apply(
            states, projection.weight, projection.bias, labels, label_smoothing, dtype
        )


StatesFunction = Callable[[Tensor, Tensor], Tensor]  # (src, tgt_in) -> decoder states (R, D)


def batch_loss_sum(
    token_states: StatesFunction,
    projection: nn.Linear,
    src: Tensor,
    tgt_in: Tensor,
    labels: Tensor,
    label_smoothing: float,
) -> Tensor:
    """Summed loss of a teacher-forced batch, computed on its real target tokens only.

    token_states is `model.token_states` (or its compiled or DDP form): (src, tgt_in) -> (R, D)
    whose first N rows are the decoder's final states at the N real positions of tgt_in (B, T),
    which are exactly the real positions of labels (B, T); any further rows (the extra rows that
    round R up) get PAD labels: no loss. projection is the model's output layer
    (`model.projection.linear`)."""
    states = token_states(src, tgt_in)  # (R, D)
    real_labels = labels[tgt_in != PAD_ID]  # (N,)
    row_labels = F.pad(real_labels, (0, states.size(0) - real_labels.numel()), value=PAD_ID)
    return projected_loss_sum(states, projection, row_labels, label_smoothing)  # (R,) labels
