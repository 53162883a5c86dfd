"""Greedy search, sampling and beam search over token ids: batched, incremental, one
implementation for all callers.

Validation, `translate.py`, the server and the benchmarks all decode through `translate_ids` /
`decode_batch`. Everything here is a pure function of the model(s) and integer ids: no tokenizer,
no printing. Every search takes one model or a list of models (an ensemble, see
`next_token.EnsembleScorer`) and optional forced target prefixes.

One search step, in every search (see `next_token.py` for the first two):
1. score: next-token log-probabilities of every row, from the decoder's newest position;
2. rules: PAD/BOS never, EOS forced at the length limit, the prefix's token forced inside it;
3. choose: the best token (greedy), a drawn token (sampling), or the best extensions of each
   sentence's beams (beam search);
4. record: write the chosen tokens and their log-probabilities into the outputs;
5. select: drop the sentences that are complete and reorder the rows (beam search), in the cache.

Dimension letters as in `model.py` (B batch, S source length, D d_model, V vocabulary), plus
K beam size, b sentences still being decoded, r rows (beams or samples) per sentence, N = b * r
decoder rows, t tokens so far and L the longest output allowed in the batch.

Conventions shared by every search, so that their scores can be compared:
- The decoder starts from BOS; a hypothesis ends with EOS. `Hypothesis.tokens` holds neither.
- Output length: at most `int(a * source_length + b)` tokens before the EOS (at least the forced
  prefix), capped so that every decoder position fits the model (max_positions - 1). When the
  limit is reached the EOS is forced, so every hypothesis is scored with its EOS, as fairseq does.
- A forced prefix is part of the output (`Hypothesis.tokens` starts with it) and of the score.
- Score = sum of log-probabilities (EOS included) / GNMT length penalty ((5 + length) / 6) ** alpha,
  where length counts the EOS (Wu et al., 2016). alpha = 0 ranks by raw log-probability. Sampling
  reports the model's own log-probabilities, not the temperature-scaled ones it draws from.

Beam search (`beam_search`; classic beam search, in which a finished hypothesis keeps its place):
- Each sentence has K = beam_size places. At every step each live hypothesis is extended by
  every token and the best (K - finished) extensions are kept; one that ends with EOS becomes
  a finished hypothesis and holds its place for good. So at most K hypotheses are explored at
  once, K finished ones end the sentence, and beam size 1 is exactly greedy search.
- A sentence also stops as soon as its nbest-th best finished hypothesis cannot be beaten by
  any live one (see `_complete`).
- At the length limit only EOS is allowed, so every live hypothesis is finished there and each
  sentence gets nbest hypotheses (fewer only when it has fewer distinct ones, e.g. a limit of
  zero tokens, or a forced prefix, which leaves one live beam until it ends).
- All K beams would start from the same BOS, so the first step runs one row per sentence (its
  K best tokens give K distinct beams). The source's cross-attention keys/values are kept
  once per sentence; the K rows of a sentence are folded into its query axis (model.py).

The model must already be in eval mode (the caller decides; dropout would make decoding random).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from tqdm import tqdm

from transformer.config import DecodeConfig
from transformer.inference.next_token import Scorer, SearchRules, make_scorer
from transformer.model import Transformer
from transformer.tokenization.tokenizer import BOS_ID, EOS_ID, PAD_ID

Models = Transformer | Sequence[Transformer]  # one model, or an ensemble


@dataclass(frozen=True)
class SearchSettings:
    """What every search shares: how long an output may be, how hypotheses are ranked, and the
    special ids. One object instead of the same six keywords on every search, so a caller sets
    them once (usually from a `DecodeConfig`, see `from_config`) and no search can forget one.

    max_len_a, max_len_b: at most int(a * source length + b) tokens before the EOS.
    length_penalty: the GNMT alpha that scores are normalised with (see `gnmt_penalty`).
    never_ids: tokens besides PAD and BOS that no output may contain (a multilingual model's
    target-language tags: `TokenizerPair.language_tag_ids`)."""

    max_len_a: float = 1.2
    max_len_b: int = 10
    length_penalty: float = 0.0
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    pad_id: int = PAD_ID
    never_ids: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, config: DecodeConfig, never_ids: Sequence[int] = ()) -> SearchSettings:
        return cls(
            config.max_len_a, config.max_len_b, config.length_penalty, never_ids=tuple(never_ids)
        )


BEAM_DEFAULTS = SearchSettings(length_penalty=0.6)  # beam search's alpha unless told otherwise


@dataclass
class Hypothesis:
    """One output sentence: ids without BOS and without the final EOS, and how the model rates it."""

    tokens: list[int]
    score: float  # log_prob / gnmt_penalty(len(tokens) + 1, alpha): what the search ranks by
    log_prob: float  # raw sum of the token log-probabilities, EOS included


def gnmt_penalty(length: Tensor | int, alpha: float) -> Tensor | float:
    """GNMT length penalty ((5 + length) / 6) ** alpha; scores are log-probs divided by it.

    Summed log-probabilities favour short outputs; dividing by a penalty that grows with length
    (alpha > 0) counteracts that. alpha = 0 gives 1 (no normalisation)."""
    return ((5.0 + length) / 6.0) ** alpha


def max_output_lengths(
    src: Tensor, max_len_a: float, max_len_b: int, pad_id: int, max_positions: int
) -> Tensor:
    """Most tokens (EOS not counted) each sentence may produce: a * source length + b, where the
    source length ignores padding. Capped at max_positions - 1 because the forced EOS is predicted
    from decoder position max_len. src (B, S) -> (B,) long."""
    source_lengths = (src != pad_id).sum(dim=1)  # (B,)
    limits = (max_len_a * source_lengths + max_len_b).long()  # (B,)
    return limits.clamp(min=0, max=max_positions - 1)


def _steps_between_checks(device: torch.device) -> int:
    """How often (in steps) to ask the host whether sentences have finished. On an accelerator each
    check waits for the device (a sync), so only every few steps; on the CPU a check is free and
    dropping finished sentences at once saves work."""
    return 1 if device.type == "cpu" else 4


@dataclass
class _Search:
    """What every search starts from: the scorer over the batch, its rules, and each sentence's
    length limit (B,) with the longest of them, L."""

    scorer: Scorer
    rules: SearchRules
    limits: Tensor
    longest: int


def _start_search(
    models: Models, src: Tensor, prefixes: Tensor | None, settings: SearchSettings
) -> _Search:
    """Check the sources, compute the length limits (at least each forced prefix), encode the
    batch. One host sync."""
    pad_id = settings.pad_id
    first = models if isinstance(models, Transformer) else models[0]
    if src.dim() != 2 or src.size(0) == 0:
        raise ValueError(
            f"src must be a non-empty (batch, length) tensor of ids, not {tuple(src.shape)}"
        )
    max_positions = first.config.max_positions
    limits = max_output_lengths(
        src, settings.max_len_a, settings.max_len_b, pad_id, max_positions
    )  # (B,)
    if prefixes is not None:
        if prefixes.size(0) != src.size(0):
            raise ValueError(f"{prefixes.size(0)} prefixes for {src.size(0)} sources")
        prefix_lengths = (prefixes != pad_id).sum(dim=1)  # (B,)
        limits = torch.maximum(limits, prefix_lengths).clamp(max=max_positions - 1)
        prefixes = prefixes[:, : max_positions - 1]
    shortest_source, shortest, longest = torch.stack(
        [(src != pad_id).sum(dim=1).min(), limits.min(), limits.max()]
    ).tolist()
    if shortest_source == 0:
        raise ValueError(
            "every source needs at least one token (an all-padding row makes attention NaN); "
            "translate_ids handles empty sources"
        )
    rules = SearchRules(
        limits,
        shortest,
        prefixes,
        bos_id=settings.bos_id,
        eos_id=settings.eos_id,
        pad_id=settings.pad_id,
        never_ids=settings.never_ids,
    )
    return _Search(make_scorer(models, src, longest + 1), rules, limits, longest)


# --- greedy search and sampling: one token per row and step -------------------------------------

Choose = Callable[[Tensor], tuple[Tensor, Tensor]]  # (N, V) log-probs -> (N,) log-prob, (N,) token


def _choose_best(log_probs: Tensor) -> tuple[Tensor, Tensor]:
    """Greedy: the most probable token of each row, (N, V) -> (N,) log-probs, (N,) tokens."""
    return log_probs.max(dim=-1)


def _row_by_row_search(
    search: _Search,
    src: Tensor,
    rows_per_sentence: int,
    choose: Choose,
    settings: SearchSettings,
) -> list[list[Hypothesis]]:
    """Greedy search and sampling: each of the r rows of a sentence takes one token per step, as
    `choose` picks it, until it ends; a sentence leaves the batch when all its rows have ended.
    Returns each sentence's r hypotheses, best first."""
    bos_id, eos_id, pad_id = settings.bos_id, settings.eos_id, settings.pad_id
    B, r, device = src.size(0), rows_per_sentence, src.device
    scorer, rules, longest = search.scorer, search.rules, search.longest

    # Results for all B * r rows, filled in as the active rows produce tokens.
    outputs = src.new_full((B * r, longest + 1), pad_id)  # (B * r, L + 1), EOS included
    log_probs = torch.zeros(B * r, device=device)  # (B * r,)
    lengths = torch.zeros(B * r, dtype=torch.long, device=device)  # (B * r,) tokens incl. EOS

    # The active rows: which output row each is, whether it has ended, its last token.
    rows = torch.arange(B * r, device=device)  # (N,); its sentence is rows // r
    finished = torch.zeros(B * r, dtype=torch.bool, device=device)  # (N,)
    tokens = torch.full((B * r,), bos_id, dtype=torch.long, device=device)  # (N,)
    check_every = _steps_between_checks(device)

    for step in range(longest + 1):
        step_log_probs = scorer(tokens)  # (N, V)
        rules.apply(step_log_probs, step, rows // r)
        token_log_probs, tokens = choose(step_log_probs)  # (N,), (N,)
        # Record; rows that already ended (and wait for their sentence) add nothing.
        tokens = tokens.masked_fill(finished, pad_id)
        outputs[rows, step] = tokens
        log_probs[rows] += token_log_probs.masked_fill(finished, 0.0)
        lengths[rows] += (~finished).long()
        finished = finished | (tokens == eos_id)

        if step % check_every == check_every - 1 or step == longest:
            keep = (~finished.view(-1, r).all(dim=1)).nonzero().squeeze(1)  # (b',): host sync
            if keep.numel() == 0:
                break
            if keep.numel() < finished.numel() // r:
                kept_rows = (keep[:, None] * r + torch.arange(r, device=device)).view(-1)
                rows, finished, tokens = rows[kept_rows], finished[kept_rows], tokens[kept_rows]
                scorer.reorder(kept_rows, keep)

    return _best_first(outputs, lengths, log_probs, settings.length_penalty, r)


def _best_first(
    outputs: Tensor, lengths: Tensor, log_probs: Tensor, alpha: float, r: int
) -> list[list[Hypothesis]]:
    """Group the rows (B * r, ...) by sentence, each group sorted by score. One transfer to the
    host for the whole batch; the EOS is cut off the tokens."""
    scores = log_probs / gnmt_penalty(lengths, alpha)  # (B * r,)
    rows = zip(outputs.tolist(), lengths.tolist(), log_probs.tolist(), scores.tolist(), strict=True)
    flat = [
        Hypothesis(tokens=row[: length - 1], score=score, log_prob=log_prob)
        for row, length, log_prob, score in rows
    ]
    groups = [flat[i : i + r] for i in range(0, len(flat), r)]
    return [sorted(group, key=lambda h: h.score, reverse=True) for group in groups]


@torch.inference_mode()
def greedy_search(
    model: Models,
    src: Tensor,
    settings: SearchSettings = SearchSettings(),
    *,
    prefixes: Tensor | None = None,
) -> list[Hypothesis]:
    """The most probable next token at every step, for a padded batch of sources src (B, S).

    Incremental: each step feeds only the newest token and the decoder cache holds the past
    (cross-attention keys/values are computed once per sentence). Sentences that have finished are
    dropped from the batch. The length penalty (alpha) only affects the reported score, so that
    greedy scores are comparable with beam search's. prefixes (B, P), padded with pad_id: tokens
    each output must start with. Returns one hypothesis per sentence."""
    search = _start_search(model, src, prefixes, settings)
    results = _row_by_row_search(search, src, 1, _choose_best, settings)
    return [hypotheses[0] for hypotheses in results]


def _sampler(
    temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> Choose:
    """Draw each row's token from its distribution sharpened or flattened by the temperature and
    restricted to the top_k most probable tokens (0: all) and to the smallest set whose
    probability reaches top_p (nucleus sampling, Holtzman et al., 2020; 1.0: all). Returns the
    drawn tokens with their (untempered) log-probabilities."""

    def choose(log_probs: Tensor) -> tuple[Tensor, Tensor]:
        scores = log_probs / temperature if temperature != 1.0 else log_probs  # (N, V)
        candidates = None  # token ids of the columns of `scores`, when restricted
        if top_k > 0 and top_k < scores.size(1):
            scores, candidates = scores.topk(top_k, dim=1)  # (N, k), sorted
        if top_p < 1.0:
            if candidates is None:
                scores, candidates = scores.sort(dim=1, descending=True)  # (N, V)
            probs = scores.softmax(dim=1)
            # Drop a token when the more probable ones already reach top_p (never the first).
            outside = probs.cumsum(dim=1) - probs >= top_p  # (N, k)
            scores = scores.masked_fill(outside, float("-inf"))
        drawn = torch.multinomial(scores.softmax(dim=1), 1, generator=generator)  # (N, 1)
        tokens = drawn if candidates is None else candidates.gather(1, drawn)  # (N, 1)
        return log_probs.gather(1, tokens).squeeze(1), tokens.squeeze(1)

    return choose


@torch.inference_mode()
def sample_search(
    model: Models,
    src: Tensor,
    settings: SearchSettings = SearchSettings(),
    *,
    nbest: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    prefixes: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """`nbest` translations of each source of src (B, S), each drawn token by token from the model
    (see `_sampler` for temperature, top_k and top_p), best score first. The draws come from
    `generator` (a seeded torch.Generator on src's device makes them reproducible for the same
    input and batching); None uses the global generator. The nbest rows of a sentence share its
    source keys/values, like the beams of beam search."""
    if temperature <= 0 or not 0 < top_p <= 1 or top_k < 0 or nbest < 1:
        raise ValueError(
            f"need temperature > 0 ({temperature}), 0 < top_p <= 1 ({top_p}), top_k >= 0 "
            f"({top_k}) and nbest >= 1 ({nbest})"
        )
    search = _start_search(model, src, prefixes, settings)
    choose = _sampler(temperature, top_k, top_p, generator)
    return _row_by_row_search(search, src, nbest, choose, settings)


# --- beam search --------------------------------------------------------------------------------


class _FinishedHypotheses:
    """The hypotheses of all B sentences that have ended: at most K each (one per beam place).
    Place K is a scratch place that absorbs, at each step, the candidates that did not end."""

    def __init__(self, B: int, K: int, longest: int, src: Tensor, pad_id: int) -> None:
        device = src.device
        self.K = K
        self.tokens = src.new_full((B, K + 1, longest + 1), pad_id)  # (B, K + 1, L + 1)
        self.log_probs = torch.full((B, K + 1), float("-inf"), device=device)  # (B, K + 1)
        self.scores = torch.full((B, K + 1), float("-inf"), device=device)  # (B, K + 1)
        self.lengths = torch.zeros((B, K + 1), dtype=torch.long, device=device)  # (B, K + 1)
        self.count = torch.zeros(B, dtype=torch.long, device=device)  # (B,)

    def store(
        self,
        sentences: Tensor,
        ends: Tensor,
        history: Tensor,
        log_probs: Tensor,
        score_scale: float,
    ) -> None:
        """Each candidate that ends, ends (b, K) bool, goes to its sentence's next free place,
        with its tokens history (b, K, t) and log-probability (b, K); its score is the
        log-probability * score_scale (1 / the length penalty of this step's length)."""
        places = self.count[sentences, None] + ends.long().cumsum(dim=1) - 1  # (b, K)
        places = places.masked_fill(~ends, self.K)  # (b, K); the rest go to the scratch place
        rows, t = sentences[:, None], history.size(2)  # (b, 1)
        self.tokens[rows, places, :t] = history
        self.log_probs[rows, places] = log_probs
        self.scores[rows, places] = log_probs * score_scale
        self.lengths[rows, places] = t
        self.count[sentences] += ends.sum(dim=1)

    def nth_best_score(self, sentences: Tensor, n: int) -> Tensor:
        """(b,) the n-th best score among each sentence's finished hypotheses (-inf if fewer)."""
        return self.scores[sentences, : self.K].topk(n, dim=1).values[:, -1]

    def best_first(self, nbest: int) -> list[list[Hypothesis]]:
        """Each sentence's nbest best hypotheses; one transfer to the host for the whole batch."""
        order = self.scores[:, : self.K].argsort(dim=1, descending=True)[:, :nbest].tolist()
        tokens, scores = self.tokens.tolist(), self.scores.tolist()
        log_probs, lengths = self.log_probs.tolist(), self.lengths.tolist()
        return [
            [
                Hypothesis(tokens[i][j][: lengths[i][j] - 1], scores[i][j], log_probs[i][j])
                for j in order[i]
                if scores[i][j] > float("-inf")
            ]
            for i in range(len(order))
        ]


def _best_extensions(
    step_log_probs: Tensor, beam_log_probs: Tensor, K: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The K best extensions of each sentence's beams: step_log_probs (b * r, V), beam_log_probs
    (b, r) -> their log-probabilities (b, K), best first, the beam each extends (b, K) and its
    new token (b, K).

    A beam's own K best tokens are the only ones of it that can be among its sentence's K best
    (adding the beam's log-probability keeps the order within the beam), so the (b * r, V) table
    is read once, by a per-row top-K, and the beams are compared on (b, r * K) candidates."""
    b, r = beam_log_probs.shape
    row_best, row_tokens = step_log_probs.topk(K, dim=1)  # (b * r, K) each
    candidates = row_best.view(b, r, K).add_(beam_log_probs[:, :, None])  # (b, r, K)
    log_probs, flat = candidates.view(b, r * K).topk(K, dim=1)  # (b, K)
    return log_probs, flat // K, row_tokens.view(b, r * K).gather(1, flat)


@torch.inference_mode()
def beam_search(
    model: Models,
    src: Tensor,
    settings: SearchSettings = BEAM_DEFAULTS,
    *,
    beam_size: int = 5,
    nbest: int = 1,
    prefixes: Tensor | None = None,
) -> list[list[Hypothesis]]:
    """The `nbest` best hypotheses of each sentence of a padded batch src (B, S), best first.
    How the beam works is in the module docstring ("Beam search"); sentences that are complete
    are dropped from the batch."""
    alpha, K, eos_id = settings.length_penalty, beam_size, settings.eos_id
    V = (model if isinstance(model, Transformer) else model[0]).config.tgt_vocab_size
    if not 1 <= nbest <= K <= V:
        raise ValueError(f"need 1 <= nbest ({nbest}) <= beam_size ({K}) <= vocabulary size ({V})")
    B, device = src.size(0), src.device
    search = _start_search(model, src, prefixes, settings)
    scorer, rules, limits = search.scorer, search.rules, search.limits
    finished = _FinishedHypotheses(B, K, search.longest, src, settings.pad_id)

    # The active sentences and their live hypotheses (-inf marks a place that is not live).
    sentences = torch.arange(B, device=device)  # (b,)
    beam_log_probs = torch.zeros((B, 1), device=device)  # (b, r): r = 1 before the first step
    history = src.new_empty((B, 1, 0))  # (b, r, t) tokens generated so far
    tokens = torch.full((B,), settings.bos_id, dtype=torch.long, device=device)  # (b * r,)
    place_ranks = torch.arange(K, device=device)  # (K,)
    check_every = _steps_between_checks(device)

    for step in range(search.longest + 1):
        b, r = beam_log_probs.shape
        step_log_probs = scorer(tokens)  # (b * r, V)
        rules.apply(step_log_probs, step, sentences.repeat_interleave(r) if r > 1 else sentences)
        cand_log_probs, origins, tokens = _best_extensions(step_log_probs, beam_log_probs, K)

        history, beam_log_probs = _record_extensions(
            finished,
            sentences,
            history,
            cand_log_probs,
            origins,
            tokens,
            place_ranks,
            eos_id,
            alpha,
        )

        # Select: place j of sentence i continues row i * r + origins[i, j]; complete sentences
        # leave (checked every few steps: one that waits carries -inf along).
        keep = torch.arange(b, device=device)  # (b',)
        if step % check_every == check_every - 1 or step == search.longest:
            complete = _complete(finished, beam_log_probs, sentences, limits, step, alpha, nbest)
            keep = (~complete).nonzero().squeeze(1)  # one host sync
            if keep.numel() == 0:
                break
        scorer.reorder(
            (keep[:, None] * r + origins[keep]).view(-1), keep if keep.numel() < b else None
        )
        sentences, history = sentences[keep], history[keep]
        beam_log_probs, tokens = beam_log_probs[keep], tokens[keep].view(-1)

    return finished.best_first(nbest)


def _record_extensions(
    finished: _FinishedHypotheses,
    sentences: Tensor,
    history: Tensor,
    cand_log_probs: Tensor,
    origins: Tensor,
    tokens: Tensor,
    place_ranks: Tensor,
    eos_id: int,
    alpha: float,
) -> tuple[Tensor, Tensor]:
    """One beam step's bookkeeping: of each sentence's K candidates (b, K), best first, the first
    (K - finished) are kept, and those that end with EOS are stored as finished hypotheses.
    history (b, r, t) -> (b, K, t + 1), the tokens of each candidate; also returns the live beams'
    log-probabilities (b, K), -inf where a place is not live."""
    b, K = cand_log_probs.shape
    places_left = K - finished.count[sentences]  # (b,)
    kept = (place_ranks < places_left[:, None]) & cand_log_probs.isfinite()  # (b, K)
    ends = kept & (tokens == eos_id)  # (b, K)
    t = history.size(2)
    history = torch.cat(
        [history.gather(1, origins[:, :, None].expand(b, K, t)), tokens[:, :, None]], dim=2
    )  # (b, K, t + 1)
    finished.store(sentences, ends, history, cand_log_probs, 1 / gnmt_penalty(t + 1, alpha))
    beam_log_probs = cand_log_probs.masked_fill(~(kept & ~ends), float("-inf"))  # (b, K)
    return history, beam_log_probs


def _complete(
    finished: _FinishedHypotheses,
    beam_log_probs: Tensor,
    sentences: Tensor,
    limits: Tensor,
    step: int,
    alpha: float,
    nbest: int,
) -> Tensor:
    """(b,) bool: sentences whose nbest-th best finished hypothesis no live one can beat.

    Log-probabilities only decrease, so a live hypothesis with log-prob p scores at best
    p / lp(longest allowed length) when alpha > 0, and p / lp(next length) when alpha <= 0.
    (Stopping when the top beam first emits EOS would be wrong: with the length penalty a longer
    hypothesis can still overtake it.)"""
    if alpha > 0:
        best_penalty = gnmt_penalty(limits[sentences] + 1, alpha)  # (b,) longest output
    else:
        best_penalty = gnmt_penalty(step + 2, alpha)  # shortest output still possible
    best_possible = beam_log_probs.max(dim=1).values / best_penalty  # (b,)
    return finished.nth_best_score(sentences, nbest) >= best_possible


# --- what validation, translate.py and the server call ------------------------------------------


def decode_batch(
    model: Models,
    src: Tensor,
    decode_config: DecodeConfig,
    *,
    prefixes: Tensor | None = None,
    generator: torch.Generator | None = None,
    never_ids: Sequence[int] = (),
) -> list[list[Hypothesis]]:
    """Decode a padded batch src (B, S) as the config says: sampling when decode_config.sample
    (nbest draws per sentence, from `generator`), else greedy for beam size 1 (one hypothesis per
    sentence) or beam search with decode_config.nbest hypotheses; best first. prefixes (B, P),
    padded with pad_id: forced first tokens of each output. never_ids: see SearchSettings."""
    settings = SearchSettings.from_config(decode_config, never_ids)
    if decode_config.sample:
        return sample_search(
            model,
            src,
            settings,
            nbest=decode_config.nbest,
            temperature=decode_config.temperature,
            top_k=decode_config.top_k,
            top_p=decode_config.top_p,
            generator=generator,
            prefixes=prefixes,
        )
    if decode_config.beam_size == 1:
        return [
            [hypothesis] for hypothesis in greedy_search(model, src, settings, prefixes=prefixes)
        ]
    return beam_search(
        model,
        src,
        settings,
        beam_size=decode_config.beam_size,
        nbest=decode_config.nbest,
        prefixes=prefixes,
    )


def sampling_generator(decode_config: DecodeConfig, device: torch.device) -> torch.Generator:
    """The random generator of a sampling run: seeded with decode_config.seed, so that the same
    input, settings and seed give the same samples, or from the OS when the seed is None. Local
    to the run: the global RNG (and so training's) is never touched."""
    generator = torch.Generator(device)
    if decode_config.seed is None:
        generator.seed()
    else:
        generator.manual_seed(decode_config.seed)
    return generator


def _as_ids(sequences: Sequence[list[int] | Tensor]) -> list[Tensor]:
    return [torch.as_tensor(s, dtype=torch.long).cpu().view(-1) for s in sequences]


def translate_ids(
    model: Models,
    sources: list[list[int]] | list[Tensor],
    decode_config: DecodeConfig,
    device: torch.device,
    *,
    prefixes: list[list[int]] | list[Tensor] | None = None,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
    never_ids: Sequence[int] = (),
) -> list[list[Hypothesis]]:
    """Decode a whole list of source id sequences (a validation set, a file), in their order.

    Sentences are sorted by length and grouped into batches of at most decode_config.batch_tokens
    padded source tokens (times the rows per sentence: beams or samples), each padded only to its
    own longest sentence, so little work is spent on padding. An empty source gets one empty
    hypothesis without being decoded (an all-padding row would make attention NaN); its prefix,
    if any, is ignored. `prefixes`, one per source (empty: none), force each output's beginning.
    Sampling draws from one generator seeded by decode_config.seed, so a run is reproducible
    for the same input and settings.

    shard=(rank, world_size) decodes only batch k with k % world_size == rank and leaves the other
    sentences None, for `distributed.gather_in_order` to fill in: the batches are the ones a single
    process would decode, so the merged result is identical to it. never_ids: tokens no output
    contains (a multilingual model's language tags), as in SearchSettings."""
    sequences = _as_ids(sources)
    forced = _as_ids(prefixes) if prefixes is not None else None
    if forced is not None and len(forced) != len(sequences):
        raise ValueError(f"{len(forced)} prefixes for {len(sequences)} sources")
    results: list[list[Hypothesis] | None] = [None] * len(sequences)
    for i, sequence in enumerate(sequences):
        if sequence.numel() == 0:
            results[i] = [Hypothesis(tokens=[], score=0.0, log_prob=0.0)]
    order = [i for i, sequence in enumerate(sequences) if sequence.numel() > 0]
    rows = decode_config.nbest if decode_config.sample else decode_config.beam_size
    batches = _length_batches(sequences, order, rows, decode_config.batch_tokens)
    generator = sampling_generator(decode_config, device) if decode_config.sample else None

    rank, world_size = shard
    batches = batches[rank::world_size]
    with tqdm(total=len(sequences), disable=not progress, desc="decoding", unit="sent") as bar:
        bar.update(len(sequences) - len(order))  # the empty ones
        for batch in batches:
            src = pad_sequence(
                [sequences[i] for i in batch], batch_first=True, padding_value=PAD_ID
            ).to(device)  # (B, S)
            batch_prefixes = None
            if forced is not None and any(forced[i].numel() for i in batch):
                batch_prefixes = pad_sequence(
                    [forced[i] for i in batch], batch_first=True, padding_value=PAD_ID
                ).to(device)  # (B, P)
            decoded = decode_batch(
                model,
                src,
                decode_config,
                prefixes=batch_prefixes,
                generator=generator,
                never_ids=never_ids,
            )
            for i, hypotheses in zip(batch, decoded, strict=True):
                results[i] = hypotheses
            bar.update(len(batch))
    return results  # type: ignore[return-value]  # every slot of this shard is filled


def _length_batches(
    sequences: list[Tensor], order: list[int], rows_per_sentence: int, batch_tokens: int
) -> list[list[int]]:
    """Indices `order` grouped into batches of similar length, longest first (the first sentence
    of each batch fixes its padded width), each within batch_tokens padded source tokens times
    the decoder rows per sentence."""
    order = sorted(order, key=lambda i: sequences[i].numel(), reverse=True)
    batches: list[list[int]] = []
    for i in order:
        if batches:
            padded = (len(batches[-1]) + 1) * sequences[batches[-1][0]].numel()
            if padded * rows_per_sentence <= batch_tokens:
                batches[-1].append(i)
                continue
        batches.append([i])
    return batches
