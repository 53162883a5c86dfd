"""The fast CPU dropout: nn.Dropout's behaviour from random bits instead of bernoulli_."""

from __future__ import annotations

import pytest
import torch

from transformer.dropout import Dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_drops_the_right_fraction_and_keeps_the_mean(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = Dropout(p).train()(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.005  # 400,000 draws: the standard error is < 0.001
    assert abs(y.mean().item() - 1.0) < 0.01  # kept elements are scaled by 1 / (1 - p)
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)), rtol=1e-4)


def test_eval_and_zero_probability_are_the_identity() -> None:
    x = torch.randn(5, 7)
    assert torch.equal(Dropout(0.2).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_gradient_flows_through_the_kept_elements_only() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 33, dtype=torch.bfloat16, requires_grad=True)
    y = Dropout(0.25).train()(x)
    y.sum().backward()
    kept = y != 0
    assert torch.all(x.grad[~kept] == 0)
    scale = torch.full_like(x.grad[kept].float(), 1 / 0.75)
    assert torch.allclose(x.grad[kept].float(), scale, rtol=1e-2)  # 1/0.75 in bf16


def test_the_seed_fixes_the_masks_and_different_draws_differ() -> None:
    layer, x = Dropout(0.5).train(), torch.ones(10, 100)
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    assert not torch.equal(first, second)


def test_a_probability_that_rounds_to_one_drops_everything() -> None:
    x = torch.ones(4, 5)
    assert torch.equal(Dropout(0.999999).train()(x), torch.zeros_like(x))
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("p", [1 / 65536, 0.1, 65535 / 65536])
def test_the_mask_is_the_comparison_of_the_random_integers_with_the_threshold(
    dtype: torch.dtype, p: float
) -> None:
    """The 0/1 multiplier built with integer arithmetic drops exactly the elements whose 16-bit
    integer is below the threshold, in every float dtype, at both ends of the probability range."""
    shape, dropped_levels = torch.Size([37, 129]), round(p * 65536)
    torch.manual_seed(5)
    words = torch.randint(-(2**63), 2**63 - 1, ((shape.numel() + 3) // 4,), dtype=torch.int64)
    uniform = words.view(torch.int16)[: shape.numel()].view(shape)
    expected_keep = uniform >= dropped_levels - 32768
    torch.manual_seed(5)
    keep = keep_mask(shape, dropped_levels, dtype, torch.device("cpu"))
    assert keep.dtype == dtype
    assert torch.equal(keep, expected_keep.to(dtype))
    x = torch.randn(shape, dtype=dtype)
    torch.manual_seed(5)
    y = Dropout(p).train()(x)
    assert torch.equal(y, x.masked_fill(~expected_keep, 0.0) * (65536 / (65536 - dropped_levels)))
