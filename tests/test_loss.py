"""The training loss with the output projection inside it: the numbers of projecting first and then
taking torch's label-smoothed cross entropy, without the (tokens x vocabulary) logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transformer.training.loss import ROWS_PER_CHUNK, projected_loss_sum, token_loss_sum

PAD = 0


def states_projection_labels(
    rows: int, width: int = 12, vocab: int = 50, bias: bool = True
) -> tuple[torch.Tensor, nn.Linear, torch.Tensor]:
    """Random states (rows, width) that need a gradient, a projection to `vocab` words, and labels
    with padding across the first chunk boundary."""
    generator = torch.Generator().manual_seed(7)
    states = torch.randn(rows, width, generator=generator, requires_grad=True)
    projection = nn.Linear(width, vocab, bias=bias)
    with torch.no_grad():
        projection.weight.copy_(torch.randn(vocab, width, generator=generator))
        if bias:
            projection.bias.copy_(torch.randn(vocab, generator=generator))
    labels = torch.randint(1, vocab, (rows,), generator=generator)
    labels[ROWS_PER_CHUNK - 3 : ROWS_PER_CHUNK + 5] = PAD
    return states, projection, labels


def reference_loss(
    states: torch.Tensor, projection: nn.Linear, labels: torch.Tensor, smoothing: float
) -> torch.Tensor:
    return F.cross_entropy(
        projection(states), labels, ignore_index=PAD, label_smoothing=smoothing, reduction="sum"
    )


def gradients(loss: torch.Tensor, states: torch.Tensor, projection: nn.Linear) -> list:
    return list(torch.autograd.grad(loss, [states, *projection.parameters()]))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_projecting_then_torch_cross_entropy_with_every_gradient(
    smoothing: float, bias: bool
) -> None:
    states, projection, labels = states_projection_labels(2 * ROWS_PER_CHUNK + 37, bias=bias)
    ours = projected_loss_sum(states, projection, labels, smoothing)
    expected = reference_loss(states, projection, labels, smoothing)
    torch.testing.assert_close(ours, expected)
    # divided, as training divides by its token count: the backward scales by the incoming number
    for got, want in zip(
        gradients(ours / 7, states, projection),
        gradients(expected / 7, states, projection),
        strict=True,
    ):
        torch.testing.assert_close(got, want)


def test_padding_rows_get_no_gradient_and_a_second_backward_gives_the_same() -> None:
    states, projection, labels = states_projection_labels(ROWS_PER_CHUNK + 20)
    loss = projected_loss_sum(states, projection, labels, 0.1)
    (first,) = torch.autograd.grad(loss, states, retain_graph=True)
    (second,) = torch.autograd.grad(loss * 2, states)
    assert torch.all(first[labels == PAD] == 0)
    assert torch.all(first[labels != PAD].abs().sum(-1) > 0)
    torch.testing.assert_close(second, 2 * first)


def test_under_bf16_autocast_equals_the_loss_of_bf16_logits_with_float32_gradients() -> None:
    """Under autocast the matmuls run in bf16, as the projection would; the loss is float32 and
    the parameters' gradients come back in their own dtype (float32)."""
    states, projection, labels = states_projection_labels(2 * ROWS_PER_CHUNK + 37, width=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = projected_loss_sum(states, projection, labels, 0.1)
        logits = projection(states)  # (N, V) bf16
        expected = token_loss_sum(logits, labels, 0.1)
    assert logits.dtype == torch.bfloat16 and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=1e-3, atol=1e-3)
    ours_gradients = gradients(ours, states, projection)
    float32_gradients = gradients(
        reference_loss(states, projection, labels, 0.1), states, projection
    )
    for got, want in zip(ours_gradients, float32_gradients, strict=True):
        assert got.dtype == torch.float32
        assert torch.linalg.vector_norm(got - want) < 0.05 * torch.linalg.vector_norm(want)


def test_without_gradients_it_is_the_loss_alone() -> None:
    states, projection, labels = states_projection_labels(ROWS_PER_CHUNK + 1)
    expected = reference_loss(states, projection, labels, 0.0)
    with torch.inference_mode():
        ours = projected_loss_sum(states, projection, labels, 0.0)
    assert not ours.requires_grad
    torch.testing.assert_close(ours, expected.detach())
