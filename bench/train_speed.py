"""Training speed against Hugging Face MarianMTModel and torch.nn.Transformer on the same batches.

    pip install transformers                                   # bench-only dependency
    python bench/train_speed.py                                # both batch modes, fp32 and bf16
    python bench/train_speed.py --batch-mode sentences --precisions fp32 --steps 20
    python bench/train_speed.py --d-model 512 --layers 6 --heads 8 --d-ff 2048   # base model

Three implementations of the same encoder-decoder (shared embeddings, tied output projection,
sinusoidal positions, ReLU, dropout on embeddings / sub-layer outputs / feed-forward hidden layer,
no attention dropout) train on the same Multi30k en->de batches, with the same loss (the project's
label-smoothed `token_loss_sum`, divided by the batch's target tokens), gradient clipping at 1.0 and
AdamW (lr 1e-4, betas 0.9/0.98):
- project: `build_transformer` (pre-norm), trained through `Transformer.token_states` as train.py
           does: position-wise layers and the output projection run on real tokens only
           (transformer/packing.py), in bf16 on a CPU with AMX rounded up to a multiple of 64 rows;
  project+rows64: the same with the rows rounded up to 64 on any CPU in bf16 (what an AMX CPU
           does), to see what the rounding does on this one;
- marian:  `MarianMTModel(MarianConfig(...))`, random init, SDPA attention, fed `decoder_input_ids`
           (its own loss ignores nothing by default, so the loss is computed outside, like the
           others). Marian is post-norm: the one architectural difference;
- torch:   `torch.nn.Transformer(batch_first=True, norm_first=True)` with a shared nn.Embedding,
           sinusoidal positions, a tied Linear projection, a source key padding mask (encoder and
           cross-attention) and a boolean causal mask. Target padding is not masked, for any of
           the three: it sits at the end, so under the causal mask no real position sees it.

Batches are padded to their own longest sentence. `--batch-mode sentences`: 64 consecutive
sentences of a seeded shuffle of the training split; `--batch-mode tokens`: the project's
TokenBatchSampler at --max-tokens. The batch list is built once and used by every implementation.

On a CPU with AMX, oneDNN builds a bf16 kernel for every new matrix shape (1-17 ms each), and each
of a run's first steps meets row counts no earlier step had: a few warm-up steps measure mostly
those builds (Intel Xeon, 2026-12-02: bf16 1.42x fp32 with 3 warm-up steps, 1.72x with 30, 1.83x
after 60; docs/history.md). Give bf16 30 or more warm-up steps there to see a run's steady state.

Each (implementation, precision) runs in a fresh subprocess, so that its peak resident memory
(VmHWM, "peak MiB": Python, torch, the libraries' code, the batches and the training) is its
own. "over base" is that peak minus the resident memory just before the model is built, after a
tiny model of the same implementation has taken two steps (so that library code pages loaded on
first use are in the base): what the model, gradients, AdamW state and activations add.

Throughput = real target (label) tokens of the timed steps / their wall time.
Model FLOPs of a step (real tokens only, so padding shows up as lost utilisation):
    6 * (N_enc * src_tokens + N_dec * tgt_tokens) + 3 * attention_forward
    N_enc = Le * (4 D^2 + 2 D F) + Ld * 2 D^2    (encoder layers, and the decoder's cross-attention
                                                 keys/values, which are computed per source token)
    N_dec = Ld * (6 D^2 + 2 D F) + D V           (self-attention q/k/v/out, cross q/out, FFN, output
                                                 projection)
    attention_forward = sum over sentences of 4 D (Le S^2 + Ld T^2 + Ld T S)   (QK^T and AV; the
                                                 causal T^2 counted in full, as kernels compute it)
Embedding look-ups, norms, softmax, dropout and the optimiser are not counted. MFU = achieved model
FLOP/s / the matmul peak this script measures (the fastest of square torch.matmuls of a few sizes,
in fp32 and in bf16).
Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from peers import add_size_and_data_arguments, marian_model, prepare_corpus, project_model
from torch import Tensor, nn

from transformer.data.batching import TokenBatchSampler, collate_batch
from transformer.data.loading import EncodedSplit
from transformer.device import keep_freed_cpu_memory
from transformer.model import PositionalEncoding, Transformer
from transformer.packing import row_multiple
from transformer.tokenization.tokenizer import PAD_ID
from transformer.training.loss import batch_loss_sum, token_loss_sum

IMPLEMENTATIONS = ("project", "project+rows64", "project+compile", "marian", "torch")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_size_and_data_arguments(parser)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument(
        "--batch-mode", default="sentences,tokens", help="comma list of: sentences, tokens"
    )
    parser.add_argument("--sentences", type=int, default=64, help="sentences per batch")
    parser.add_argument("--max-tokens", type=int, default=4096, help="token budget per batch")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (fp32)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (fp32)")
    parser.add_argument("--bf16-steps", type=int, default=3, help="timed steps (bf16)")
    parser.add_argument("--bf16-warmup", type=int, default=1, help="untimed steps first (bf16)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of: fp32, bf16")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--peak-sizes", default="256,512,1024,2048", help="matmul sides tried for the peak"
    )
    parser.add_argument("--peak-seconds", type=float, default=2.0, help="time per matmul size")
    parser.add_argument("--peak-only", action="store_true", help="measure the peaks and stop")
    parser.add_argument("--seed", type=int, default=1234)
    # Internal: one measurement in this (sub)process.
    parser.add_argument("--only", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--batches", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the two other implementations -------------------------------------------------------------


def sinusoid_table(max_positions: int, d_model: int) -> Tensor:
    """(P, D) sin/cos position vectors of the paper: the project's own table, so that every
    implementation adds exactly the same positions."""
    return PositionalEncoding(d_model, max_positions, dropout=0.0).table


class TorchTransformer(nn.Module):
    """torch.nn.Transformer with a shared embedding, sinusoidal positions and a tied projection."""

    def __init__(self, args: argparse.Namespace, vocab_size: int) -> None:
        super().__init__()
        D = args.d_model
        self.embedding = nn.Embedding(vocab_size, D, padding_idx=PAD_ID)
        nn.init.normal_(self.embedding.weight, std=D**-0.5)
        self.scale = math.sqrt(D)
        self.register_buffer("positions", sinusoid_table(args.max_positions, D), persistent=False)
        self.dropout = nn.Dropout(args.dropout)
        self.transformer = nn.Transformer(
            d_model=D,
            nhead=args.heads,
            num_encoder_layers=args.layers,
            num_decoder_layers=args.layers,
            dim_feedforward=args.d_ff,
            dropout=args.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.transformer.encoder.enable_nested_tensor = False  # training never uses it
        for module in self.transformer.modules():
            if isinstance(module, nn.MultiheadAttention):
                module.dropout = 0.0  # no attention dropout, like the other two
        self.projection = nn.Linear(D, vocab_size)
        nn.init.zeros_(self.projection.bias)
        self.projection.weight = self.embedding.weight

    def embed(self, ids: Tensor) -> Tensor:
        """(B, T) -> (B, T, D)."""
        return self.dropout(self.embedding(ids) * self.scale + self.positions[: ids.size(1)])

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """src (B, S), tgt (B, T) -> logits (B, T, V)."""
        src_padding = src == PAD_ID  # (B, S), True = ignore
        T = tgt.size(1)
        causal = torch.ones(T, T, dtype=torch.bool, device=tgt.device).triu(
            1
        )  # (T, T) True = ignore
        out = self.transformer(
            self.embed(src),
            self.embed(tgt),
            tgt_mask=causal,
            src_key_padding_mask=src_padding,
            memory_key_padding_mask=src_padding,
            tgt_is_causal=True,
        )  # (B, T, D)
        return self.projection(out)


class MarianWrapper(nn.Module):
    """MarianMTModel called like the others: (src, tgt_in) -> logits."""

    def __init__(self, args: argparse.Namespace, vocab_size: int) -> None:
        super().__init__()
        self.model = marian_model(args, vocab_size, dropout=args.dropout)

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        """src (B, S), tgt (B, T) -> logits (B, T, V)."""
        return self.model(
            input_ids=src,
            attention_mask=(src != PAD_ID).long(),
            decoder_input_ids=tgt,
            use_cache=False,
        ).logits


def build_model(name: str, args: argparse.Namespace, vocab_size: int) -> nn.Module:
    if name in ("project", "project+rows64"):
        return project_model(args, vocab_size, dropout=args.dropout)
    if name == "project+compile":  # as train.compile=true: the forward pass through torch.compile
        model = project_model(args, vocab_size, dropout=args.dropout)
        model.token_states = torch.compile(model.token_states, dynamic=True)
        return model
    if name == "marian":
        return MarianWrapper(args, vocab_size)
    return TorchTransformer(args, vocab_size)


# --- FLOPs and the machine's matmul peak --------------------------------------------------------


def training_flops(batch: dict[str, Tensor], args: argparse.Namespace, vocab_size: int) -> float:
    """Model FLOPs of one training step on real tokens (the formula of the module docstring)."""
    D, F, L, V = args.d_model, args.d_ff, args.layers, vocab_size
    src_lengths = (batch["src"] != PAD_ID).sum(dim=1).double()  # (B,)
    tgt_lengths = (batch["labels"] != PAD_ID).sum(dim=1).double()  # (B,)
    per_src_token = L * (4 * D * D + 2 * D * F) + L * 2 * D * D
    per_tgt_token = L * (6 * D * D + 2 * D * F) + D * V
    matmul = 6 * (per_src_token * src_lengths.sum() + per_tgt_token * tgt_lengths.sum())
    attention = 4 * D * L * (src_lengths**2 + tgt_lengths**2 + tgt_lengths * src_lengths).sum()
    return float(matmul + 3 * attention)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(dtype: torch.dtype, n: int, seconds: float, device: torch.device) -> float:
    """FLOP/s of repeated (n x n) @ (n x n) matmuls in `dtype` for about `seconds` (at least one),
    after one warm-up."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.matmul(a, b)
    synchronize(device)
    repeats, start = 0, time.perf_counter()
    while True:
        torch.matmul(a, b)
        repeats += 1
        synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * n**3 * repeats / elapsed


