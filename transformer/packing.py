"""Packing: run the position-wise parts of the model on real tokens only, never on padding.

Everything in a Transformer except attention treats each position on its own: embeddings, layer
norms, the attention projections, the feed-forward block, dropout, residual sums and the output
projection. Those can run on the N real tokens of a padded (B, T) batch gathered into one (N, D)
matrix. Attention is the one place where sentences matter; it unpacks to (B, T, .), attends under
the padding mask, and packs its output again.

Why bother: a batch is padded to its longest sentence, so in batches of 64 random Multi30k sentences
only 47% of the source + target positions are real tokens (`python bench/train_speed.py` prints
this ratio); packing skips the other 53% of the matmuls, including the 8,000-way output projection
and the softmax over it, which are the largest per-token cost. Length-bucketed batches are ~95% real,
so there packing gains less, and it costs only two copies per attention layer.

Training uses it through `Transformer.token_logits`; decoding does not need it, because the target
prefixes of a decoding batch all have the same length.
"""

from __future__ import annotations

from torch import Tensor


class Packing:
    """Where the real tokens of a padded batch sit: the row-major order of `ids[keep]`.

    keep: (B, T) bool, True at real tokens."""

    def __init__(self, keep: Tensor) -> None:
        self.batch_size, self.length = keep.shape
        # One host sync per batch (nonzero must know N); nothing else in the model syncs.
        self.index = keep.flatten().nonzero().squeeze(1)  # (N,) flat positions in B * T
        self.positions = self.index % self.length  # (N,) position of each token in its sentence

    @property
    def n_tokens(self) -> int:
        return self.index.numel()

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, ...) -> (N, ...): the real tokens, in row-major order."""
        return x.flatten(0, 1).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """(N, ...) -> (B, T, ...) with zeros at the padding (which attention masks out anyway)."""
        padded = x.new_zeros(self.batch_size * self.length, *x.shape[1:])  # (B * T, ...)
        return padded.index_copy(0, self.index, x).view(self.batch_size, self.length, *x.shape[1:])


def unpack(x: Tensor, packing: Packing | None) -> Tensor:
    """x in the padded layout (B, T, ...): unpacked when `packing` is given, else already so."""
    return x if packing is None else packing.unpack(x)


def pack(x: Tensor, packing: Packing | None) -> Tensor:
    """The inverse of `unpack`: (B, T, ...) -> (N, ...) when `packing` is given."""
    return x if packing is None else packing.pack(x)
