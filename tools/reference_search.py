"""Greedy search the way the from-scratch tutorial does it: the reference that the project's batched,
cached `greedy_search` must equal (tests/test_decoding.py) and the baseline its speed is measured
against (bench/experiments/decode_speed.py). Not product code: nothing in transformer/ imports it.

    sys.path.insert(0, "tools"); from reference_search import naive_greedy_search
"""

from __future__ import annotations

import torch
from torch import Tensor

from transformer.inference.decoding import (
    Hypothesis,
    SearchSettings,
    gnmt_penalty,
    max_output_lengths,
)
from transformer.inference.next_token import SearchRules
from transformer.model import Transformer


@torch.inference_mode()
def naive_greedy_search(
    model: Transformer, src: Tensor, settings: SearchSettings | None = None
) -> list[Hypothesis]:
    """Greedy search the way the from-scratch tutorial does it: one sentence at a time, re-running
    the decoder over the whole prefix at every step (no cache) and asking the host after every
    token. Quadratic and slow; kept as the reference that `greedy_search` must equal, and as the
    baseline of the benchmarks. Same arguments and results as `greedy_search`."""
    settings = settings or SearchSettings()
    alpha, bos_id, eos_id, pad_id = (
        settings.length_penalty,
        settings.bos_id,
        settings.eos_id,
        settings.pad_id,
    )
    hypotheses = []
    for row in src:
        source = row[row != pad_id][None]  # (1, S) without padding
        limit = max_output_lengths(
            source, settings.max_len_a, settings.max_len_b, pad_id, model.config.max_positions
        )  # (1,)
        rules = SearchRules(
            limit,
            int(limit),
            None,
            bos_id=bos_id,
            eos_id=eos_id,
            pad_id=pad_id,
            never_ids=settings.never_ids,
        )
        memory, src_mask = model.encode(source)  # (1, S, D), (1, 1, 1, S)
        target = source.new_full((1, 1), bos_id)  # (1, t): BOS + tokens so far
        log_prob = torch.zeros(1, device=src.device)  # (1,)
        for step in range(int(limit) + 1):
            states, _ = model.decode(target, memory, src_mask)  # (1, t, D), recomputed
            step_log_probs = model.project(states[:, -1]).float().log_softmax(dim=-1)  # (1, V)
            rules.apply(step_log_probs, step, torch.zeros(1, dtype=torch.long))
            token_log_prob, token = step_log_probs.max(dim=-1)  # (1,), (1,)
            log_prob += token_log_prob
            target = torch.cat([target, token[:, None]], dim=1)  # (1, t + 1)
            if token.item() == eos_id:
                break
        length = target.size(1) - 1  # generated tokens, EOS included
        hypotheses.append(
            Hypothesis(
                tokens=target[0, 1:-1].tolist(),
                score=float(log_prob / gnmt_penalty(length, alpha)),
                log_prob=float(log_prob),
            )
        )
    return hypotheses
