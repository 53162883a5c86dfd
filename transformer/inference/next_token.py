"""What every search asks at each step: the log-probabilities of each row's next token.

A search step has the same first two parts in greedy, sampling and beam search:
1. score: `scorer(tokens)` runs the decoder(s) one position on each row's newest token (with the
   KV cache) and returns next-token log-probabilities (N, V);
2. rules: `rules.apply(...)` enforces what the search allows, in place: PAD and BOS are never
   generated, a row at its length limit may only end (EOS), and a row inside its forced target
   prefix may only take the prefix's next token.
Then each search chooses tokens its own way and tells the scorer which rows to keep
(`scorer.reorder`). A scorer is one model (`ModelScorer`) or several (`EnsembleScorer`); the
searches see no difference.

Dimension letters as in `model.py`, plus N decoder rows (r rows per sentence: beams or samples),
b source sentences still being decoded, B sentences of the batch and P the longest prefix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from transformer.model import Transformer


class ModelScorer:
    """One model decoding a batch of sources incrementally: the encoder runs once, then each call
    runs the decoder on one new token per row and projects to the vocabulary.

    The output matrix is transposed once per batch: multiplying the few rows of a step by a
    contiguous (D, V) matrix is ~25-30% faster on a CPU than F.linear's (V, D) weight (2 cores,
    d_model 256, 8,000 words: 64 rows 2.7 vs 3.4 ms, 320 rows 8.4 vs 12.4 ms)."""

    def __init__(self, model: Transformer, src: Tensor, capacity: int) -> None:
        """src (b, S) padded source ids; capacity: the most target positions a row will take."""
        self.model = model
        self.memory: Tensor | None
        self.memory, self.src_mask = model.encode(src)  # (b, S, D), (b, 1, 1, S)
        self.cache = model.new_cache(capacity)
        self.projection = model.projection.linear
        # A float projection is transposed once: (D, V) and (V,); an int8 one (quantize.py) is
        # called as it is.
        self.weight_and_bias: tuple[Tensor, Tensor] | None = None
        if isinstance(self.projection, torch.nn.Linear):
            weight, bias = self.projection.weight.detach(), self.projection.bias.detach()
            self.weight_and_bias = (weight.t().contiguous(), bias)  # (D, V), (V,)

    def __call__(self, tokens: Tensor) -> Tensor:
        """tokens (N,), each row's newest token -> (N, V) float32 log-probabilities of the next.
        N may be r rows per source sentence; the cache folds them (see DecoderCache)."""
        states, _ = self.model.decode(tokens[:, None], self.memory, self.src_mask, self.cache)
        self.memory = None  # the cache now holds the source's keys and values
        if self.weight_and_bias is not None:
            weight, bias = self.weight_and_bias
            logits = torch.addmm(bias, states[:, -1], weight)  # (N, V)
        else:
            logits = self.projection(states[:, -1])  # (N, V)
        logits = logits.float()  # float32 even under autocast
        # Normalised in place: the logits are this call's own tensor, and an (N, V) tensor fewer
        # per step is one pass over memory fewer (the kernel reads each row before writing it).
        return torch.log_softmax(logits, dim=-1, out=logits)  # (N, V)

    def reorder(self, rows: Tensor, sentences: Tensor | None = None) -> None:
        """Keep decoder rows `rows` (N',) and, when given, source sentences `sentences` (b',)."""
        self.cache.reorder(rows, sentences)
        if sentences is not None:
            self.src_mask = self.src_mask[sentences]
            if self.memory is not None:
                self.memory = self.memory[sentences]


class EnsembleScorer:
    """Several models decoding the same batch, each with its own cache; their next-token
    distributions are averaged: log of the mean probability, log(1/M * sum_m p_m).

    Averaging probabilities (as fairseq does), rather than log-probabilities, keeps the result a
    normalised distribution: scores stay comparable log-probabilities, sampling draws from the
    mixture of the models, and a token is possible when any model finds it possible (a mean of
    log-probabilities would let one confident model veto the others)."""

    def __init__(self, scorers: Sequence[ModelScorer]) -> None:
        self.scorers = list(scorers)
        self.log_count = math.log(len(self.scorers))

    def __call__(self, tokens: Tensor) -> Tensor:
        """tokens (N,) -> (N, V) float32 log-probabilities of the ensemble."""
        log_probs = torch.stack([scorer(tokens) for scorer in self.scorers])  # (M, N, V)
        return log_probs.logsumexp(dim=0).sub_(self.log_count)  # (N, V)

    def reorder(self, rows: Tensor, sentences: Tensor | None = None) -> None:
        for scorer in self.scorers:
            scorer.reorder(rows, sentences)


Scorer = ModelScorer | EnsembleScorer


def make_scorer(models: Transformer | Sequence[Transformer], src: Tensor, capacity: int) -> Scorer:
    """The scorer of one model, or of an ensemble when given several."""
    if isinstance(models, Transformer):
        return ModelScorer(models, src, capacity)
    if len(models) == 1:
        return ModelScorer(models[0], src, capacity)
    return EnsembleScorer([ModelScorer(model, src, capacity) for model in models])


class SearchRules:
    """The rules every search applies to the scorer's log-probabilities, in place and after the
    softmax, so that the tokens a rule allows keep the model's own log-probabilities:
    - PAD, BOS and the `never_ids` (language tags) are never generated;
    - a row at its sentence's length limit may only end (EOS);
    - a row still inside its sentence's forced target prefix may only take the prefix's next
      token (its log-probability counts in the score, as fairseq does)."""

    def __init__(
        self,
        limits: Tensor,
        shortest_limit: int,
        prefixes: Tensor | None,
        *,
        bos_id: int,
        eos_id: int,
        pad_id: int,
        never_ids: Sequence[int] = (),
    ) -> None:
        """limits (B,): each sentence's most tokens before the EOS, the smallest of which is
        shortest_limit (on the host); prefixes (B, P): forced first tokens, padded with pad_id,
        or None; never_ids: more tokens never generated (a multilingual model's language tags)."""
        self.limits = limits
        # No row is at its limit before the shortest limit: until then the (N, V) masking for
        # it is skipped, and no step has to ask the device.
        self.shortest_limit = shortest_limit
        self.prefixes = prefixes
        self.never = torch.tensor([pad_id, bos_id, *never_ids], device=limits.device)  # (n,)
        self.eos_id, self.pad_id = eos_id, pad_id

    def apply(self, log_probs: Tensor, step: int, row_sentences: Tensor) -> None:
        """log_probs (N, V) of the token at output position `step`; row_sentences (N,) the
        sentence (index into the batch) of each row."""
        log_probs.index_fill_(1, self.never, float("-inf"))
        if step >= self.shortest_limit:
            at_limit = step >= self.limits[row_sentences]  # (N,)
            eos = log_probs[:, self.eos_id].clone()  # (N,)
            log_probs.masked_fill_(at_limit[:, None], float("-inf"))  # at the limit: only EOS
            log_probs[:, self.eos_id] = eos
        if self.prefixes is not None and step < self.prefixes.size(1):
            self._force_prefix(log_probs, self.prefixes[row_sentences, step])

    def _force_prefix(self, log_probs: Tensor, forced: Tensor) -> None:
        """Rows whose forced token (N,) is not PAD may take only that token."""
        forced_log_probs = log_probs.gather(1, forced[:, None])  # (N, 1)
        log_probs.masked_fill_((forced != self.pad_id)[:, None], float("-inf"))
        # Rows without a forced token get their own (-inf) PAD entry back: nothing changes.
        log_probs.scatter_(1, forced[:, None], forced_log_probs)
