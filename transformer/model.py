"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017).

Dimension letters used in the shape comments:
    B batch, S source length, T target length, D d_model, H heads, Dh head size (D / H),
    F feed-forward width, V vocabulary.

Masks are boolean with True meaning "may attend". They are built in one place (`padding_mask`,
`causal_mask`) and attention goes through `F.scaled_dot_product_attention`, which picks a fused
kernel where one exists. The model returns logits; the loss lives in the training code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transformer.config import ModelConfig
from transformer.dropout import Dropout, dropout
from transformer.packing import Packing, pack, unpack

# --- masks ---------------------------------------------------------------------------------------


def padding_mask(ids: Tensor, pad_id: int) -> Tensor:
    """True at real tokens, shaped to broadcast over heads and queries: (B, S) -> (B, 1, 1, S)."""
    return (ids != pad_id)[:, None, None, :]  # (B, 1, 1, S)


def causal_mask(query_length: int, key_length: int, device: torch.device) -> Tensor:
    """True where query i may see key j. With a cache the queries are the last `query_length`
    positions of `key_length`, so query i sits at absolute position i + key_length - query_length."""
    offset = key_length - query_length
    query_positions = torch.arange(query_length, device=device)[:, None] + offset  # (Tq, 1)
    key_positions = torch.arange(key_length, device=device)[None, :]  # (1, Tk)
    return key_positions <= query_positions  # (Tq, Tk)


# Up to this many query positions per (batch entry, head), CPU decoding attends explicitly.
FEW_QUERIES = 8


def explicit_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float = 0.0
) -> Tensor:
    """softmax(q k^T / sqrt(Dh)) v as two batched matmuls: (B, H, T, Dh) -> (B, H, T, Dh); mask
    (True = may attend) broadcastable to (B, H, T, S); dropout on the attention probabilities."""
    return dropout(attention_weights(q, k, mask), dropout_p) @ v  # (B, H, T, Dh)