def matmul_peak(
    dtype: torch.dtype, sizes: list[int], seconds: float, device: torch.device
) -> dict[int, float]:
    """FLOP/s at each matmul side in `sizes` (ascending). Larger sides are skipped once one matmul
    takes longer than `seconds`: the next size would take 8 times as long (emulated bf16)."""
    rates = {}
    for n in sorted(sizes):
        rates[n] = matmul_rate(dtype, n, seconds, device)
        if 2 * n**3 / rates[n] > seconds:
            break
    return rates


# --- batches ------------------------------------------------------------------------------------


def load_training_split(args: argparse.Namespace) -> tuple[EncodedSplit, int]:
    """The encoded training split (joint BPE trained on it, as train.py does) and the vocabulary."""
    tokenizers, splits = prepare_corpus(args)
    return splits["train"], tokenizers.src_vocab_size


def make_batches(
    train: EncodedSplit, args: argparse.Namespace, mode: str, count: int
) -> list[dict[str, Tensor]]:
    """The first `count` batches of the given mode, as dicts of tensors."""
    if mode == "sentences":
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))
        index_lists = [
            order[k * args.sentences : (k + 1) * args.sentences].tolist() for k in range(count)
        ]
    elif mode == "tokens":
        sampler = TokenBatchSampler(
            train.src_lengths, train.tgt_lengths, args.max_tokens, seed=args.seed
        )
        index_lists = [batch for batch, _ in zip(sampler, range(count), strict=False)]
    else:
        raise ValueError(f"unknown batch mode {mode!r}; use sentences or tokens")
    batches = []
    for indices in index_lists:
        batch = collate_batch([train[i] for i in indices])
        batches.append({"src": batch.src, "tgt_in": batch.tgt_in, "labels": batch.labels})
    return batches


