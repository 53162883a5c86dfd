"""How often each training corpus and direction is drawn in an epoch: corpus weights and the
temperature that flattens the mix of language pairs.

    mixture = EpochMixture(stream_of_pair, stream_weights, stream_directions, temperature=5.0)
    mixture.counts          # pairs each stream contributes to every epoch
    mixture.draw(generator)  # (N,) indices of the epoch's pairs (some repeated, some left out)

A prepared training split holds several *streams*, one per (corpus, direction) (prepare.py records
which stream each pair came from). An epoch draws as many pairs as the split holds, N = sum of n_s,
shared out as follows:

- directions: direction d's share is proportional to m_d ** (1 / T), where m_d is its weighted size
  (the sum of weight_s * n_s over its streams) and T is `data.pair_temperature`. T = 1 draws by
  size; a larger T flattens the mix so small pairs are seen more often and large ones less
  (Arivazhagan et al. 2019; fairseq's multilingual sampling uses the same formula);
- streams within a direction: by weighted size, weight_s * n_s, so a corpus of weight 2 has each of
  its pairs drawn twice as often as a corpus of weight 1 (OpenNMT-py's corpus weights).

Stream s then contributes c_s pairs (rounded so that they add up to N): every pair floor(c_s / n_s)
times, plus a random c_s mod n_s of them without repetition, drawn anew each epoch from the seeded
generator the sampler gives, so a resumed run draws the same epoch again. With one stream, or weights
1 and T = 1, every c_s equals n_s: each pair exactly once, as without a mixture (`is_identity`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def stream_shares(
    sizes: Sequence[int], weights: Sequence[float], directions: Sequence[int], temperature: float
) -> list[float]:
    """The fraction of an epoch each stream gets (they sum to 1), by the rules above."""
    weighted = [weight * size for weight, size in zip(weights, sizes, strict=True)]
    direction_size: dict[int, float] = {}
    for direction, mass in zip(directions, weighted, strict=True):
        direction_size[direction] = direction_size.get(direction, 0.0) + mass
    flattened = {d: mass ** (1.0 / temperature) for d, mass in direction_size.items()}
    total = sum(flattened.values())
    return [
        flattened[d] / total * (mass / direction_size[d]) if direction_size[d] else 0.0
        for d, mass in zip(directions, weighted, strict=True)
    ]


def whole_counts(shares: Sequence[float], total: int) -> list[int]:
    """Shares of `total` as whole numbers that add up to it (largest remainders get the rest), so
    shares that are exactly n_s / N give back exactly n_s."""
    exact = [share * total for share in shares]
    counts = [int(np.floor(value + 1e-9)) for value in exact]
    by_remainder = sorted(range(len(exact)), key=lambda s: counts[s] - exact[s])
    for s in by_remainder[: total - sum(counts)]:
        counts[s] += 1
    return counts


class EpochMixture:
    """The pairs of one epoch, drawn from the streams of a training split."""

    def __init__(
        self,
        stream_of_pair: Tensor,
        weights: Sequence[float],
        directions: Sequence[int],
        temperature: float = 1.0,
    ) -> None:
        """stream_of_pair (n,): the stream of each pair; weights, directions: per stream (the
        corpus weight, and an id of its direction); temperature: data.pair_temperature."""
        streams = len(weights)
        self.sizes = torch.bincount(stream_of_pair.long(), minlength=streams)[:streams].tolist()
        shares = stream_shares(self.sizes, weights, directions, temperature)
        self.counts = whole_counts(shares, sum(self.sizes))
        # Pair indices grouped by stream (int32: 4 bytes a pair), with where each group starts.
        self._members = torch.from_numpy(
            np.argsort(stream_of_pair.numpy(), kind="stable").astype(np.int32)
        )  # (n,)
        self._starts = [0, *np.cumsum(self.sizes).tolist()]

    @property
    def is_identity(self) -> bool:
        """Every pair exactly once per epoch: no drawing needed."""
        return self.counts == self.sizes

    def __len__(self) -> int:
        return sum(self.counts)

    def draw(self, generator: torch.Generator) -> Tensor:
        """(N,) int64 indices of this epoch's pairs, stream by stream (the sampler sorts them)."""
        parts = []
        for s, (size, count) in enumerate(zip(self.sizes, self.counts, strict=True)):
            if size == 0 or count == 0:
                continue
            members = self._members[self._starts[s] : self._starts[s + 1]].long()  # (n_s,)
            repeats, extra = divmod(count, size)
            parts += [members] * repeats
            if extra:
                parts.append(members[torch.randperm(size, generator=generator)[:extra]])
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