def attention_weights(q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(Dh)) under `mask` (True = may attend, broadcastable): (B, H, T, S)."""
    scores = q @ k.transpose(-2, -1)  # (B, H, T, S)
    scores.mul_(1 / math.sqrt(q.size(-1)))
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    return scores.softmax(dim=-1)  # (B, H, T, S)


def fused_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, is_causal: bool
) -> Tensor:
    """softmax(q k^T / sqrt(Dh)) v: (B, H, T, Dh) -> (B, H, T, Dh), through PyTorch's fused kernel
    (`F.scaled_dot_product_attention`) except where the explicit form is faster on a CPU:

    - Training (q needs a gradient): explicit, in float32 even under bf16 autocast. At every
      training shape measured, (260, 4, 8, 64) to (25, 4, 100, 64), forward + backward took 1.1-
      2.8x less time than the fused kernel's in float32 (whose bf16 backward was slower still), with
      or without attention dropout, which the fused kernel draws one element at a time
      (`python bench/experiments/attention_speed.py --training`).
    - Decoding with a few queries per batch entry (the r beams of a sentence folded onto its
      source): for beam search's cross-attention, (64, 4, 5, 64) queries against 20 source
      positions, the fused kernel took 558 us where the explicit form takes 156: a batched beam-5
      search 4% faster. A single query (greedy, or self-attention over the cache) stays fused:
      explicit was no faster there."""
    if q.device.type == "cpu" and q.requires_grad:
        if is_causal:
            mask = causal_mask(q.size(-2), k.size(-2), q.device)  # (T, S)
        with torch.autocast("cpu", enabled=False):  # autocast would cast back to bf16
            out = explicit_attention(q.float(), k.float(), v.float(), mask, dropout_p)
        return out.to(q.dtype)
    if q.device.type == "cpu" and 1 < q.size(-2) <= FEW_QUERIES and not is_causal:
        return explicit_attention(q, k, v, mask, dropout_p)
    dtype = q.dtype
    if dtype == torch.bfloat16 and q.device.type == "cpu":
        with torch.autocast("cpu", enabled=False):  # autocast would cast back to bf16
            out = F.scaled_dot_product_attention(
                q.float(),
                k.float(),
                v.float(),
                attn_mask=mask,
                dropout_p=dropout_p,
                is_causal=is_causal,
            )
        return out.to(dtype)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
    )


# --- the incremental-decoding cache ---------------------------------------------------------------


@dataclass
class LayerCache:
    """Keys and values one decoder layer has already computed.

    Self-attention keys/values grow by one position per generated token. They live in a buffer
    allocated once for the whole output and written in place (no torch.cat, which would copy the
    whole past at every step). The buffer is time-major, (capacity, N, H, Dh), so the filled part
    `[:t]` is contiguous: reordering the rows copies exactly the t positions computed so far.

    Cross-attention keys/values depend only on the source, so they are computed on the first step
    and reused; they are kept once per source sentence, (b, H, S, Dh), even when each sentence has
    several rows (beams or samples): see `fold_rows`."""

    self_key: Tensor | None = None  # (capacity, N, H, Dh), filled up to DecoderCache.length
    self_value: Tensor | None = None  # (capacity, N, H, Dh)
    cross_key: Tensor | None = None  # (b, H, S, Dh)
    cross_value: Tensor | None = None  # (b, H, S, Dh)
    capacity: int = 16  # positions the self-attention buffers are first allocated for

    def append_self(self, k: Tensor, v: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """Write the new keys/values k, v (N, H, T, Dh) at positions start .. start + T - 1 and
        return all of them so far, as views (N, H, start + T, Dh). The buffer first holds
        `capacity` positions and doubles if a longer output comes (never during a search, which
        knows its longest output)."""
        end = start + k.size(2)
        if self.self_key is None or end > self.self_key.size(0):
            self.self_key = _grown(self.self_key, start, max(end, self.capacity), k)
            self.self_value = _grown(self.self_value, start, max(end, self.capacity), v)
        self.self_key[start:end] = k.permute(2, 0, 1, 3)  # (T, N, H, Dh)
        self.self_value[start:end] = v.permute(2, 0, 1, 3)
        keys = self.self_key[:end].permute(1, 2, 0, 3)  # (N, H, t, Dh)
        values = self.self_value[:end].permute(1, 2, 0, 3)  # (N, H, t, Dh)
        return keys, values


def _grown(buffer: Tensor | None, filled: int, capacity: int, like: Tensor) -> Tensor:
    """A (capacity, N, H, Dh) buffer holding the first `filled` positions of `buffer`."""
    N, H, _, Dh = like.shape
    if buffer is not None:
        capacity = max(capacity, 2 * buffer.size(0))
    grown = like.new_empty((capacity, N, H, Dh))
    if buffer is not None:
        grown[:filled] = buffer[:filled]
    return grown


@dataclass
class DecoderCache:
    """Everything the decoder needs to generate token t in O(t) instead of re-running the prefix.

    The decoder's N rows may be several per source sentence (r = N / b: beams, or samples): the
    self-attention keys/values have one row per decoder row, the cross-attention keys/values one
    per sentence, and the rows of sentence i are rows i * r .. i * r + r - 1."""

    layers: list[LayerCache] = field(default_factory=list)
    length: int = 0  # target positions already processed (the position of the next token)

    @classmethod
    def empty(cls, n_layers: int, capacity: int = 16) -> DecoderCache:
        """A cache whose self-attention buffers first hold `capacity` positions (a search passes
        its longest output, so they never grow)."""
        return cls(layers=[LayerCache(capacity=max(1, capacity)) for _ in range(n_layers)])

    def reorder(self, rows: Tensor, sentences: Tensor | None = None) -> None:
        """Keep decoder rows `rows` (N',) long, in that order, and, when given, source sentences
        `sentences` (b',) long. Beam search reorders hypotheses among the beams of each sentence
        (rows only: all of a sentence's rows share its source keys/values) and drops finished
        sentences (rows and sentences)."""
        for layer in self.layers:
            for name in ("self_key", "self_value"):
                buffer = getattr(layer, name)
                if buffer is not None:
                    capacity, _, H, Dh = buffer.shape
                    kept = buffer.new_empty((capacity, rows.numel(), H, Dh))
                    torch.index_select(buffer[: self.length], 1, rows, out=kept[: self.length])
                    setattr(layer, name, kept)
            if sentences is not None and layer.cross_key is not None:
                layer.cross_key = layer.cross_key.index_select(0, sentences)
                layer.cross_value = layer.cross_value.index_select(0, sentences)


def fold_rows(q: Tensor, sentences: int) -> Tensor:
    """Queries of r rows per source sentence, (b * r, H, T, Dh) -> (b, H, r * T, Dh): the rows of
    one sentence become extra query positions, so that they attend to that sentence's keys/values
    in one matmul, with no copy of the keys/values per row."""
    N, H, T, Dh = q.shape
    r = N // sentences
    folded = q.view(sentences, r, H, T, Dh).transpose(1, 2)  # (b, H, r, T, Dh)
    return folded.reshape(sentences, H, r * T, Dh)


def unfold_rows(x: Tensor, rows: int) -> Tensor:
    """The inverse of `fold_rows` for what attention returns, back to one entry per row:
    output (b, r * T, D) -> (rows, T, D); weights (b, H, r * T, S) -> (rows, H, T, S)."""
    if x.dim() == 3:
        return x.reshape(rows, -1, x.size(-1))  # (b * r, T, D): row-major order is the same
    b, H, rT, S = x.shape
    r = rows // b
    return x.view(b, H, r, rT // r, S).transpose(1, 2).reshape(rows, H, rT // r, S)


# --- building blocks -----------------------------------------------------------------------------


class InputEmbeddings(nn.Module):
    """Token ids to vectors, scaled by sqrt(d_model) so they are not drowned by the positional
    encoding (section 3.4 of the paper)."""

    def __init__(self, vocab_size: int, d_model: int, pad_id: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.scale = math.sqrt(d_model)

    def forward(self, ids: Tensor) -> Tensor:
        """(B, T) long -> (B, T, D)."""
        return self.embedding(ids) * self.scale


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal position vectors, computed once and added to the embeddings."""

    def __init__(self, d_model: int, max_positions: int, dropout: float) -> None:
        super().__init__()
        position = torch.arange(max_positions, dtype=torch.float32)[:, None]  # (P, 1)
        frequency = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
        )  # (D/2,)
        table = torch.zeros(max_positions, d_model)  # (P, D)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)
        # A buffer, not a parameter: it moves with .to(device) but is never trained. Not persistent,
        # so checkpoints stay small and the table is always recomputed exactly.
        self.register_buffer("table", table, persistent=False)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, start: int = 0, packing: Packing | None = None) -> Tensor:
        """(B, T, D) -> (B, T, D); `start` is the position of x's first token (non-zero when
        decoding incrementally). With a packing, x is the packed tokens (N, D)."""
        end = start + (x.size(1) if packing is None else packing.length)
        if end > self.table.size(0):
            raise ValueError(
                f"sequence of {end} positions exceeds the model's maximum of {self.table.size(0)} "
                "(model.max_positions); truncate the input or train with a larger max_positions"
            )
        table = self.table[start:end] if packing is None else self.table[packing.positions]
        return self.dropout(x + table.to(x.dtype))


class MultiHeadAttentionBlock(nn.Module):
    """Scaled dot-product attention over H heads (section 3.2.2).

    One `in_proj` holds the query, key and value projections stacked, exactly as
    `torch.nn.MultiheadAttention` does. Self-attention runs it as a single fused matmul;
    cross-attention applies the query rows to the decoder states and the key/value rows to the
    encoder output, whose keys and values can then be cached for the whole sentence.
    """

    def __init__(self, d_model: int, n_heads: int, attention_dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_size = d_model // n_heads
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.attention_dropout = attention_dropout
        # Empty (and so absent from the state_dict) unless an inference copy (quantize.py,
        # onednn_linear.py) has put the query and key/value parts of in_proj here as modules of
        # their own: see in_proj_part and split_in_proj.
        self.in_proj_parts = nn.ModuleDict()

    def _split_heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_size).transpose(1, 2)  # (B, H, T, Dh)

    # Each projection takes x as (B, T, D), or as packed tokens (N, D) with their `packing`: the
    # matmul then runs on real tokens only, and the result is unpacked for attention.

    def project_self(
        self, x: Tensor, packing: Packing | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of x in one matmul: (B, T, D) -> 3 x (B, H, T, Dh)."""
        qkv = unpack(self.in_proj(x), packing)  # (B, T, 3D)
        q, k, v = qkv.chunk(3, dim=-1)  # 3 x (B, T, D)
        return self._split_heads(q), self._split_heads(k), self._split_heads(v)

    def in_proj_part(self, part: str, x: Tensor) -> Tensor:
        """The "query" rows or the "key_value" rows of in_proj applied to x:
        (..., D) -> (..., D) or (..., 2D).

        A float in_proj is sliced, so only those rows are multiplied. An int8 or a packed weight
        cannot be sliced, so a quantized model (transformer/inference/quantize.py) or a packed one
        (transformer/inference/onednn_linear.py) carries each part as a module of its own in
        `in_proj_parts`."""
        if part in self.in_proj_parts:
            return self.in_proj_parts[part](x)
        D = self.in_proj.in_features
        rows = slice(0, D) if part == "query" else slice(D, None)
        return F.linear(x, self.in_proj.weight[rows], self.in_proj.bias[rows])

    def split_in_proj(self) -> None:
        """Give the block float query and key/value layers holding the rows of its in_proj (in
        `in_proj_parts`), for an inference copy whose weights are then converted layer by layer.
        Cross-attention applies the two parts to different inputs; in_proj stays for
        self-attention, which applies all of it at once."""
        D = self.in_proj.in_features
        for part, rows in (("query", slice(0, D)), ("key_value", slice(D, None))):
            weight = self.in_proj.weight[rows]  # (D, D) or (2D, D)
            # skip_init: no random initialisation, which would draw from the global generator
            # (a training run splits a copy at every validation; its dropout must not notice).
            linear = nn.utils.skip_init(
                nn.Linear, D, weight.size(0), device=weight.device, dtype=weight.dtype
            )
            with torch.no_grad():
                linear.weight.copy_(weight)
                linear.bias.copy_(self.in_proj.bias[rows])
            self.in_proj_parts[part] = linear

    def project_query(self, x: Tensor, packing: Packing | None = None) -> Tensor:
        """(B, T, D) -> (B, H, T, Dh)."""
        q = self.in_proj_part("query", x)  # (B, T, D)
        return self._split_heads(unpack(q, packing))

    def project_key_value(
        self, memory: Tensor, packing: Packing | None = None
    ) -> tuple[Tensor, Tensor]:
        """(B, S, D) -> 2 x (B, H, S, Dh)."""
        kv = self.in_proj_part("key_value", memory)  # (B, S, 2D)
        k, v = unpack(kv, packing).chunk(2, dim=-1)
        return self._split_heads(k), self._split_heads(v)

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        packing: Packing | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """q (B, H, T, Dh), k and v (B, H, S, Dh), mask broadcastable to (B, H, T, S) ->
        output (B, T, D), or (N, D) packed by the queries' `packing`, and, only when asked for,
        the attention weights (B, H, T, S)."""
        dropout_p = self.attention_dropout if self.training else 0.0
        if need_weights:
            # The explicit form, for visualisation; the fused kernel never materialises weights.
            if is_causal:
                mask = causal_mask(q.size(-2), k.size(-2), q.device)
            weights = attention_weights(q, k, mask)  # (B, H, T, S)
            out = dropout(weights, dropout_p, self.training) @ v  # (B, H, T, Dh)
        else:
            weights = None
            out = fused_attention(q, k, v, mask, dropout_p, is_causal)  # (B, H, T, Dh)
        B, H, T, Dh = out.shape
        out = out.transpose(1, 2).reshape(B, T, H * Dh)  # (B, T, D)
        return self.out_proj(pack(out, packing)), weights

    def forward(
        self,
        query: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        packing: Packing | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Self-attention of query (B, T, D) when memory is None, else attention from query to
        memory (B, S, D). Returns (B, T, D) and optional weights (B, H, T, S). With the query's
        `packing`, query is packed tokens (N, D) and so is the output."""
        if memory is None:
            q, k, v = self.project_self(query, packing)
        else:
            q = self.project_query(query, packing)
            k, v = self.project_key_value(memory)
        return self.attend(q, k, v, mask, is_causal, need_weights, packing)


class FeedForwardBlock(nn.Module):
    """Two linear maps with a non-linearity between them, applied at every position alike."""

    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str) -> None:
        super().__init__()
        self.linear_in = nn.Linear(d_model, d_ff)
        self.activation = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU}[activation]()
        self.dropout = Dropout(dropout)
        self.linear_out = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, D) through (B, T, F)."""
        return self.linear_out(self.dropout(self.activation(self.linear_in(x))))


class ResidualConnection(nn.Module):
    """x + dropout(sublayer(...)) with layer norm before the sub-layer (pre) or after the sum (post).

    Post-norm is the paper's layout; pre-norm keeps an un-normalised residual path from input to
    output, which trains deep models without careful warmup."""

    def __init__(self, d_model: int, dropout: float, norm_placement: str) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        self.pre_norm = norm_placement == "pre"

    def normalise_input(self, x: Tensor) -> Tensor:
        """What the sub-layer sees: the normalised input under pre-norm, the input itself under post."""
        return self.norm(x) if self.pre_norm else x

    def add(self, x: Tensor, sublayer_output: Tensor) -> Tensor:
        """(B, T, D) + (B, T, D) -> (B, T, D)."""
        out = x + self.dropout(sublayer_output)
        return out if self.pre_norm else self.norm(out)


class EncoderBlock(nn.Module):
    """Self-attention, then feed-forward, each inside a residual connection."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D = config.d_model
        self.self_attention = MultiHeadAttentionBlock(D, config.n_heads, config.attention_dropout)
        self.feed_forward = FeedForwardBlock(D, config.d_ff, config.dropout, config.activation)
        self.attention_residual = ResidualConnection(D, config.dropout, config.norm_placement)
        self.feed_forward_residual = ResidualConnection(D, config.dropout, config.norm_placement)

    def forward(self, x: Tensor, src_mask: Tensor, packing: Packing | None = None) -> Tensor:
        """x (B, S, D), or packed (N, D) with its `packing`; src_mask (B, 1, 1, S) -> like x."""
        h = self.attention_residual.normalise_input(x)
        x = self.attention_residual.add(
            x, self.self_attention(h, mask=src_mask, packing=packing)[0]
        )
        h = self.feed_forward_residual.normalise_input(x)
        return self.feed_forward_residual.add(x, self.feed_forward(h))