# --- one measurement (runs in its own process) --------------------------------------------------


def _status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux) in MiB, or None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident memory of this process. VmHWM rather than ru_maxrss: after fork + exec,
    ru_maxrss starts from the parent's peak, VmHWM from zero."""
    peak = _status_mib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """Resident memory now (Linux), else the peak so far."""
    current = _status_mib("VmRSS")
    return current if current is not None else peak_rss_mib()


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, Tensor],
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[float, float]:
    """One optimiser step, as train.py takes it; (seconds, loss per target token)."""
    src, tgt_in, labels = (batch[key].to(device) for key in ("src", "tgt_in", "labels"))
    n_tokens = int((labels != PAD_ID).sum())
    bf16 = args.precision == "bf16"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    synchronize(device)
    start = time.perf_counter()
    with autocast:
        if isinstance(model, Transformer):  # the project: logits of real tokens only, as train.py
            amx = True if args.only == "project+rows64" else None  # None: this CPU's answer
            multiple = row_multiple(device, args.precision, amx=amx)
            token_states = partial(model.token_states, row_multiple=multiple)
            projection = model.projection.linear
            loss = batch_loss_sum(
                token_states, projection, src, tgt_in, labels, args.label_smoothing
            )
        else:
            loss = token_loss_sum(model(src, tgt_in), labels, args.label_smoothing)
    loss = loss / n_tokens
    loss.backward()
    loss = loss.detach()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return time.perf_counter() - start, loss.item()


