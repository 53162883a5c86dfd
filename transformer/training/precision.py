"""Which precision trains faster here, for `train.precision: auto` on a CPU with native bf16.

Native bf16 is not always much faster than fp32, nor faster at all: it depends on the CPU's
kernels (AVX512-BF16 or AMX), on how well they suit the model's matrix shapes, and on what autocast
adds around them (casts). So the run times a few training steps of its own model on its own
sentence lengths in each precision before the first real step, and keeps the faster. Rank 0
measures and decides for every rank; a resumed run keeps the precision it was saved with.
"""

from __future__ import annotations

import time
from functools import partial
from itertools import cycle, islice
from typing import Any

import torch
from torch import Tensor

from transformer.config import Config
from transformer.data.batching import Batch, TokenBatchSampler, make_loader
from transformer.data.loading import EncodedSplit
from transformer.device import PrecisionChoice, autocast_context, resolve_precision
from transformer.model import Transformer
from transformer.packing import row_multiple
from transformer.training import distributed
from transformer.training.loss import batch_loss_sum

PROBE_TOKENS = 1024  # per timed batch: small, so that the whole probe takes a second or two
PROBE_ROUNDS = 3  # rounds of one step per precision, alternating; the first is not counted


def step_loss_sum(
    model: Transformer, batch: Batch, device: torch.device, precision: str, label_smoothing: float
) -> Tensor:
    """The summed loss of `batch` as a training step in `precision` computes it on one process:
    packed rows rounded as training rounds them on this device, under that precision's autocast."""
    token_states = partial(model.token_states, row_multiple=row_multiple(device, precision))
    with autocast_context(device, precision):
        return batch_loss_sum(
            token_states,
            model.projection.linear,
            batch.src,
            batch.tgt_in,
            batch.labels,
            label_smoothing,
        )


def time_training_steps(
    model: Transformer,
    train: EncodedSplit,
    config: Config,
    device: torch.device,
    precisions: list[str],
) -> dict[str, float]:
    """Seconds of one forward and backward pass (no update) of `model` in each precision: the
    best of the timed rounds, each on another batch of real training sentences (so the matmul
    shapes vary as in training: on AMX a new shape costs a kernel build). The weights are left as
    they were, gradients cleared, and the random state restored (dropout draws from it), so the
    run that follows is the one it would have been."""
    sampler = TokenBatchSampler(
        train.src_lengths, train.tgt_lengths, PROBE_TOKENS, shuffle=True, seed=config.train.seed
    )
    # Again from the first batch when a tiny corpus has fewer batches than rounds.
    batches = [
        batch.to(device) for batch in islice(cycle(make_loader(train, sampler)), PROBE_ROUNDS)
    ]
    best = dict.fromkeys(precisions, float("inf"))
    model.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for round_index, batch in enumerate(batches):
            for precision in precisions:
                start = time.perf_counter()
                step_loss_sum(model, batch, device, precision, 0.0).backward()
                seconds = time.perf_counter() - start
                if round_index > 0:  # the first round warms up (allocations, kernel builds)
                    best[precision] = min(best[precision], seconds)
    model.zero_grad(set_to_none=True)
    return best


def choose_precision(
    config: Config,
    model: Transformer,
    train: EncodedSplit,
    device: torch.device,
    checkpoint: dict[str, Any] | None,
) -> PrecisionChoice:
    """`train.precision`, with 'auto' resolved: kept from the checkpoint of a resumed run (the
    same run goes on in the same precision), else decided by rank 0 for every rank."""
    if config.train.precision == "auto" and checkpoint is not None:
        saved = checkpoint["config"]["train"]["precision"]
        if saved != "auto":
            measured = checkpoint.get("precision_choice", {}).get("step_seconds", {})
            return PrecisionChoice(saved, "auto: kept from the run being resumed", measured)
    return distributed.from_main(
        lambda: resolve_precision(
            config.train.precision,
            device,
            measure=lambda precisions: time_training_steps(
                model, train, config, device, precisions
            ),
        )
    )