class Encoder(nn.Module):
    """A stack of encoder blocks (with a final norm under pre-norm)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderBlock(config) for _ in range(config.n_encoder_layers))
        pre_norm = config.norm_placement == "pre"
        self.final_norm = nn.LayerNorm(config.d_model) if pre_norm else nn.Identity()

    def forward(self, x: Tensor, src_mask: Tensor, packing: Packing | None = None) -> Tensor:
        """x (B, S, D), or packed (N, D) with its `packing`; src_mask (B, 1, 1, S) -> like x."""
        for layer in self.layers:
            x = layer(x, src_mask, packing)
        return self.final_norm(x)


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention to the source, feed-forward; each residual."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D = config.d_model
        self.self_attention = MultiHeadAttentionBlock(D, config.n_heads, config.attention_dropout)
        self.cross_attention = MultiHeadAttentionBlock(D, config.n_heads, config.attention_dropout)
        self.feed_forward = FeedForwardBlock(D, config.d_ff, config.dropout, config.activation)
        self.self_attention_residual = ResidualConnection(D, config.dropout, config.norm_placement)
        self.cross_attention_residual = ResidualConnection(D, config.dropout, config.norm_placement)
        self.feed_forward_residual = ResidualConnection(D, config.dropout, config.norm_placement)

    def cross_attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        src_mask: Tensor,
        need_weights: bool,
        packing: Packing | None,
    ) -> tuple[Tensor, Tensor | None]:
        """Queries q (N, H, T, Dh) attend to the source's k, v (b, H, S, Dh) under src_mask
        (b, 1, 1, S) -> (N, T, D) and optional weights (N, H, T, S). When N = r * b (beams or
        samples of each sentence), the r rows of a sentence are folded into its query axis
        instead of copying its keys/values r times."""
        N, b = q.size(0), k.size(0)
        if N == b:
            return self.cross_attention.attend(
                q, k, v, src_mask, need_weights=need_weights, packing=packing
            )
        folded = fold_rows(q, b)  # (b, H, r * T, Dh)
        attended, weights = self.cross_attention.attend(
            folded, k, v, src_mask, need_weights=need_weights
        )  # (b, r * T, D), (b, H, r * T, S)
        return unfold_rows(attended, N), None if weights is None else unfold_rows(weights, N)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        src_mask: Tensor,
        cache: LayerCache | None = None,
        start: int = 0,
        need_weights: bool = False,
        tgt_packing: Packing | None = None,
        src_packing: Packing | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, D), memory (B, S, D), src_mask (B, 1, 1, S) -> (B, T, D) and, when asked,
        the cross-attention weights (B, H, T, S). With packings (training), x and memory are
        packed tokens, (N_tgt, D) and (N_src, D), and so is the output. With a cache, x holds
        target positions start .. start + T - 1; memory may be None once the cache holds the
        source's keys and values, and x may have r rows per source sentence (B = r * b, with
        memory (b, S, D) and src_mask (b, 1, 1, S)).

        Target padding needs no mask of its own: padding sits at the end of each sentence, so
        under the causal mask no real position ever attends to it."""
        # Causal self-attention, appending this step's keys and values to the cache.
        h = self.self_attention_residual.normalise_input(x)
        q, k, v = self.self_attention.project_self(h, tgt_packing)  # 3 x (N, H, T, Dh)
        if cache is not None:
            k, v = cache.append_self(k, v, start)  # 2 x (N, H, start + T, Dh)
        T, K = q.size(2), k.size(2)
        if T == K:  # no past: the fused kernel builds the causal mask itself
            attended, _ = self.self_attention.attend(q, k, v, is_causal=True, packing=tgt_packing)
        elif T == 1:  # one new token may see every cached position: no mask at all
            attended, _ = self.self_attention.attend(q, k, v)
        else:
            attended, _ = self.self_attention.attend(q, k, v, causal_mask(T, K, x.device))
        x = self.self_attention_residual.add(x, attended)

        # Cross-attention; the source's keys and values are computed once per sentence.
        h = self.cross_attention_residual.normalise_input(x)
        q = self.cross_attention.project_query(h, tgt_packing)  # (N, H, T, Dh)
        if cache is not None and cache.cross_key is not None:
            k, v = cache.cross_key, cache.cross_value  # 2 x (b, H, S, Dh)
        elif memory is None:
            raise ValueError("memory is needed until the cache holds the source's keys/values")
        else:
            k, v = self.cross_attention.project_key_value(memory, src_packing)  # 2 x (b, H, S, Dh)
            if cache is not None:
                cache.cross_key, cache.cross_value = k, v
        attended, weights = self.cross_attend(q, k, v, src_mask, need_weights, tgt_packing)
        x = self.cross_attention_residual.add(x, attended)

        h = self.feed_forward_residual.normalise_input(x)
        return self.feed_forward_residual.add(x, self.feed_forward(h)), weights