def make_optimizer(model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-9)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Train implementation `args.only` for warm-up + timed steps; return the numbers.

    Memory: a tiny model of the same implementation first takes two steps, so that the code pages
    of the libraries (kernels, autograd, the optimiser) are resident; the resident memory after it
    is the base, and peak - base is what the model, its gradients, optimiser state and activations
    add. On CUDA, the allocator's peak instead."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    keep_freed_cpu_memory(device)  # as train.py does, for every implementation alike
    saved = torch.load(args.batches, weights_only=True)
    batches, vocab_size = saved["batches"], saved["vocab_size"]

    tiny_args = argparse.Namespace(**vars(args))
    tiny_args.d_model, tiny_args.d_ff, tiny_args.layers = 4 * args.heads, 16, 1
    tiny = build_model(args.only, tiny_args, vocab_size).to(device).train()
    tiny_optimizer = make_optimizer(tiny, args)
    for _ in range(2):
        train_step(tiny, tiny_optimizer, batches[0], args, device)
    del tiny, tiny_optimizer
    base_mib = current_rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_mib = torch.cuda.memory_allocated(device) / 2**20

    model = build_model(args.only, args, vocab_size).to(device).train()
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = make_optimizer(model, args)
    bf16 = args.precision == "bf16"
    warmup, steps = (args.bf16_warmup, args.bf16_steps) if bf16 else (args.warmup, args.steps)
    step_seconds, tokens, flops, losses = [], 0, 0.0, []
    for k, batch in enumerate(batches[: warmup + steps]):
        seconds, loss = train_step(model, optimizer, batch, args, device)
        losses.append(loss)
        if k >= warmup:
            step_seconds.append(seconds)
            tokens += int((batch["labels"] != PAD_ID).sum())
            flops += training_flops(batch, args, vocab_size)
    peak_mib = peak_rss_mib()
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    return {
        "parameters": parameters,
        "steps": len(step_seconds),
        "seconds": sum(step_seconds),
        "median_step": statistics.median(step_seconds),
        "tokens": tokens,
        "flops": flops,
        "peak_mib": peak_mib,
        "base_mib": base_mib,
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def run_in_subprocess(
    argv: list[str], name: str, precision: str, batches_path: Path
) -> dict[str, Any]:
    """`measure` in a fresh interpreter, so that the peak memory belongs to this implementation."""
    command = [sys.executable, str(Path(__file__).resolve()), *argv]
    command += ["--only", name, "--precision", precision, "--batches", str(batches_path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the report -----------------------------------------------------------------------------------


def print_table(
    mode: str,
    results: dict[tuple[str, str], dict[str, Any]],
    peaks: dict[str, float],
    batches: list[dict],
) -> None:
    headers = (
        f"{'implementation':<15} {'prec':<5} {'params':>10} {'steps':>5} {'tgt tok/s':>9} "
        f"{'vs project':>10} {'step ms':>8} {'peak MiB':>8} {'over base':>9} {'GFLOP/s':>8} "
        f"{'MFU':>6} {'loss 1st->last':>15}"
    )
    real = sum(int((b["labels"] != PAD_ID).sum() + (b["src"] != PAD_ID).sum()) for b in batches)
    padded = sum(b["labels"].numel() + b["src"].numel() for b in batches)
    mean_sentences = statistics.mean(b["src"].size(0) for b in batches)
    print(
        f"\nbatch mode: {mode} ({mean_sentences:.1f} sentences/batch on average, "
        f"real/padded tokens {real / padded:.3f})"
    )
    print(headers)
    print("-" * len(headers))
    for (name, precision), result in results.items():
        if "error" in result:
            print(f"{name:<15} {precision:<5} error: {result['error']}")
            continue
        speed = result["tokens"] / result["seconds"]
        project = results.get(("project", precision), {})
        ratio = (
            f"{speed / (project['tokens'] / project['seconds']):.2f}x"
            if "tokens" in project
            else "-"
        )
        achieved = result["flops"] / result["seconds"]
        print(
            f"{name:<15} {precision:<5} {result['parameters']:>10,} {result['steps']:>5} "
            f"{speed:>9,.0f} {ratio:>10} {result['median_step'] * 1000:>8.0f} "
            f"{result['peak_mib']:>8.0f} {result['peak_mib'] - result['base_mib']:>9.0f} "
            f"{achieved / 1e9:>8.1f} {achieved / peaks[precision]:>6.1%} "
            f"{result['first_loss']:>7.2f}->{result['last_loss']:.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.only:
        print(json.dumps(measure(args)))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precisions = args.precisions.split(",")
    names = args.implementations.split(",")
    modes = args.batch_mode.split(",")
    count = max(args.warmup + args.steps, args.bf16_warmup + args.bf16_steps)

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    sizes = [int(n) for n in args.peak_sizes.split(",")]
    rates = {p: matmul_peak(dtypes[p], sizes, args.peak_seconds, device) for p in precisions}
    peaks = {p: max(rates[p].values()) for p in precisions}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; "
        f"d_model {args.d_model}, {args.layers}+{args.layers} layers, {args.heads} heads, "
        f"d_ff {args.d_ff}, dropout {args.dropout}"
    )
    print(
        f"steps: fp32 {args.warmup} warm-up + {args.steps} timed, "
        f"bf16 {args.bf16_warmup} warm-up + {args.bf16_steps} timed; AdamW lr {args.lr}"
    )
    for precision in precisions:
        measured = ", ".join(f"{n}: {rate / 1e9:.1f}" for n, rate in rates[precision].items())
        print(
            f"matmul {precision} GFLOP/s by side ({measured}); "
            f"peak {peaks[precision] / 1e9:.1f} GFLOP/s"
        )
    if args.peak_only:
        return
    print(
        "GFLOP/s: model FLOPs of the timed steps (real tokens; formula in the docstring) / time; "
        "MFU: that / the matmul peak of the same precision"
    )

    train, vocab_size = load_training_split(args)
    print(f"vocabulary {vocab_size} (joint BPE trained on the training split)")
    with tempfile.TemporaryDirectory() as directory:
        for mode in modes:
            batches = make_batches(train, args, mode, count)
            path = Path(directory) / f"{mode}.pt"
            torch.save({"batches": batches, "vocab_size": vocab_size}, path)
            results = {}
            for precision in precisions:
                for name in names:
                    print(f"  measuring {mode} {name} {precision} ...", file=sys.stderr)
                    results[name, precision] = run_in_subprocess(argv, name, precision, path)
            print_table(mode, results, peaks, batches[: args.warmup + args.steps])


if __name__ == "__main__":
    main()
