"""Batches: sentences grouped by length, filled up to a token budget, padded only to their own longest.

    sampler = TokenBatchSampler(split.src_lengths, split.tgt_lengths, max_tokens=4096, seed=1234)
    for batch in make_loader(split, sampler):  # Batch: src (B, S), tgt_in (B, T), labels (B, T)
        ...

Training, validation and the benchmarks all batch through this module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from transformer.data.loading import EncodedSplit
from transformer.data.mixture import EpochMixture
from transformer.device import return_freed_memory
from transformer.tokenization.tokenizer import BOS_ID, EOS_ID, PAD_ID


class TokenBatchSampler(Sampler[list[int]]):
    """Batches of sentence indices of similar length, each as large as `max_tokens` allows.

    Budget: a batch of B pairs costs B * max source length + B * (max target length + 1), the padded
    size after collate adds BOS/EOS. A single pair over the budget still forms a batch of its own
    (nothing is lost; drop such pairs at load time with data.max_length if memory is tight).

    Each epoch, pairs are sorted by (source length, target length) with ties broken at random, cut
    into batches, and the batch order is shuffled, all with a generator seeded from (seed, epoch).
    shuffle=False gives the same batches in length order every time (validation, decoding).

    DDP: batch k goes to rank k % world_size. When the batch count does not divide by world_size,
    the first batches are repeated so that every rank runs the same number of steps (a rank that ran
    out early would hang the others); ranks are disjoint apart from those few repeats.

    Resuming: `state_dict()` is (epoch, batches yielded so far in that epoch); after
    `load_state_dict`, iteration continues with the next batch. An epoch that is iterated to the end
    moves on to the next epoch by itself. `set_epoch(e)` starts epoch e from its first batch unless
    the sampler is already in epoch e (after a resume), so a loop that calls set_epoch every epoch
    resumes mid-epoch correctly. "Yielded" means handed to the DataLoader: with num_workers > 0 it
    prefetches a few batches ahead, which then count as done; make_loader uses num_workers=0.
    """

    def __init__(
        self,
        src_lengths: Sequence[int] | Tensor,
        tgt_lengths: Sequence[int] | Tensor,
        max_tokens: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        mixture: EpochMixture | None = None,
    ) -> None:
        """mixture: which pairs each epoch draws from a split of several corpora or directions
        (mixture.py); None, or a mixture that takes every pair once, batches every pair once."""
        # int32: 4 bytes per pair and side, and no copy of a prepared split's lengths
        self.src_lengths = torch.as_tensor(src_lengths).to(torch.int32)  # (n,)
        self.tgt_lengths = torch.as_tensor(tgt_lengths).to(torch.int32)  # (n,)
        if self.src_lengths.shape != self.tgt_lengths.shape:
            raise ValueError("src_lengths and tgt_lengths must have the same length")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, not {max_tokens}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), not {rank}")
        self.max_tokens = max_tokens
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0  # batches of this epoch already yielded on this rank
        self.mixture = None if mixture is None or mixture.is_identity else mixture
        self._drawn: tuple[int, Tensor, Tensor] | None = None  # mixture: (epoch, order, bounds)
        # Every pair once: ties are exact (src, tgt) length ties, so the sequence of lengths in
        # sorted order, and hence where batches start and end, is the same every epoch: computed
        # once. (batches, 2) [start, end) rows: a tensor, ~16 bytes a batch (list of tuples: ~110)
        if self.mixture is None:
            self._bounds = self._batch_bounds(self._sorted_order(None, None))
            return_freed_memory()

    def _sorted_order(self, pairs: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """The indices `pairs` (None: every pair once) sorted by (source, target) length; ties in
        random order when given a generator."""
        if pairs is None:
            n = len(self.src_lengths)
            order = torch.arange(n) if generator is None else torch.randperm(n, generator=generator)
        else:
            order = (
                pairs
                if generator is None
                else pairs[torch.randperm(len(pairs), generator=generator)]
            )
        order = order[_stable_argsort(self.tgt_lengths[order])]
        order = order[_stable_argsort(self.src_lengths[order])]
        return order.to(torch.int32)  # (N,) 4 bytes a pair for as long as the epoch lasts

    def _batch_bounds(self, order: Tensor) -> Tensor:
        """Greedily fill batches along `order`: (batches, 2) [start, end) positions of each batch.

        Pair by pair: a pair joins the open batch if the batch, padded to its longest source and
        target, still fits max_tokens, else it opens the next batch. Consecutive pairs of equal
        lengths (runs: the sorted order has at most a few thousand) all cost the same, so how many
        of them join is computed per run, not per pair: the same batches, in milliseconds for
        millions of pairs."""
        src = self.src_lengths[order]  # (n,)
        tgt = self.tgt_lengths[order] + 1  # (n,) +1: BOS / EOS
        n = len(src)
        starts_run = torch.ones(n, dtype=torch.bool)  # (n,) True where a run of equal pairs begins
        starts_run[1:] = (src[1:] != src[:-1]) | (tgt[1:] != tgt[:-1])
        run_starts = torch.nonzero(starts_run).flatten().tolist()
        bounds = []
        start, max_src, max_tgt = 0, 0, 0  # the open batch: first position, longest sides
        for i, end in zip(run_starts, run_starts[1:] + [n], strict=False):  # (no pairs: no runs)
            s, t = int(src[i]), int(tgt[i])
            while i < end:
                max_src, max_tgt = max(max_src, s), max(max_tgt, t)
                in_batch = i - start
                # pairs of this run that fit: (in_batch + k + 1) * cost <= max_tokens; an empty
                # batch always takes one, even if over the budget
                fit = self.max_tokens // (max_src + max_tgt) - in_batch
                i += min(max(fit, 1 if in_batch == 0 else 0), end - i)
                if i < end:  # the batch is full: close it; the next pair opens a new one
                    bounds.append((start, i))
                    start, max_src, max_tgt = i, 0, 0
        if n > start:
            bounds.append((start, n))
        return torch.tensor(bounds, dtype=torch.long).reshape(-1, 2)  # also when there are none

    def _epoch_batches(self, epoch: int) -> tuple[Tensor, Tensor]:
        """This rank's batches for `epoch`, in the order they are yielded: the epoch's order of all
        pairs (n,) and the [start, end) of each batch in it (batches, 2). Batches become lists of
        indices only when yielded (a list of every index costs ~36 bytes a pair: 100 MB at 3M)."""
        order, bounds = self._all_batches(epoch)
        total = math.ceil(len(bounds) / self.world_size) * self.world_size  # pad: repeat the first
        mine = torch.arange(self.rank, total, self.world_size) % max(len(bounds), 1)
        return order, bounds[mine]

    def _all_batches(self, epoch: int) -> tuple[Tensor, Tensor]:
        """Every rank's batches of `epoch`: the order of its pairs (N,) and the batches' [start,
        end) in it (batches, 2), in the order they are handed out. With a mixture, the epoch first
        draws its pairs (from the same seeded generator), so its batches differ from epoch to
        epoch: they are computed once per epoch and kept."""
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, epoch))
        if self.mixture is None:
            order = self._sorted_order(None, generator if self.shuffle else None)  # (n,)
            bounds = self._bounds  # (batches, 2)
        elif self._drawn is not None and self._drawn[0] == epoch:
            return self._drawn[1], self._drawn[2]
        else:
            pairs = self.mixture.draw(generator)  # (N,)
            order = self._sorted_order(pairs, generator if self.shuffle else None)
            bounds = self._batch_bounds(order)
        if self.shuffle:
            bounds = bounds[torch.randperm(len(bounds), generator=generator)]
        if self.mixture is not None:
            self._drawn = (epoch, order, bounds)
        return_freed_memory()
        return order, bounds

    def _total_batches(self, epoch: int) -> int:
        """Batches of `epoch` over all ranks."""
        return len(self._bounds) if self.mixture is None else len(self._all_batches(epoch)[1])

    def __iter__(self) -> Iterator[list[int]]:
        order, bounds = self._epoch_batches(self.epoch)
        while self.position < len(bounds):
            start, end = bounds[self.position].tolist()
            self.position += 1
            yield order[start:end].tolist()
        self.epoch += 1
        self.position = 0

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank; with a mixture, of the current
        epoch: each epoch draws its own pairs)."""
        return math.ceil(self._total_batches(self.epoch) / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of `epoch`; restart it unless already in it (see the class docstring)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "batches_per_epoch": len(self),
            "world_size": self.world_size,
            "total_batches": self._total_batches(self.epoch),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue where `state` left off. From another world size, the position moves to the
        same place in the epoch's batch order (each rank had yielded `position` batches, so
        position x world size were done); rounding down repeats a few batches rather than skip any."""
        saved_world_size = int(state.get("world_size", 1))  # older states: one process
        saved_total = state.get("total_batches", state.get("batches_per_epoch"))
        total = self._total_batches(int(state["epoch"]))
        if saved_total is not None and saved_total != total:
            raise ValueError(
                f"the saved sampler state has {saved_total} batches per epoch in all, this sampler "
                f"{total}: resume with the same data, data.max_tokens and data.pair_temperature"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"]) * saved_world_size // self.world_size


def _stable_argsort(values: Tensor) -> Tensor:
    """torch.argsort(values, stable=True), as numpy's radix sort when the values fit 16 bits
    (sentence lengths do): ~4x faster on millions of pairs. A stable sort has one answer, so the
    order is the same either way."""
    array = values.numpy()
    if len(array) and 0 <= array.min() and array.max() < 2**16:
        array = array.astype(np.uint16)
    return torch.from_numpy(np.argsort(array, kind="stable"))


def _mix_seed(seed: int, epoch: int) -> int:
    """One generator seed per (seed, epoch); seed + epoch would make (0, 1) and (1, 0) equal."""
    return (seed * 1_000_003 + epoch) % (2**63)


@dataclass
class Batch:
    """One padded batch; B sentences, S = longest source, T = longest target + 1."""

    src: Tensor  # (B, S) source ids, padded with pad_id
    tgt_in: Tensor  # (B, T) BOS + target: the decoder input
    labels: Tensor  # (B, T) target + EOS: what the decoder must predict at each position
    n_tgt_tokens: int  # real (non-pad) label tokens, for a per-token loss
    indices: Tensor | None = None  # (B,) position of each pair in its split

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return dataclasses.replace(
            self,
            src=move(self.src),
            tgt_in=move(self.tgt_in),
            labels=move(self.labels),
            indices=move(self.indices),
        )

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True) for faster, non-blocking copies to the GPU."""
        return dataclasses.replace(
            self,
            src=self.src.pin_memory(),
            tgt_in=self.tgt_in.pin_memory(),
            labels=self.labels.pin_memory(),
        )