class Decoder(nn.Module):
    """A stack of decoder blocks (with a final norm under pre-norm)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_decoder_layers))
        pre_norm = config.norm_placement == "pre"
        self.final_norm = nn.LayerNorm(config.d_model) if pre_norm else nn.Identity()

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        src_mask: Tensor,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
        tgt_packing: Packing | None = None,
        src_packing: Packing | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """x (B, T, D), memory (B, S, D), src_mask (B, 1, 1, S) -> (B, T, D) and, when asked,
        each layer's cross-attention weights (B, H, T, S). With packings, x, memory and the
        output are packed tokens (see DecoderBlock)."""
        all_weights = []
        start = cache.length if cache is not None else 0
        for i, layer in enumerate(self.layers):
            layer_cache = cache.layers[i] if cache is not None else None
            x, weights = layer(
                x, memory, src_mask, layer_cache, start, need_weights, tgt_packing, src_packing
            )
            if weights is not None:
                all_weights.append(weights)
        return self.final_norm(x), all_weights


class ProjectionLayer(nn.Module):
    """Decoder states to vocabulary logits (the softmax is left to the loss or the search)."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_model, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, T, V)."""
        return self.linear(x)


# --- the whole model -----------------------------------------------------------------------------


class Transformer(nn.Module):
    """Encoder, decoder, embeddings and output projection, with the three steps exposed separately
    so that decoding can encode once and then call the decoder step by step with a cache."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        D = config.d_model
        self.src_embed = InputEmbeddings(config.src_vocab_size, D, config.pad_id)
        self.tgt_embed = InputEmbeddings(config.tgt_vocab_size, D, config.pad_id)
        self.src_position = PositionalEncoding(D, config.max_positions, config.dropout)
        self.tgt_position = PositionalEncoding(D, config.max_positions, config.dropout)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.projection = ProjectionLayer(D, config.tgt_vocab_size)

    def source_mask(self, src: Tensor) -> Tensor:
        """src ids (B, S) -> the mask of what the source positions may attend to (B, 1, 1, S)."""
        src_mask = padding_mask(src, self.config.pad_id)  # (B, 1, 1, S)
        # An empty source (a row of padding only) would leave attention nothing to attend to and
        # turn into NaN; such a row attends to its padding instead, so its outputs stay finite.
        return src_mask | ~src_mask.any(dim=-1, keepdim=True)  # (B, 1, 1, S)

    def encode(self, src: Tensor, packing: Packing | None = None) -> tuple[Tensor, Tensor]:
        """src ids (B, S) -> memory (B, S, D) and the source mask (B, 1, 1, S). With the source's
        packing, memory holds the real tokens only: (N_src, D)."""
        src_mask = self.source_mask(src)  # (B, 1, 1, S)
        x = self.src_embed(pack(src, packing))  # (B, S, D) or (N_src, D)
        x = self.src_position(x, packing=packing)
        return self.encoder(x, src_mask, packing), src_mask

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor | None,
        src_mask: Tensor,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
        tgt_packing: Packing | None = None,
        src_packing: Packing | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Target ids (B, T) -> decoder states (B, T, D) and optional cross-attention weights.

        With a cache, `tgt` holds only the new tokens; their positions continue from
        `cache.length`, and the cache is extended in place. After the first call with a cache,
        memory may be None: the cache holds the source's keys and values. With packings (no
        cache), memory is packed source tokens and the states are packed target tokens (N_tgt, D)."""
        start = cache.length if cache is not None else 0
        x = self.tgt_embed(pack(tgt, tgt_packing))  # (B, T, D) or (N_tgt, D)
        x = self.tgt_position(x, start, tgt_packing)
        out, weights = self.decoder(
            x, memory, src_mask, cache, need_weights, tgt_packing, src_packing
        )
        if cache is not None:
            cache.length += tgt.size(1)
        return out, weights

    def project(self, x: Tensor) -> Tensor:
        """Decoder states (B, T, D) -> logits (B, T, V)."""
        return self.projection(x)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """Teacher-forced pass: src (B, S), decoder input tgt (B, T) -> logits (B, T, V)."""
        memory, src_mask = self.encode(src)
        out, _ = self.decode(tgt, memory, src_mask)
        return self.project(out)

    def token_states(self, src: Tensor, tgt: Tensor, row_multiple: int = 1) -> Tensor:
        """The same pass as `forward` up to the output projection, computing only what the loss
        needs: the decoder's final states (R, D) whose first N rows are the N real (non-PAD)
        positions of tgt, in the order of `tgt[tgt != pad_id]`; R = N unless `row_multiple` > 1
        rounds it up with extra zero rows (which the loss must ignore: `training/loss.py` gives
        them PAD labels).

        Every position-wise step runs on packed real tokens (see transformer/packing.py), so
        padding costs no matmuls. Training and the validation loss use this, and apply the output
        projection inside the loss (`training/loss.py`), chunk by chunk."""
        pad_id = self.config.pad_id
        src_packing = Packing(src != pad_id, row_multiple)
        tgt_packing = Packing(tgt != pad_id, row_multiple)
        memory, src_mask = self.encode(src, src_packing)  # (N_src, D), (B, 1, 1, S)
        out, _ = self.decode(
            tgt, memory, src_mask, tgt_packing=tgt_packing, src_packing=src_packing
        )  # (R_tgt, D)
        return out

    def new_cache(self, capacity: int = 16) -> DecoderCache:
        """An empty cache for incremental decoding, with room for `capacity` target positions
        (it grows if more come)."""
        return DecoderCache.empty(self.config.n_decoder_layers, capacity)


def _init_weights(model: Transformer) -> None:
    """Xavier-uniform projections and N(0, D^-1/2) embeddings with a zero PAD row, as the paper's
    reference implementations (tensor2tensor, fairseq) do. The D^-1/2 scale cancels the sqrt(D)
    factor in InputEmbeddings, so embedded tokens start with unit-variance components."""
    D = model.config.d_model
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=D**-0.5)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()


def build_transformer(config: ModelConfig) -> Transformer:
    """Build and initialise the model from its config (the one object checkpoints store)."""
    config.validate()
    model = Transformer(config)
    _init_weights(model)
    if config.share_embeddings:
        model.tgt_embed.embedding.weight = model.src_embed.embedding.weight
    if config.tie_output_embedding:
        # Tying (Press & Wolf, 2017): the output projection reuses the target embedding matrix.
        model.projection.linear.weight = model.tgt_embed.embedding.weight
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of distinct trainable parameters (a tied tensor counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
