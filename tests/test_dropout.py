"""The fast CPU dropout: nn.Dropout's behaviour from random bits instead of bernoulli_."""

from __future__ import annotations

import pytest
import torch

from transformer.dropout import Dropout, drop_levels, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.3, 0.01])
def test_drops_the_right_fraction_and_keeps_the_mean(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = Dropout(p).train()(x)
    bits, dropped_levels = drop_levels(p)
    rounded_p = dropped_levels / 2**bits  # 0.1 -> 26/256, 0.3 -> 77/256, 0.01 -> 655/65536
    assert abs(rounded_p - p) <= 0.02 * p
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - rounded_p) < 0.005 * max(
        p, 0.1
    )  # 400,000 draws: the standard error is < 0.001
    assert abs(y.mean().item() - 1.0) < 0.01  # kept elements are scaled by 1 / (1 - rounded p)
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - rounded_p)), rtol=1e-6)


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
@pytest.mark.parametrize(
    ("bits", "dropped_levels"), [(16, 1), (16, 655), (16, 65535), (8, 1), (8, 26), (8, 255)]
)
def test_the_mask_is_the_comparison_of_the_random_integers_with_the_threshold(
    dtype: torch.dtype, bits: int, dropped_levels: int
) -> None:
    """The 0/1 multiplier built with integer arithmetic drops exactly the elements whose 8- or
    16-bit integer is below the threshold, in every float dtype, at both ends of the range."""
    shape, per_word = torch.Size([37, 129]), 64 // bits
    torch.manual_seed(5)
    words = torch.randint(-(2**63), 2**63 - 1, (-(-shape.numel() // per_word),), dtype=torch.int64)
    uniform = words.view({8: torch.int8, 16: torch.int16}[bits])[: shape.numel()].view(shape)
    expected_keep = uniform >= dropped_levels - 2 ** (bits - 1)
    torch.manual_seed(5)
    keep = keep_mask(shape, dropped_levels, dtype, torch.device("cpu"), bits)
    assert keep.dtype == dtype
    assert torch.equal(keep, expected_keep.to(dtype))
    p = dropped_levels / 2**bits
    assert drop_levels(p) == (bits, dropped_levels)  # so Dropout(p) draws this very mask
    x = torch.randn(shape, dtype=dtype)
    torch.manual_seed(5)
    y = Dropout(p).train()(x)
    assert torch.equal(
        y, x.masked_fill(~expected_keep, 0.0) * (2**bits / (2**bits - dropped_levels))
    )


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.1, (8, 26)),
        (0.2, (8, 51)),
        (0.3, (8, 77)),
        (0.5, (8, 128)),
        (0.9, (8, 230)),
        (0.01, (16, 655)),
        (0.99, (16, 64881)),
        (1 / 65536, (16, 1)),
        (1.0, (8, 256)),
    ],
)
def test_eight_random_bits_where_they_move_p_and_1_minus_p_by_at_most_two_percent(
    p: float, expected: tuple[int, int]
) -> None:
    assert drop_levels(p) == expected
    bits, dropped = drop_levels(p)
    assert abs(dropped / 2**bits - p) <= 0.02 * min(p, 1 - p) or bits == 16