def collate_batch(
    examples: list[tuple[Tensor, Tensor]],
    pad_id: int = PAD_ID,
    bos_id: int = BOS_ID,
    eos_id: int = EOS_ID,
    indices: Sequence[int] | None = None,
) -> Batch:
    """Pad to the batch's own longest sentence; the target gets BOS in front (input) or EOS behind
    (labels)."""
    bos, eos = torch.tensor([bos_id]), torch.tensor([eos_id])
    src = [s.long() for s, _ in examples]
    tgt_in = [torch.cat([bos, t.long()]) for _, t in examples]
    labels = [torch.cat([t.long(), eos]) for _, t in examples]
    src = pad_sequence(src, batch_first=True, padding_value=pad_id)  # (B, S)
    tgt_in = pad_sequence(tgt_in, batch_first=True, padding_value=pad_id)  # (B, T)
    labels = pad_sequence(labels, batch_first=True, padding_value=pad_id)  # (B, T)
    n_tgt_tokens = sum(len(t) + 1 for _, t in examples)
    index = None if indices is None else torch.as_tensor(list(indices), dtype=torch.long)
    return Batch(src, tgt_in, labels, n_tgt_tokens, index)


class _WithIndices(Dataset):
    """Gives collate the indices of the batch too (DataLoader fetches a batch via __getitems__),
    so that each Batch knows which pairs it holds: validation puts translations back in order."""

    def __init__(self, split: EncodedSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.split[i]

    def __getitems__(self, indices: list[int]) -> tuple[list[int], list[tuple[Tensor, Tensor]]]:
        return indices, self.split.pairs(indices)


def _collate_with_indices(fetched: tuple[list[int], list[tuple[Tensor, Tensor]]]) -> Batch:
    indices, examples = fetched
    return collate_batch(examples, indices=indices)


def make_loader(
    split: EncodedSplit,
    sampler: TokenBatchSampler | Iterable[list[int]],
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """DataLoader of `Batch`es. The ids are already in memory, so workers rarely pay off; with
    num_workers > 0 the sampler's resume position runs a few prefetched batches ahead."""
    return DataLoader(
        _WithIndices(split),
        batch_sampler=sampler,
        collate_fn=_collate_with_indices,
        num_workers=num_workers,
        pin_memory=pin_memory,
        # Every new iterator draws a base seed for workers; from its own generator, so that it
        # does not consume the global RNG that dropout uses (a resumed run must match exactly).
        generator=torch.Generator().manual_seed(0),
    )
