"""TokenBatchSampler: coverage, token budget, seeded order, exact resume, DDP sharding."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer.data.batching import TokenBatchSampler, make_loader
from transformer.data.loading import EncodedSplit

MAX_TOKENS = 200


@pytest.fixture(scope="module")
def lengths() -> tuple[list[int], list[int]]:
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(1, 30, (500,), generator=generator)
    tgt = (src + torch.randint(-3, 4, (500,), generator=generator)).clamp(min=1)
    return src.tolist(), tgt.tolist()


def padded_size(batch: list[int], src: list[int], tgt: list[int]) -> int:
    """What the sampler budgets: padded source plus padded target with its BOS/EOS slot."""
    return len(batch) * (max(src[i] for i in batch) + max(tgt[i] for i in batch) + 1)


def epoch(sampler: TokenBatchSampler, number: int) -> list[list[int]]:
    sampler.set_epoch(number)
    return list(sampler)


def test_every_sentence_once_per_epoch_within_budget(lengths) -> None:
    src, tgt = lengths
    sampler = TokenBatchSampler(src, tgt, MAX_TOKENS, seed=1)
    for number in range(3):
        batches = epoch(sampler, number)
        assert len(batches) == len(sampler)
        assert sorted(i for batch in batches for i in batch) == list(range(len(src)))
        assert all(padded_size(batch, src, tgt) <= MAX_TOKENS for batch in batches)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=60),
    st.integers(1, 120),
    st.booleans(),
)
def test_budget_and_coverage_for_any_lengths(pairs, max_tokens: int, shuffle: bool) -> None:
    src, tgt = [s for s, _ in pairs], [t for _, t in pairs]
    batches = list(TokenBatchSampler(src, tgt, max_tokens, shuffle=shuffle))
    assert sorted(i for batch in batches for i in batch) == list(range(len(pairs)))
    for batch in batches:  # over budget only as a batch of one
        assert padded_size(batch, src, tgt) <= max_tokens or len(batch) == 1


def test_sentence_over_budget_gets_its_own_batch() -> None:
    sampler = TokenBatchSampler([5, 5, 50, 5], [5, 5, 50, 5], 40, shuffle=False)
    batches = list(sampler)
    assert [2] in batches
    assert sorted(i for batch in batches for i in batch) == [0, 1, 2, 3]


def test_batches_group_similar_lengths(lengths) -> None:
    src, tgt = lengths
    batches = list(TokenBatchSampler(src, tgt, MAX_TOKENS, seed=0))
    spread = [max(src[i] for i in b) - min(src[i] for i in b) for b in batches]
    assert sum(spread) / len(spread) <= 1.0


def test_same_seed_same_order_and_epochs_differ(lengths) -> None:
    src, tgt = lengths
    first = TokenBatchSampler(src, tgt, MAX_TOKENS, seed=7)
    second = TokenBatchSampler(src, tgt, MAX_TOKENS, seed=7)
    assert epoch(first, 0) == epoch(second, 0)
    assert epoch(first, 1) == epoch(second, 1)
    assert epoch(first, 0) != epoch(first, 1)
    other_seed = TokenBatchSampler(src, tgt, MAX_TOKENS, seed=8)
    assert epoch(other_seed, 0) != epoch(first, 0)


def test_unshuffled_is_length_ordered_and_stable(lengths) -> None:
    src, tgt = lengths
    sampler = TokenBatchSampler(src, tgt, MAX_TOKENS, shuffle=False)
    batches = epoch(sampler, 0)
    assert batches == epoch(sampler, 5)
    flat = [i for batch in batches for i in batch]
    assert [src[i] for i in flat] == sorted(src[i] for i in flat)


def test_resume_mid_epoch_gives_identical_remaining_batches(lengths) -> None:
    src, tgt = lengths
    sampler = TokenBatchSampler(src, tgt, MAX_TOKENS, seed=3)
    sampler.set_epoch(2)
    iterator = iter(sampler)
    done = [next(iterator) for _ in range(5)]
    state = sampler.state_dict()
    remaining = list(iterator)

    resumed = TokenBatchSampler(src, tgt, MAX_TOKENS, seed=3)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the training loop's per-epoch call keeps the resumed position
    assert list(resumed) == remaining
    assert done + remaining == epoch(TokenBatchSampler(src, tgt, MAX_TOKENS, seed=3), 2)
    assert resumed.state_dict()["epoch"] == 3  # a finished epoch moves on by itself


def test_resume_through_the_data_loader(lengths) -> None:
    src, tgt = lengths
    split = EncodedSplit([[5] * s for s in src], [[6] * t for t in tgt])
    sampler = TokenBatchSampler(split.src_lengths, split.tgt_lengths, MAX_TOKENS, seed=3)
    loader = iter(make_loader(split, sampler))
    for _ in range(4):
        next(loader)
    state = sampler.state_dict()
    remaining = [batch.indices.tolist() for batch in loader]

    resumed = TokenBatchSampler(split.src_lengths, split.tgt_lengths, MAX_TOKENS, seed=3)
    resumed.load_state_dict(state)
    assert [batch.indices.tolist() for batch in make_loader(split, resumed)] == remaining


def test_state_from_other_batching_is_rejected(lengths) -> None:
    src, tgt = lengths
    state = TokenBatchSampler(src, tgt, MAX_TOKENS).state_dict()
    with pytest.raises(ValueError, match="batches per epoch"):
        TokenBatchSampler(src, tgt, MAX_TOKENS * 2).load_state_dict(state)


@pytest.mark.parametrize("world_size", [2, 3, 7])
def test_ranks_are_disjoint_cover_everything_and_agree_on_length(lengths, world_size) -> None:
    src, tgt = lengths
    single = TokenBatchSampler(src, tgt, MAX_TOKENS, seed=5)
    ranks = [
        TokenBatchSampler(src, tgt, MAX_TOKENS, seed=5, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    per_rank = [epoch(sampler, 1) for sampler in ranks]
    assert {len(batches) for batches in per_rank} == {len(ranks[0])}
    all_batches = [tuple(batch) for batches in per_rank for batch in batches]
    repeats = len(all_batches) - len(single)
    assert 0 <= repeats < world_size
    counts = Counter(all_batches)  # every batch of the epoch, plus a few repeated for padding
    assert set(counts) == {tuple(batch) for batch in epoch(single, 1)}
    assert sum(count - 1 for count in counts.values()) == repeats


def test_fewer_batches_than_ranks() -> None:
    ranks = [TokenBatchSampler([3], [3], 100, rank=r, world_size=4) for r in range(4)]
    assert [list(sampler) for sampler in ranks] == [[[0]]] * 4


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="rank"):
        TokenBatchSampler([1], [1], 10, rank=2, world_size=2)
    with pytest.raises(ValueError, match="max_tokens"):
        TokenBatchSampler([1], [1], 0)


def pair_by_pair_bounds(src: list[int], tgt: list[int], max_tokens: int) -> list[tuple[int, int]]:
    """The greedy fill written one pair at a time (the sampler computes it one run at a time)."""
    bounds, start, max_src, max_tgt = [], 0, 0, 0
    for i, (s, t) in enumerate(zip(src, tgt, strict=True)):
        new_src, new_tgt = max(max_src, s), max(max_tgt, t + 1)
        if i > start and (i - start + 1) * (new_src + new_tgt) > max_tokens:
            bounds.append((start, i))
            start, new_src, new_tgt = i, s, t + 1
        max_src, max_tgt = new_src, new_tgt
    if len(src) > start:
        bounds.append((start, len(src)))
    return bounds


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1, max_size=80),
    max_tokens=st.integers(1, 120),
    sort=st.booleans(),
)
def test_batches_are_those_of_the_pair_by_pair_greedy_fill(
    pairs: list[tuple[int, int]], max_tokens: int, sort: bool
) -> None:
    sampler = TokenBatchSampler([s for s, _ in pairs], [t for _, t in pairs], max_tokens)
    order = (
        sampler._sorted_order(None, None) if sort else torch.arange(len(pairs))
    )  # runs, or any order
    src, tgt = (sampler.src_lengths[order].tolist(), sampler.tgt_lengths[order].tolist())
    bounds = [tuple(bound) for bound in sampler._batch_bounds(order).tolist()]
    assert bounds == pair_by_pair_bounds(src, tgt, max_tokens)
