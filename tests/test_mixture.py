"""Drawing an epoch from several corpora and directions: the counts follow the weights and the
temperature, the sampler batches exactly the drawn pairs, and a resumed epoch is the same epoch."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from transformer.data.batching import TokenBatchSampler
from transformer.data.mixture import EpochMixture, stream_shares, whole_counts


def streams_of(sizes: list[int]) -> torch.Tensor:
    """(n,) uint8: stream s for sizes[s] pairs, interleaved as a prepared split never is."""
    labels = torch.cat([torch.full((size,), s, dtype=torch.uint8) for s, size in enumerate(sizes)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def test_temperature_one_and_equal_weights_take_every_pair_once() -> None:
    mixture = EpochMixture(streams_of([700, 200, 100]), [1.0, 1.0, 1.0], [0, 1, 2], 1.0)
    assert mixture.counts == [700, 200, 100] and mixture.is_identity


@pytest.mark.parametrize("temperature", [2.0, 5.0, 100.0])
def test_direction_shares_follow_size_to_the_power_one_over_t(temperature: float) -> None:
    sizes = [9000, 900, 100]
    shares = stream_shares(sizes, [1.0] * 3, [0, 1, 2], temperature)
    expected = [size ** (1 / temperature) for size in sizes]
    assert shares == pytest.approx([e / sum(expected) for e in expected])
    counts = whole_counts(shares, sum(sizes))
    assert sum(counts) == sum(sizes)
    assert counts[0] < 9000 and counts[2] > 100  # flatter: the small pair is drawn more often


def test_weights_scale_a_corpus_within_its_direction() -> None:
    # Two corpora of the same direction (0) and one of another (1), temperature 1:
    # weight 2 draws each pair of the second corpus twice as often as those of the first.
    sizes, weights = [600, 300, 100], [1.0, 2.0, 1.0]
    mixture = EpochMixture(streams_of(sizes), weights, [0, 0, 1], 1.0)
    per_pair = [count / size for count, size in zip(mixture.counts, sizes, strict=True)]
    assert per_pair[1] == pytest.approx(2 * per_pair[0], rel=0.01)
    assert per_pair[2] == pytest.approx(per_pair[0], rel=0.01)
    assert len(mixture) == sum(sizes)


def test_an_epoch_draws_exactly_the_counts_from_each_stream() -> None:
    labels = streams_of([500, 50])
    mixture = EpochMixture(labels, [1.0, 1.0], [0, 1], 3.0)
    drawn = mixture.draw(torch.Generator().manual_seed(1))
    assert Counter(labels[drawn].tolist()) == {0: mixture.counts[0], 1: mixture.counts[1]}
    small = drawn[labels[drawn] == 1]
    assert (
        len(set(small.tolist())) == 50
    )  # oversampled: every pair of the small stream at least once
    large = drawn[labels[drawn] == 0]
    assert len(set(large.tolist())) == len(large)  # undersampled: no pair twice


def sampler_for(labels: torch.Tensor, mixture: EpochMixture | None, **kwargs) -> TokenBatchSampler:
    generator = torch.Generator().manual_seed(3)
    src = torch.randint(1, 20, (len(labels),), generator=generator)
    tgt = torch.randint(1, 20, (len(labels),), generator=generator)
    return TokenBatchSampler(src, tgt, 200, seed=7, mixture=mixture, **kwargs)


def test_the_sampler_batches_each_epochs_draw_and_the_proportions_hold() -> None:
    labels = streams_of([900, 100])
    mixture = EpochMixture(labels, [1.0, 1.0], [0, 1], 5.0)
    sampler = sampler_for(labels, mixture)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        pairs = [i for batch in sampler for i in batch]
        assert Counter(labels[pairs].tolist()) == {0: mixture.counts[0], 1: mixture.counts[1]}
    mixed = [batch for batch in sampler if len(set(labels[batch].tolist())) == 2]
    assert mixed, "batches mix the directions"


def test_a_resumed_mixed_epoch_continues_with_the_same_batches() -> None:
    labels = streams_of([300, 60])
    mixture = EpochMixture(labels, [1.0, 2.0], [0, 1], 2.0)
    sampler = sampler_for(labels, mixture)
    sampler.set_epoch(1)
    batches = iter(sampler)
    for _ in range(5):
        next(batches)
    state = sampler.state_dict()
    rest = list(batches)
    resumed = sampler_for(labels, EpochMixture(labels, [1.0, 2.0], [0, 1], 2.0))
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert list(resumed) == rest


def test_an_identity_mixture_gives_the_batches_of_no_mixture() -> None:
    labels = streams_of([120, 80])
    plain = sampler_for(labels, None)
    mixed = sampler_for(labels, EpochMixture(labels, [1.0, 1.0], [0, 1], 1.0))
    for epoch in range(2):
        plain.set_epoch(epoch)
        mixed.set_epoch(epoch)
        assert list(plain) == list(mixed)


def test_two_ranks_split_a_mixed_epoch_between_them() -> None:
    labels = streams_of([200, 40])
    ranks = [
        sampler_for(labels, EpochMixture(labels, [1.0, 1.0], [0, 1], 4.0), rank=r, world_size=2)
        for r in range(2)
    ]
    one = sampler_for(labels, EpochMixture(labels, [1.0, 1.0], [0, 1], 4.0))
    everything = sorted(i for batch in one for i in batch)
    shared = [i for sampler in ranks for batch in sampler for i in batch]
    assert len(ranks[0]) == len(ranks[1])
    assert set(shared) == set(everything) and len(shared) >= len(everything)
