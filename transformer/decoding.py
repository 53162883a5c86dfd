"""Greedy and beam search over token ids: batched, incremental, one implementation for all callers.

Validation, `translate.py` and the benchmarks all decode through `translate_ids` / `decode_batch`.
Everything here is a pure function of the model and integer ids: no tokenizer, no printing.

Dimension letters as in `model.py` (B batch, S source length, D d_model, V vocabulary), plus
K beam size, b sentences still being decoded, r rows (beams) per sentence, t tokens so far and
L the longest output allowed in the batch.

Conventions shared by every search, so that their scores can be compared:
- The decoder starts from BOS; a hypothesis ends with EOS. `Hypothesis.tokens` holds neither.
- Output length: at most `int(a * source_length + b)` tokens before the EOS, capped so that every
  decoder position fits the model (max_positions - 1). When the limit is reached the EOS is forced,
  so every hypothesis is scored with its EOS, as fairseq does.
- PAD and BOS can never be generated (their log-probability is set to -inf, after the softmax, so
  the scores stay the model's own log-probabilities).
- Score = sum of log-probabilities (EOS included) / GNMT length penalty ((5 + length) / 6) ** alpha,
  where length counts the EOS (Wu et al., 2016). alpha = 0 ranks by raw log-probability.

The model must already be in eval mode (the caller decides; dropout would make decoding random).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from transformer.config import DecodeConfig
from transformer.model import Transformer

# Default special ids; they equal transformer.tokenizer's PAD_ID, BOS_ID and EOS_ID.
PAD, BOS, EOS = 0, 2, 3


@dataclass
class Hypothesis:
    """One output sentence: ids without BOS and without the final EOS, and how the model rates it."""

    tokens: list[int]
    score: float  # log_prob / length_penalty(len(tokens) + 1, alpha): what the search ranks by
    log_prob: float  # raw sum of the token log-probabilities, EOS included


def length_penalty(length: Tensor | int, alpha: float) -> Tensor | float:
    """GNMT length penalty ((5 + length) / 6) ** alpha; scores are log-probs divided by it.

    Summed log-probabilities favour short outputs; dividing by a penalty that grows with length
    (alpha > 0) counteracts that. alpha = 0 gives 1 (no normalisation)."""
    return ((5.0 + length) / 6.0) ** alpha


# The searches take an argument named `length_penalty` (alpha, as DecodeConfig calls it), which
# hides the function inside them; they reach it under this name.
_length_penalty = length_penalty


def max_output_lengths(
    src: Tensor, max_len_a: float, max_len_b: int, pad_id: int, max_positions: int
) -> Tensor:
    """Most tokens (EOS not counted) each sentence may produce: a * source length + b, where the
    source length ignores padding. Capped at max_positions - 1 because the forced EOS is predicted
    from decoder position max_len. src (B, S) -> (B,) long."""
    source_lengths = (src != pad_id).sum(dim=1)  # (B,)
    limits = (max_len_a * source_lengths + max_len_b).long()  # (B,)
    return limits.clamp(min=0, max=max_positions - 1)


class NextTokenLogProbs:
    """Log-probabilities of the next token for a search step, with its rules applied: PAD and BOS
    are never generated, and a row at its length limit may only end (EOS). The masks are applied
    after the softmax, so allowed tokens keep the model's own log-probabilities.

    Built once per search, because two things are cheaper that way on a CPU (measured on 2 cores,
    d_model 256, 8,000 words; `python bench/marian_decode_speed.py` shows the whole effect):
    - the output matrix is transposed once: multiplying the few rows of a step by a contiguous
      (D, V) matrix is ~25-30% faster than F.linear's (V, D) weight (64 rows: 2.7 vs 3.4 ms;
      320 rows: 8.4 vs 12.4 ms);
    - the masks (and beam search's sum of scores) work in place, so a step allocates and writes
      two (N, V) tensors instead of four. (Reusing two preallocated buffers for the rest was tried
      and measured no faster.)
    """

    def __init__(self, model: Transformer, bos_id: int, eos_id: int, pad_id: int) -> None:
        linear = model.projection.linear
        self.weight = linear.weight.detach().t().contiguous()  # (D, V)
        self.bias = linear.bias.detach()  # (V,)
        self.never = torch.tensor([pad_id, bos_id], device=self.weight.device)  # (2,)
        self.eos_id = eos_id

    def __call__(self, states: Tensor, at_limit: Tensor) -> Tensor:
        """states (N, t, D): decoder states, of which the last position predicts the next token;
        at_limit (N,) bool -> (N, V) float32 log-probabilities."""
        logits = torch.addmm(self.bias, states[:, -1], self.weight)  # (N, V)
        log_probs = logits.float().log_softmax(dim=-1)  # (N, V); float32 even under autocast
        log_probs.index_fill_(1, self.never, float("-inf"))
        eos = log_probs[:, self.eos_id].clone()  # (N,)
        log_probs.masked_fill_(at_limit[:, None], float("-inf"))  # rows at the limit: only EOS
        log_probs[:, self.eos_id] = eos
        return log_probs


def _steps_between_checks(device: torch.device) -> int:
    """How often (in steps) to ask the host whether sentences have finished. On an accelerator each
    check waits for the device (a sync), so only every few steps; on the CPU a check is free and
    dropping finished sentences at once saves work."""
    return 1 if device.type == "cpu" else 4


def _output_limits(
    model: Transformer, src: Tensor, max_len_a: float, max_len_b: int, pad_id: int
) -> tuple[Tensor, int]:
    """Each sentence's length limit (B,) and the longest of them, after checking that no source is
    empty (an all-padding row makes attention NaN). One host sync for both."""
    if src.dim() != 2 or src.size(0) == 0:
        raise ValueError(
            f"src must be a non-empty (batch, length) tensor of ids, not {tuple(src.shape)}"
        )
    limits = max_output_lengths(src, max_len_a, max_len_b, pad_id, model.config.max_positions)
    shortest_source, longest = torch.stack(
        [(src != pad_id).sum(dim=1).min(), limits.max()]
    ).tolist()
    if shortest_source == 0:
        raise ValueError(
            "every source needs at least one token (an all-padding row makes attention NaN); "
            "translate_ids handles empty sources"
        )
    return limits, longest


# --- greedy search ------------------------------------------------------------------------------


@torch.inference_mode()
def greedy_search(
    model: Transformer,
    src: Tensor,
    *,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    length_penalty: float = 0.0,
    bos_id: int = BOS,
    eos_id: int = EOS,
    pad_id: int = PAD,
) -> list[Hypothesis]:
    """The most probable next token at every step, for a padded batch of sources src (B, S).

    Incremental: each step feeds only the newest token and the decoder cache holds the past
    (cross-attention keys/values are computed once per sentence). Sentences that have finished are
    dropped from the batch. `length_penalty` (alpha) only affects the reported score, so that
    greedy scores are comparable with beam search's. Returns one hypothesis per sentence."""
    alpha = length_penalty
    B, device = src.size(0), src.device
    limits, longest = _output_limits(model, src, max_len_a, max_len_b, pad_id)  # (B,), L

    memory: Tensor | None
    memory, src_mask = model.encode(src)  # (B, S, D), (B, 1, 1, S)
    cache = model.new_cache()

    # Results for all B sentences, filled in as the active rows produce tokens.
    outputs = src.new_full((B, longest + 1), pad_id)  # (B, L + 1), EOS included
    log_probs = torch.zeros(B, device=device)  # (B,)
    lengths = torch.zeros(B, dtype=torch.long, device=device)  # (B,) tokens including EOS

    # The active rows: which sentence each is, its limit, whether it has ended, its last token.
    sentences = torch.arange(B, device=device)  # (b,)
    finished = torch.zeros(B, dtype=torch.bool, device=device)  # (b,)
    tokens = torch.full((B,), bos_id, dtype=torch.long, device=device)  # (b,)
    next_token_log_probs = NextTokenLogProbs(model, bos_id, eos_id, pad_id)
    check_every = _steps_between_checks(device)

    for step in range(longest + 1):
        states, _ = model.decode(tokens[:, None], memory, src_mask, cache)  # (b, 1, D)
        memory = None  # the cache now holds the source's keys and values: no need to keep it
        step_log_probs = next_token_log_probs(states, step >= limits)  # (b, V)
        token_log_probs, tokens = step_log_probs.max(dim=-1)  # (b,), (b,)
        # Rows that already ended (and wait for the next check) add nothing.
        tokens = tokens.masked_fill(finished, pad_id)
        outputs[sentences, step] = tokens
        log_probs[sentences] += token_log_probs.masked_fill(finished, 0.0)
        lengths[sentences] += (~finished).long()
        finished = finished | (tokens == eos_id)

        if step % check_every == check_every - 1 or step == longest:
            keep = (~finished).nonzero().squeeze(1)  # (b',): one host sync
            if keep.numel() == 0:
                break
            if keep.numel() < finished.numel():
                sentences, finished, tokens = sentences[keep], finished[keep], tokens[keep]
                limits, src_mask = limits[keep], src_mask[keep]
                cache.reorder(keep)

    scores = log_probs / _length_penalty(lengths, alpha)  # (B,)
    # One transfer to the host for the whole batch; the EOS is cut off the tokens.
    rows = zip(outputs.tolist(), lengths.tolist(), log_probs.tolist(), scores.tolist(), strict=True)
    return [
        Hypothesis(tokens=row[: length - 1], score=score, log_prob=log_prob)
        for row, length, log_prob, score in rows
    ]


# --- beam search --------------------------------------------------------------------------------


@torch.inference_mode()
def beam_search(
    model: Transformer,
    src: Tensor,
    *,
    beam_size: int = 5,
    length_penalty: float = 0.6,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    nbest: int = 1,
    bos_id: int = BOS,
    eos_id: int = EOS,
    pad_id: int = PAD,
) -> list[list[Hypothesis]]:
    """The `nbest` best hypotheses of each sentence of a padded batch src (B, S), best first.

    How the beam works (classic beam search, in which a finished hypothesis keeps its place):
    - Each sentence has K = beam_size places. At every step each live hypothesis is extended by
      every token and the best (K - finished) extensions are kept; one that ends with EOS becomes
      a finished hypothesis and holds its place for good. So at most K hypotheses are explored at
      once, K finished ones end the sentence, and beam size 1 is exactly greedy search.
    - A sentence also stops as soon as its nbest-th best finished hypothesis cannot be beaten by
      any live one. Log-probabilities only decrease, so a live hypothesis with log-prob p scores at
      best p / lp(longest allowed length) when alpha > 0, and p / lp(next length) when alpha <= 0.
      (Stopping when the top beam first emits EOS would be wrong: with the length penalty a longer
      hypothesis can still overtake it.)
    - At the length limit only EOS is allowed, so every live hypothesis is finished there and each
      sentence gets nbest hypotheses (fewer only when it has fewer distinct ones, e.g. a limit of
      zero tokens).
    - All K beams would start from the same BOS, so the first step runs one row per sentence (its
      K best tokens give K distinct beams) and the cache is then repeated K times. The source's
      cross-attention keys/values are therefore computed once per sentence.
    Sentences that are complete are dropped from the batch.
    """
    alpha, K = length_penalty, beam_size
    V = model.config.tgt_vocab_size
    if not 1 <= nbest <= K <= V:
        raise ValueError(f"need 1 <= nbest ({nbest}) <= beam_size ({K}) <= vocabulary size ({V})")
    B, device = src.size(0), src.device
    limits, longest = _output_limits(model, src, max_len_a, max_len_b, pad_id)  # (B,), L

    memory: Tensor | None
    memory, src_mask = model.encode(src)  # (B, S, D), (B, 1, 1, S)
    cache = model.new_cache()

    # Finished hypotheses of all B sentences: at most K each (one per place). Column K is a scratch
    # place that absorbs, at each step, the candidates that did not finish.
    done_tokens = src.new_full((B, K + 1, longest + 1), pad_id)  # (B, K + 1, L + 1), EOS included
    done_log_probs = torch.full((B, K + 1), float("-inf"), device=device)  # (B, K + 1)
    done_scores = torch.full((B, K + 1), float("-inf"), device=device)  # (B, K + 1)
    done_lengths = torch.zeros((B, K + 1), dtype=torch.long, device=device)  # (B, K + 1)
    n_done = torch.zeros(B, dtype=torch.long, device=device)  # (B,)

    # The active sentences and their live hypotheses (-inf marks a place that is not live).
    sentences = torch.arange(B, device=device)  # (b,)
    beam_log_probs = torch.zeros((B, 1), device=device)  # (b, r): r = 1 before the first step
    history = src.new_empty((B, 1, 0))  # (b, r, t) tokens generated so far
    tokens = torch.full((B,), bos_id, dtype=torch.long, device=device)  # (b * r,) next input
    place_ranks = torch.arange(K, device=device)  # (K,)
    next_token_log_probs = NextTokenLogProbs(model, bos_id, eos_id, pad_id)
    check_every = _steps_between_checks(device)

    for step in range(longest + 1):
        b, r = beam_log_probs.shape
        states, _ = model.decode(tokens[:, None], memory, src_mask, cache)  # (b * r, 1, D)
        memory = None  # the cache now holds the source's keys and values: no need to keep it
        at_limit = (step >= limits[sentences]).repeat_interleave(r)  # (b * r,)
        step_log_probs = next_token_log_probs(states, at_limit)  # (b * r, V)

        # The K best extensions of each sentence, of which the first (K - finished) are kept.
        candidates = step_log_probs.view(b, r, V).add_(beam_log_probs[:, :, None])  # (b, r, V)
        cand_log_probs, flat = candidates.view(b, r * V).topk(K, dim=1)  # (b, K), best first
        origins, tokens = flat // V, flat % V  # (b, K) source beam and new token
        places_left = K - n_done[sentences]  # (b,)
        kept = (place_ranks < places_left[:, None]) & cand_log_probs.isfinite()  # (b, K)
        ends = kept & (tokens == eos_id)  # (b, K)
        live = kept & ~ends  # (b, K)
        history = torch.cat(
            [history.gather(1, origins[:, :, None].expand(b, K, step)), tokens[:, :, None]], dim=2
        )  # (b, K, t + 1)

        # Store the hypotheses that just ended, each in its sentence's next free place.
        places = n_done[sentences, None] + ends.long().cumsum(dim=1) - 1  # (b, K)
        places = places.masked_fill(~ends, K)  # (b, K); the rest go to the scratch place
        rows = sentences[:, None]  # (b, 1)
        done_tokens[rows, places, : step + 1] = history
        done_log_probs[rows, places] = cand_log_probs
        done_scores[rows, places] = cand_log_probs / _length_penalty(step + 1, alpha)
        done_lengths[rows, places] = step + 1
        n_done[sentences] += ends.sum(dim=1)
        beam_log_probs = cand_log_probs.masked_fill(~live, float("-inf"))  # (b, K)

        # Complete: no live hypothesis can beat the nbest-th finished one (see the docstring).
        if alpha > 0:
            best_penalty = _length_penalty(limits[sentences] + 1, alpha)  # (b,) longest output
        else:
            best_penalty = _length_penalty(step + 2, alpha)  # shortest output still possible
        best_possible = beam_log_probs.max(dim=1).values / best_penalty  # (b,)
        nth_best = done_scores[sentences, :K].topk(nbest, dim=1).values[:, -1]  # (b,)
        complete = nth_best >= best_possible  # (b,)
        # A complete sentence kept until the next check has no live place: it carries -inf along.

        # Next step's rows: place j of sentence i continues row i * r + origins[i, j].
        keep = torch.arange(b, device=device)  # (b',) sentences kept
        if step % check_every == check_every - 1 or step == longest:
            keep = (~complete).nonzero().squeeze(1)  # one host sync
            if keep.numel() == 0:
                break
        row_index = (keep[:, None] * r + origins[keep]).view(-1)  # (b' * K,)
        # Rows of one sentence share the source, so only the first step's expansion to K beams
        # and dropping sentences change the source's mask and cached keys/values.
        source_changes = r == 1 or keep.numel() < b
        cache.reorder(row_index, source_too=source_changes)
        if source_changes:
            src_mask = src_mask[row_index]
        sentences, history = sentences[keep], history[keep]
        beam_log_probs, tokens = beam_log_probs[keep], tokens[keep].view(-1)

    # Best first; one transfer to the host for the whole batch.
    order = done_scores[:, :K].argsort(dim=1, descending=True)[:, :nbest].tolist()  # (B, nbest)
    all_tokens = done_tokens.tolist()
    all_scores, all_log_probs = done_scores.tolist(), done_log_probs.tolist()
    all_lengths = done_lengths.tolist()
    return [
        [
            Hypothesis(
                tokens=all_tokens[i][j][: all_lengths[i][j] - 1],
                score=all_scores[i][j],
                log_prob=all_log_probs[i][j],
            )
            for j in order[i]
            if all_scores[i][j] > float("-inf")
        ]
        for i in range(B)
    ]


# --- the tutorial's reference method ------------------------------------------------------------


@torch.inference_mode()
def naive_greedy_search(
    model: Transformer,
    src: Tensor,
    *,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    length_penalty: float = 0.0,
    bos_id: int = BOS,
    eos_id: int = EOS,
    pad_id: int = PAD,
) -> list[Hypothesis]:
    """Greedy search the way the from-scratch tutorial does it: one sentence at a time, re-running
    the decoder over the whole prefix at every step (no cache) and asking the host after every
    token. Quadratic and slow; kept as the reference that `greedy_search` must equal, and as the
    baseline of the benchmarks. Same arguments and results as `greedy_search`."""
    alpha = length_penalty
    next_token_log_probs = NextTokenLogProbs(model, bos_id, eos_id, pad_id)
    hypotheses = []
    for row in src:
        source = row[row != pad_id][None]  # (1, S) without padding
        limit, _ = _output_limits(model, source, max_len_a, max_len_b, pad_id)  # (1,)
        memory, src_mask = model.encode(source)  # (1, S, D), (1, 1, 1, S)
        target = source.new_full((1, 1), bos_id)  # (1, t): BOS + tokens so far
        log_prob = torch.zeros(1, device=src.device)  # (1,)
        for step in range(int(limit) + 1):
            states, _ = model.decode(target, memory, src_mask)  # (1, t, D), recomputed
            step_log_probs = next_token_log_probs(states, step >= limit)  # (1, V)
            token_log_prob, token = step_log_probs.max(dim=-1)  # (1,), (1,)
            log_prob += token_log_prob
            target = torch.cat([target, token[:, None]], dim=1)  # (1, t + 1)
            if token.item() == eos_id:
                break
        length = target.size(1) - 1  # generated tokens, EOS included
        hypotheses.append(
            Hypothesis(
                tokens=target[0, 1:-1].tolist(),
                score=float(log_prob / _length_penalty(length, alpha)),
                log_prob=float(log_prob),
            )
        )
    return hypotheses


# --- what validation and translate.py call ------------------------------------------------------


def decode_batch(
    model: Transformer,
    src: Tensor,
    decode_config: DecodeConfig,
    bos_id: int = BOS,
    eos_id: int = EOS,
    pad_id: int = PAD,
) -> list[list[Hypothesis]]:
    """Decode a padded batch src (B, S) as the config says: greedy for beam size 1 (one hypothesis
    per sentence), else beam search with decode_config.nbest hypotheses, best first."""
    common = dict(
        max_len_a=decode_config.max_len_a,
        max_len_b=decode_config.max_len_b,
        length_penalty=decode_config.length_penalty,
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=pad_id,
    )
    if decode_config.beam_size == 1:
        return [[hypothesis] for hypothesis in greedy_search(model, src, **common)]
    return beam_search(
        model, src, beam_size=decode_config.beam_size, nbest=decode_config.nbest, **common
    )


def translate_ids(
    model: Transformer,
    sources: list[list[int]] | list[Tensor],
    decode_config: DecodeConfig,
    device: torch.device,
    *,
    bos_id: int = BOS,
    eos_id: int = EOS,
    pad_id: int = PAD,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> list[list[Hypothesis]]:
    """Decode a whole list of source id sequences (a validation set, a file), in their order.

    Sentences are sorted by length and grouped into batches of at most decode_config.batch_tokens
    padded source tokens (times beam_size, since every beam is a row), each padded only to its own
    longest sentence, so little work is spent on padding. An empty source gets one empty hypothesis
    without being decoded (an all-padding row would make attention NaN).

    shard=(rank, world_size) decodes only batch k with k % world_size == rank and leaves the other
    sentences None, for `distributed.gather_in_order` to fill in: the batches are the ones a single
    process would decode, so the merged result is identical to it."""
    sequences = [torch.as_tensor(source, dtype=torch.long).cpu().view(-1) for source in sources]
    results: list[list[Hypothesis] | None] = [None] * len(sequences)
    for i, sequence in enumerate(sequences):
        if sequence.numel() == 0:
            results[i] = [Hypothesis(tokens=[], score=0.0, log_prob=0.0)]

    # Longest first: the first sentence of each batch fixes its padded width.
    order = sorted(
        (i for i, sequence in enumerate(sequences) if sequence.numel() > 0),
        key=lambda i: sequences[i].numel(),
        reverse=True,
    )
    rows_per_sentence = decode_config.beam_size  # every beam is a row of the decoder's batch
    batches: list[list[int]] = []
    for i in order:
        if batches:
            padded = (len(batches[-1]) + 1) * sequences[batches[-1][0]].numel()
            if padded * rows_per_sentence <= decode_config.batch_tokens:
                batches[-1].append(i)
                continue
        batches.append([i])

    rank, world_size = shard
    batches = batches[rank::world_size]
    with tqdm(total=len(sequences), disable=not progress, desc="decoding", unit="sent") as bar:
        bar.update(len(sequences) - len(order))  # the empty ones
        for batch in batches:
            src = pad_sequence(
                [sequences[i] for i in batch], batch_first=True, padding_value=pad_id
            ).to(device)  # (B, S)
            for i, hypotheses in zip(
                batch, decode_batch(model, src, decode_config, bos_id, eos_id, pad_id), strict=True
            ):
                results[i] = hypotheses
            bar.update(len(batch))
    return results  # type: ignore[return-value]  # every slot of this shard is filled
