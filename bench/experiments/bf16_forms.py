"""Other forms of the bf16 training step, timed against the project's, interleaved in one process.

    python bench/experiments/bf16_forms.py                 # 5 rounds of 8 steps per form, after 40 warm-up steps
    python bench/experiments/bf16_forms.py --rounds 8 --forms autocast bf16-attention
    python bench/experiments/bf16_forms.py --forms autocast no-dropout fp32 fp32-no-dropout   # the ceiling

Forms (the default recipe's model and token batches, the whole step: forward, loss, backward,
clipping, AdamW):
- `autocast`: the project's step (float32 weights, bf16 autocast; packed rows rounded on AMX).
- `bf16-weights`: the step on a bf16 copy of the model (no autocast: every activation in bf16), its
  gradients handed to float32 master weights that AdamW updates, then copied back into the bf16
  copy (Micikevicius et al. 2018): what the issue named as the way past autocast's per-op casts.
- `bf16-attention`: the project's step with training attention in bf16 instead of float32.
- `fp32`: the float32 step, for the ratio.
- `no-dropout`, `fp32-no-dropout`: the project's step in bf16 / float32 with every dropout off
  (every Dropout layer's p and every attention block's attention_dropout set to 0): not a form to
  train with, but the ceiling of what any cheaper dropout could give.

Each form gets the same batches in the same order, blocks of --steps-per-round steps in turn, so a
drifting VM slows every form alike. Prints target tokens/s per form; asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

import transformer.model as model_module
from transformer.config import Config
from transformer.data.batching import Batch
from transformer.device import keep_freed_cpu_memory
from transformer.packing import row_multiple
from transformer.training.loss import batch_loss_sum
from transformer.training.precision import step_loss_sum
from transformer.training.start import make_optimizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/: peers.py
from peers import recipe_model_and_batches  # noqa: E402

CPU = torch.device("cpu")
FLOAT32_ATTENTION = model_module.fused_attention


def bf16_training_attention(q, k, v, mask, dropout_p, is_causal):  # type: ignore[no-untyped-def]
    """The project's attention, but training attention stays in the autocast dtype."""
    if q.requires_grad:
        if is_causal:
            mask = model_module.causal_mask(q.size(-2), k.size(-2), q.device)
        with torch.autocast("cpu", enabled=False):
            return model_module.explicit_attention(q, k, v, mask, dropout_p)
    return FLOAT32_ATTENTION(q, k, v, mask, dropout_p, is_causal)


def autocast_step(
    model: torch.nn.Module, config: Config, precision: str
) -> Callable[[Batch], None]:
    optimizer = make_optimizer(model, config)

    def step(batch: Batch) -> None:
        loss = step_loss_sum(model, batch, CPU, precision, 0.1)
        (loss / batch.n_tgt_tokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bf16_weights_step(model: torch.nn.Module, config: Config) -> Callable[[Batch], None]:
    master = copy.deepcopy(model)
    optimizer = make_optimizer(master, config)
    compute = copy.deepcopy(model).to(torch.bfloat16)
    master_parameters, compute_parameters = list(master.parameters()), list(compute.parameters())

    def step(batch: Batch) -> None:
        token_states = partial(compute.token_states, row_multiple=row_multiple(CPU, "bf16"))
        loss = batch_loss_sum(
            token_states, compute.projection.linear, batch.src, batch.tgt_in, batch.labels, 0.1
        )
        (loss / batch.n_tgt_tokens).backward()
        for weight, bf16_weight in zip(master_parameters, compute_parameters, strict=True):
            weight.grad = bf16_weight.grad.float()
            bf16_weight.grad = None
        torch.nn.utils.clip_grad_norm_(master_parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for weight, bf16_weight in zip(master_parameters, compute_parameters, strict=True):
                bf16_weight.copy_(weight)

    return step


def without_dropout(model: torch.nn.Module) -> None:
    """Every dropout of the model off: its Dropout layers and its attention dropout."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(module, model_module.MultiHeadAttentionBlock):
            module.attention_dropout = 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    forms = ["autocast", "bf16-weights", "bf16-attention", "fp32", "no-dropout", "fp32-no-dropout"]
    parser.add_argument("--forms", nargs="+", default=forms[:4], choices=forms)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=40, help="steps of each form first")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_cpu_memory(CPU)
    count = args.warmup + args.rounds * args.steps_per_round
    config, model, _, batches = recipe_model_and_batches(count)
    model.train()
    steps = {}
    for form in args.forms:
        form_model = copy.deepcopy(model)  # every form starts from the same weights
        if form.endswith("no-dropout"):
            without_dropout(form_model)
        if form == "bf16-weights":
            steps[form] = bf16_weights_step(form_model, config)
        else:
            precision = "fp32" if form.startswith("fp32") else "bf16"
            steps[form] = autocast_step(form_model, config, precision)

    def run(form: str, batch: Batch) -> None:
        model_module.fused_attention = (
            bf16_training_attention if form == "bf16-attention" else FLOAT32_ATTENTION
        )
        steps[form](batch)

    for batch in batches[: args.warmup]:
        for form in args.forms:
            run(form, batch)
    seconds, tokens = dict.fromkeys(args.forms, 0.0), dict.fromkeys(args.forms, 0)
    for round_index in range(args.rounds):
        start = args.warmup + round_index * args.steps_per_round
        for form in args.forms:
            began = time.perf_counter()
            for batch in batches[start : start + args.steps_per_round]:
                run(form, batch)
                tokens[form] += batch.n_tgt_tokens
            seconds[form] += time.perf_counter() - began
    model_module.fused_attention = FLOAT32_ATTENTION
    reference = tokens[args.forms[0]] / seconds[args.forms[0]]
    for form in args.forms:
        speed = tokens[form] / seconds[form]
        print(f"{form:<16} {speed:>8,.0f} target tokens/s  {speed / reference:.2f}x")


if __name__ == "__main__":
    main()
