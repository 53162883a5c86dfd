"""This project against the training toolkits a user would otherwise install: JoeyNMT and eole.

    python bench/toolkits.py --setup                      # creates the peers' venvs; 15 min a run
    python bench/toolkits.py --venvs /work/peers          # existing venvs (joey/ and eole/ inside)
    python bench/toolkits.py --smoke --venvs /work/peers  # 1 min a run, 20 val sentences: it works

What it measures, on Multi30k en-de (the local raw text), one run per toolkit and precision, in turn
(ours fp32, JoeyNMT fp32, eole fp32, then the bf16 runs):

- (a) training throughput: target tokens per second over the same wall-clock budget, each toolkit
  with its own data pipeline and training loop. The figure is each toolkit's own windowed report,
  which counts the same thing in all three: real (non-padding) target tokens, EOS included, over the
  seconds of the window (JoeyNMT and ours leave validation out of the window; eole's windows hold
  its checkpoint saves, ours and JoeyNMT's do not). Windows are `--log-every` steps long and the
  table gives their harmonic mean, which is total tokens / total time when the windows hold about
  the same tokens (they do: batches are filled to a token budget), leaving out the first window
  (start-up: eole tokenizes its first bucket of examples inside it, while ours and JoeyNMT start
  their clocks after their data is ready). Tokenizations differ, so the table also gives target
  tokens per training sentence of each tokenizer (train.de, + EOS) and sentence pairs per second =
  tok/s / that.
- (b) validation BLEU after the same wall-clock budget (`--minutes`, default 15), everything
  included: the clock starts before a toolkit's data preparation and vocabulary (for the peers:
  decompressing the text, training the SentencePiece model; for ours: train.py, which prepares its
  own data and tokenizer inside `train.max_minutes`). Then the last checkpoint decodes `val` with
  beam 5 (timed separately, from the command's start to its end), and sacreBLEU (cased, 13a) scores
  the detokenized output against the raw reference. Ours plans its steps to end within its budget
  (train.max_minutes, its final validation included); the peers have no wall-clock limit. All
  three get SIGINT (Ctrl-C) when the budget is spent and are still training: JoeyNMT saves its
  weights and exits, ours finishes the step (or validation), saves and exits, eole exits without
  saving. The table gives each run's real wall time, from the budget's start to the end.

The same model for all three, from configs/multi30k_en_de.yaml: d_model 256, 3+3 layers, 4 heads,
d_ff 1024, ReLU, pre-norm, sinusoidal positions, one embedding shared by source, target and output
projection, dropout 0.2 (attention dropout 0.1), label smoothing 0.1, AdamW betas (0.9, 0.98), peak
learning rate 1e-3 after 800 warm-up steps, gradient clipping at norm 1.0, a joint vocabulary of
8,000, training pairs over 100 subword tokens dropped, seed 1234. The numbers come from the recipe
(read at start-up), so a changed recipe changes the peers too.

Tokenization: ours is its own byte-level BPE (trained by train.py). The peers share one joint
SentencePiece BPE model trained by this script with the `sentencepiece` package in each peer's venv
on train.en + train.de (vocab_size 8,000 including <unk> 0, <pad> 1, <s> 2, </s> 3, which are
JoeyNMT's special ids; character_coverage 1.0; otherwise SentencePiece's defaults, nmt_nfkc
normalisation included); its 8,000 pieces are the vocabulary file of both, so both vocabularies hold
exactly 8,000 entries. (Each run trains it in its own budget; the two venvs' sentencepiece versions,
0.2.1 and 0.2.2, gave the same 8,000 pieces in the smoke run.) JoeyNMT applies it with its
`sentencepiece` tokenizer, eole with its `sentencepiece` transform; both detokenize their own
output.

Tokens per batch: ours batches to data.max_tokens = 4,096 padded source + target tokens. JoeyNMT
(batch_type token) and eole (batch_type tokens) both count sentences x the longer side's padded
length, one side only, so they get batch_size = 4,096 / 2 = 2,048. eole sorts a bucket of
examples by length before batching, as ours does; JoeyNMT batches in random order (more padding:
its own pipeline).

Settings changed in the peers, and why (everything not named here is the peer's default):
- both: the model and training settings above (JoeyNMT: `tied_embeddings`, `tied_softmax`,
  `layer_norm: pre`, `adamw`, `normalization: tokens`, `clip_grad_norm`; eole: `share_embeddings`,
  `share_decoder_embeddings`, `optim: adamw`, `max_grad_norm`, `param_init_method: xavier_uniform`,
  `normalization: tokens`); no validation during training (validation_freq / valid_steps out of
  reach), so all of their budget trains; CPU only; the log every `--log-every` steps.
- the learning-rate schedule: ours decays by a cosine to zero at the end of its time budget, which
  it plans from its own measured pace (train.max_minutes). Neither peer can plan against a clock,
  so both get the recipe's other family: linear warm-up to 1e-3 at step 800, then inverse square
  root (JoeyNMT `warmupinversesquareroot`; eole `noam` with learning_rate 1e-3 * sqrt(256 * 800),
  whose peak is 1e-3 at step 800). `--eole-cosine-steps N` gives eole cosine decay to zero at step
  N instead (eole's `cosine` needs the step count up front: for a rerun once it is known).
- JoeyNMT: `learning_rate_min` 1e-8 (at its default 1e-4 it stops training during the warm-up,
  where the rate is lower); attention dropout is the layer dropout, 0.2 (JoeyNMT has no setting
  of its own for it); `-t` skips its test after training; SIGINT at the budget makes it save the
  current weights (`latest.ckpt`) and exit; translations are read from its stdout (its `-o` fails
  in 2.3.0: AttributeError on `args.n_best`). Its venv needs two packages its metadata does not
  say: `importlib-metadata` (imported by joeynmt/helpers.py) and `sentencepiece==0.2.1` (it calls
  `SentencePieceProcessor.SetVocabulary`, which sentencepiece 0.2.2 removed). bf16: not on a CPU
  (JoeyNMT 2.3.0 turns `fp16` off on a CPU and its autocast is float16 only), so no bf16 run.
- eole: `add_qkvbias`, `add_final_linear_bias` and `add_ffnbias` true (ours has biases, eole's
  default has none; with these both models have 7,586,624 parameters);
  `position_encoding_type: SinusoidalInterleaved`; `pad_token: <pad>` (the SentencePiece piece;
  eole's default is <blank>); `bucket_size` 32,768 (`--eole-bucket-size`; its default, 262,144
  examples, is 9 passes over Multi30k's 29,000 pairs in each of its 2 data workers, tokenized
  before the first step: over a minute here). It saves nothing when interrupted, so it saves
  every `--save-every` steps (default 50, keeping 2) and the last checkpoint saved within the
  budget is decoded (the steps after it are lost: the table gives both step counts). Its command
  line imports `aiohttp`, which its metadata does not declare. bf16: `compute_dtype: bf16` with
  eole's default `use_amp: true` (CPU autocast, float32 weights, its GradScaler): the same kind
  of bf16 as ours.
- decoding: beam 5 and the GNMT length penalty alpha 1.0 for all (eole `length_penalty: wu`,
  JoeyNMT `beam_alpha`), 4,096 source tokens per batch (ours: `--max-batch-tokens 20480`, which
  counts source tokens x beam), each toolkit's own maximum output length.

Peers are never dependencies of the package: they live in venvs of their own (`--venvs`, with
subfolders joey/ and eole/). `--setup` makes them work: a missing venv is created (python -m venv,
pip install torch==2.13.0; `--torch-index-url https://download.pytorch.org/whl/cpu` for PyTorch's
CPU wheel), and into one that fails the check the pinned packages are installed (joeynmt==2.3.0 or
eole==0.6.4, with the packages named above, sentencepiece and sacrebleu). Work files go to
`--work` (default /tmp/toolkits-bench), replaced run by run. `--threads N` sets OMP_NUM_THREADS
for all three (default: torch's choice). Asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from sacrebleu.metrics import BLEU
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from transformer.config import Config, load_config
from transformer.tokenization.tokenizer import TokenizerPair

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"
PEERS = {  # toolkit -> (venv folder, packages, Python that runs when the install works)
    # joeynmt 2.3.0 imports importlib_metadata without declaring it (joeynmt/helpers.py) and calls
    # SentencePieceProcessor.SetVocabulary, which sentencepiece 0.2.2 removed
    "joeynmt": (
        "joey",
        ["joeynmt==2.3.0", "importlib-metadata", "sentencepiece==0.2.1", "sacrebleu"],
        "import joeynmt.training, sentencepiece as s; s.SentencePieceProcessor.SetVocabulary",
    ),
    # eole 0.6.4's command line imports aiohttp without declaring it (eole/bin/tools/load_test.py)
    "eole": (
        "eole",
        ["eole==0.6.4", "aiohttp", "sentencepiece", "sacrebleu"],
        "import eole.bin, sentencepiece",
    ),
}
TOOLKITS = ["ours", *PEERS]
SPLITS = ("train", "val", "test_2016_flickr")
GRACE_S = 120  # after SIGINT at the budget: time to save and exit before SIGKILL

# Run inside a peer's venv (the project needs no sentencepiece): train the joint model, write its
# pieces in id order as the vocabulary file.
SPM_TRAIN = """
import sys, sentencepiece as spm
prefix, vocab_size, *inputs = sys.argv[1:]
spm.SentencePieceTrainer.train(
    input=",".join(inputs), model_prefix=prefix, model_type="bpe", vocab_size=int(vocab_size),
    character_coverage=1.0, unk_id=0, pad_id=1, bos_id=2, eos_id=3, pad_piece="<pad>",
    minloglevel=2)
sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
with open(prefix + ".vocab.txt", "w", encoding="utf-8") as f:
    f.writelines(sp.id_to_piece(i) + "\\n" for i in range(sp.get_piece_size()))
"""
SPM_COUNT = """
import sys, sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
lines = open(sys.argv[2], encoding="utf-8").read().splitlines()
print(sum(len(ids) + 1 for ids in sp.encode(lines)) / len(lines))
"""


@dataclass
class Result:
    toolkit: str
    precision: str
    status: str = "ok"  # ok | not supported | failed
    note: str = ""
    train_wall_s: float = math.nan  # from the budget's start to the end of training
    steps: int = 0  # optimiser steps trained
    checkpoint_step: int = 0  # the step of the checkpoint decoded
    windows: list[float] = field(default_factory=list)  # tok/s of each log window
    tokens_per_sentence: float = math.nan  # target tokens per training sentence, EOS included
    decode_s: float = math.nan
    bleu: float = math.nan
    bleu_signature: str = ""

    @property
    def tok_s(self) -> float:
        """Harmonic mean of the windows but the first (start-up: eole tokenizes its first bucket of
        examples in it), i.e. tokens / seconds when the windows hold about the same tokens."""
        windows = self.windows[1:] or self.windows
        return statistics.harmonic_mean(windows) if windows else math.nan


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "multi30k"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "multi30k_en_de.yaml"))
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget per run")
    parser.add_argument("--toolkits", nargs="+", choices=TOOLKITS, default=TOOLKITS)
    parser.add_argument(
        "--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"]
    )
    parser.add_argument("--venvs", default="/tmp/peer-venvs", help="holds joey/ and eole/")
    parser.add_argument("--setup", action="store_true", help="create the venvs that are missing")
    parser.add_argument("--torch-index-url", help="pip index for torch (e.g. PyTorch's CPU wheels)")
    parser.add_argument("--work", default="/tmp/toolkits-bench", help="work files (replaced)")
    parser.add_argument("--val-limit", type=int, default=0, help="first N val pairs only (0: all)")
    parser.add_argument("--log-every", type=int, default=50, help="steps per throughput window")
    parser.add_argument("--save-every", type=int, default=50, help="eole's checkpoint interval")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--decode-tokens", type=int, default=4096, help="source tokens per batch")
    parser.add_argument("--eole-cosine-steps", type=int, default=0, help="eole: cosine to step N")
    parser.add_argument(
        "--eole-bucket-size", type=int, default=32768, help="eole: examples sorted per bucket"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="--minutes 1 --val-limit 20 --log-every 1 --save-every 2",
    )
    args = parser.parse_args()
    if args.smoke:
        args.minutes, args.val_limit, args.log_every, args.save_every = 1.0, 20, 1, 2
    return args


# --- the peers' venvs -----------------------------------------------------------------------------


def venv_python(args: argparse.Namespace, toolkit: str) -> Path:
    return Path(args.venvs) / PEERS[toolkit][0] / "bin" / "python"


def ensure_venv(args: argparse.Namespace, toolkit: str) -> str | None:
    """None when the peer's venv works, else why not. With --setup, a missing venv is created
    (python -m venv, then torch) and the pinned packages are installed into one that fails."""
    _, packages, works = PEERS[toolkit]
    python = venv_python(args, toolkit)
    venv = python.parent.parent
    check = [str(python), "-c", f"import torch; {works}"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return None
    if not args.setup:
        return f"{venv} does not work ('{works}' fails): run with --setup, or pass --venvs"
    index = ["--index-url", args.torch_index_url] if args.torch_index_url else []
    commands = [[str(python), "-m", "pip", "install", "--quiet", TORCH, *packages]]
    if not python.exists():
        commands[:0] = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", TORCH, *index],
        ]
    for command in commands:
        print("+", " ".join(command), flush=True)
        if subprocess.run(command).returncode != 0:
            return f"setup failed: {' '.join(command)}"
    if subprocess.run(check, capture_output=True).returncode != 0:
        return f"{venv} fails after setup: {works}"
    return None


# --- data -----------------------------------------------------------------------------------------


def data_dir(args: argparse.Namespace) -> Path:
    """The corpus as given, or with --val-limit a copy whose val holds only its first N pairs."""
    source = Path(args.data)
    if not args.val_limit:
        return source
    target = Path(args.work) / "data"
    target.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        for lang in ("en", "de"):
            name = f"{split}.{lang}.gz"
            if split == "val":
                with gzip.open(source / name, "rt", encoding="utf-8") as f:
                    lines = f.read().splitlines()[: args.val_limit]
                with gzip.open(target / name, "wt", encoding="utf-8") as f:
                    f.writelines(line + "\n" for line in lines)
            elif not (target / name).exists():
                (target / name).symlink_to(source / name)
    return target


def read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def plain_text(data: Path, out: Path) -> None:
    """train.{en,de} and val.{en,de} as plain text (the peers' own readers take no gzip)."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        for lang in ("en", "de"):
            text = "".join(line + "\n" for line in read_lines(data / f"{split}.{lang}.gz"))
            (out / f"{split}.{lang}").write_text(text, encoding="utf-8")


def train_sentencepiece(python: Path, text: Path, vocab_size: int) -> Path:
    prefix = text / "spm"
    inputs = [str(text / "train.en"), str(text / "train.de")]
    subprocess.run(
        [str(python), "-c", SPM_TRAIN, str(prefix), str(vocab_size), *inputs], check=True
    )
    return prefix


# --- running under a budget -----------------------------------------------------------------------


def child_env(threads: int, peer: bool) -> dict[str, str]:
    """The environment of a toolkit's process: --threads as OMP_NUM_THREADS (torch's intra-op
    threads, in all three alike); a peer does not see this checkout on PYTHONPATH."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if peer:
        env.pop("PYTHONPATH", None)
    return env


def deliver_sigint() -> None:
    """In the child before it starts: SIGINT's default action back. A script started in the
    background (nohup ... &) ignores SIGINT, its children inherit that, and Python then never
    raises KeyboardInterrupt: JoeyNMT would neither save nor stop at the deadline."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_until(
    command: list[str], log: Path, deadline: float | None, cwd: Path, env: dict[str, str]
) -> int:
    """Run `command` (output to `log`); at `deadline` (time.monotonic) send SIGINT to it and the
    processes it started, SIGKILL if they are still there GRACE_S later. Returns the exit code."""
    print("+", " ".join(command), flush=True)
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, which the deadline signals
            preexec_fn=deliver_sigint,
        )
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)
            try:
                return process.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                return process.wait()


def timed(command: list[str], log: Path, cwd: Path, env: dict[str, str]) -> tuple[int, float]:
    start = time.monotonic()
    code = run_until(command, log, None, cwd, env)
    return code, time.monotonic() - start


def score(result: Result, hypotheses: Path, references: list[str]) -> None:
    lines = hypotheses.read_text(encoding="utf-8").splitlines() if hypotheses.exists() else []
    if len(lines) != len(references):
        result.status, result.note = "failed", f"{len(lines)} translations for {len(references)}"
        return
    metric = BLEU()  # cased, 13a tokenization: sacreBLEU's defaults
    result.bleu = metric.corpus_score(lines, [references]).score
    result.bleu_signature = str(metric.get_signature())


def failed(result: Result, what: str, log: Path) -> Result:
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
    result.status, result.note = "failed", f"{what} (see {log}): {' | '.join(tail)}"[:400]
    return result


# --- this project ---------------------------------------------------------------------------------


def run_ours(args: argparse.Namespace, recipe: Config, data: Path, precision: str) -> Result:
    result = Result("ours", precision)
    work = Path(args.work) / f"ours-{precision}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run_dir = work / "run"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        args.config,
        f"data.dataset={data}",
        "data.splits.validation=val",
        "data.splits.test=test_2016_flickr",
        f"train.run_dir={run_dir}",
        f"train.max_minutes={args.minutes:g}",
        f"train.precision={precision}",
        f"train.log_every={args.log_every}",
        "train.device=cpu",
    ]
    start = time.monotonic()
    # ours plans its steps to end within train.max_minutes; the same deadline as the peers' stops it
    # if it has not (Ctrl-C: it finishes the step, or the validation, saves last.pt and exits)
    env = child_env(args.threads, peer=False)
    code = run_until(command, work / "train.log", start + args.minutes * 60, ROOT, env)
    result.train_wall_s = time.monotonic() - start
    checkpoint = run_dir / "checkpoints" / "last.pt"
    if not checkpoint.exists():
        return failed(result, f"train.py exited with {code}", work / "train.log")
    if code != 0:  # 130: interrupted at the deadline, last.pt saved
        result.note = f"stopped at the deadline (exit {code})"
    result.windows = ours_speed(run_dir)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    result.checkpoint_step = result.steps = saved["step"]
    result.tokens_per_sentence = ours_tokens_per_sentence(run_dir, data)
    command = [
        sys.executable,
        str(ROOT / "translate.py"),
        "-c",
        str(checkpoint),
        "-i",
        str(work / "val.en"),
        "-o",
        str(work / "hyp.de"),
        "--beam",
        str(args.beam),
        "--max-batch-tokens",
        str(args.decode_tokens * args.beam),
    ]
    (work / "val.en").write_text("".join(f"{s}\n" for s in read_lines(data / "val.en.gz")))
    code, result.decode_s = timed(command, work / "decode.log", ROOT, env)
    if code != 0:
        return failed(result, f"translate.py exited with {code}", work / "decode.log")
    score(result, work / "hyp.de", read_lines(data / "val.de.gz"))
    return result


def ours_speed(run_dir: Path) -> list[float]:
    """The tok/s of each log window: the run's TensorBoard scalar train/tokens_per_second."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    if "train/tokens_per_second" not in events.Tags()["scalars"]:
        return []
    return [event.value for event in events.Scalars("train/tokens_per_second")]


def ours_tokens_per_sentence(run_dir: Path, data: Path) -> float:
    tokenizers = TokenizerPair.load(run_dir / "tokenizer")
    ids = tokenizers.encode_target(read_lines(data / "train.de.gz"))
    return sum(len(sentence) + 1 for sentence in ids) / len(ids)


# --- JoeyNMT --------------------------------------------------------------------------------------


def joeynmt_config(args: argparse.Namespace, recipe: Config, text: Path, model_dir: Path) -> dict:
    model, data, train = recipe.model, recipe.data, recipe.train
    side = {
        "level": "bpe",
        "lowercase": False,
        "max_length": data.max_length,
        "voc_file": str(text / "spm.vocab.txt"),
        "tokenizer_type": "sentencepiece",
        "tokenizer_cfg": {"model_file": str(text / "spm.model")},
    }
    stack = {
        "type": "transformer",
        "num_layers": model.n_encoder_layers,
        "num_heads": model.n_heads,
        "embeddings": {"embedding_dim": model.d_model, "scale": True, "dropout": model.dropout},
        "hidden_size": model.d_model,
        "ff_size": model.d_ff,
        "dropout": model.dropout,
        "layer_norm": model.norm_placement,
        "activation": model.activation,
    }
    return {
        "name": "multi30k_en_de",
        "joeynmt_version": "2.3.0",
        "model_dir": str(model_dir),
        "use_cuda": False,
        "fp16": False,
        "random_seed": train.seed,
        "data": {
            "train": str(text / "train"),
            "dev": str(text / "val"),
            "dataset_type": "plain",
            "src": {"lang": data.src_lang, **side},
            "trg": {"lang": data.tgt_lang, **side},
            "special_symbols": {
                "unk_token": "<unk>",
                "unk_id": 0,
                "pad_token": "<pad>",
                "pad_id": 1,
                "bos_token": "<s>",
                "bos_id": 2,
                "eos_token": "</s>",
                "eos_id": 3,
            },
        },
        "testing": {
            "load_model": str(model_dir / "latest.ckpt"),
            "n_best": 1,
            "beam_size": args.beam,
            "beam_alpha": recipe.decode.length_penalty,
            "batch_size": args.decode_tokens,
            "batch_type": "token",
            "eval_metrics": ["bleu"],
        },
        "training": {
            "optimizer": "adamw",
            "adam_betas": list(train.betas),
            "normalization": "tokens",
            "scheduling": "warmupinversesquareroot",
            "learning_rate": train.lr,
            "learning_rate_warmup": train.warmup_steps,
            "learning_rate_min": 1.0e-8,
            "weight_decay": train.weight_decay,
            "label_smoothing": train.label_smoothing,
            "clip_grad_norm": train.clip_norm,
            "batch_size": data.max_tokens // 2,
            "batch_type": "token",
            "epochs": 1_000_000,
            "logging_freq": args.log_every,
            "validation_freq": args.log_every * 1_000_000,  # never: all the budget trains
            "early_stopping_metric": "bleu",
            "overwrite": True,
            "shuffle": True,
            "keep_best_ckpts": 1,
        },
        "model": {
            "initializer": "xavier_uniform",
            "bias_initializer": "zeros",
            "embed_initializer": "xavier_uniform",
            "tied_embeddings": model.share_embeddings,
            "tied_softmax": model.tie_output_embedding,
            "encoder": stack,
            "decoder": {**stack, "num_layers": model.n_decoder_layers},
        },
    }


def train_peer(
    args: argparse.Namespace,
    result: Result,
    recipe: Config,
    data: Path,
    python: Path,
    configure: Callable[[Path, Path], dict],
    train_command: Callable[[Path], list[str]],
) -> tuple[Path, str, dict[str, str]]:
    """Everything a peer does inside its budget: a fresh work folder, the plain text and the shared
    SentencePiece model, its config (configure(text folder, model folder), written to config.yaml)
    and its training command (given that file), stopped at the deadline. Sets the result's
    train_wall_s; returns the work folder, the training log's text and the environment it ran in."""
    work = Path(args.work) / f"{result.toolkit}-{result.precision}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.monotonic()  # the budget: data, vocabulary and training
    plain_text(data, work / "text")
    train_sentencepiece(python, work / "text", recipe.data.tokenizer.vocab_size)
    config = configure(work / "text", work / "model")
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = child_env(args.threads, peer=True)
    command = train_command(work / "config.yaml")
    run_until(command, work / "train.log", start + args.minutes * 60, work, env)
    result.train_wall_s = time.monotonic() - start
    return work, (work / "train.log").read_text(errors="replace"), env


def run_joeynmt(args: argparse.Namespace, recipe: Config, data: Path, precision: str) -> Result:
    result = Result("joeynmt", precision)
    if precision == "bf16":
        result.status = "not supported"
        result.note = "JoeyNMT 2.3.0 turns fp16 off on a CPU; its autocast is float16 only"
        return result
    python = venv_python(args, "joeynmt")
    work, log, env = train_peer(
        args,
        result,
        recipe,
        data,
        python,
        lambda text, model: joeynmt_config(args, recipe, text, model),
        lambda config: [str(python), "-m", "joeynmt", "train", str(config), "-t"],
    )
    windows = re.findall(r"Step:\s*(\d+),.*Tokens per Sec:\s*([\d.]+)", log)
    result.windows = [float(speed) for _, speed in windows]
    checkpoint = work / "model" / "latest.ckpt"
    if not checkpoint.exists():
        return failed(result, "no checkpoint", work / "train.log")
    result.checkpoint_step = result.steps = int(checkpoint.resolve().stem)
    result.tokens_per_sentence = spm_tokens_per_sentence(python, work / "text")
    # translations on stdout, the log on stderr (its -o fails: AttributeError on args.n_best)
    command = [str(python), "-m", "joeynmt", "translate", str(work / "config.yaml")]
    print("+", " ".join(command), f"< {work / 'text' / 'val.en'} > {work / 'hyp.de'}", flush=True)
    start = time.monotonic()
    with (
        (work / "text" / "val.en").open() as stdin,
        (work / "hyp.de").open("w") as stdout,
        (work / "decode.log").open("w") as stderr,
    ):
        code = subprocess.run(
            command, stdin=stdin, stdout=stdout, stderr=stderr, cwd=work, env=env
        ).returncode
    result.decode_s = time.monotonic() - start
    if code != 0:
        return failed(result, f"joeynmt translate exited with {code}", work / "decode.log")
    score(result, work / "hyp.de", read_lines(data / "val.de.gz"))
    return result


def spm_tokens_per_sentence(python: Path, text: Path) -> float:
    command = [str(python), "-c", SPM_COUNT, str(text / "spm.model"), str(text / "train.de")]
    return float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


# --- eole -----------------------------------------------------------------------------------------


def eole_config(
    args: argparse.Namespace, recipe: Config, text: Path, model_path: Path, precision: str
) -> dict:
    model, data, train = recipe.model, recipe.data, recipe.train
    if args.eole_cosine_steps:  # linear warm-up, then cosine to zero at that step
        schedule = {"decay_method": "cosine", "learning_rate": train.lr}
        steps = args.eole_cosine_steps
    else:  # noam: d^-0.5 * min(step^-0.5, step * warmup^-1.5), at its peak (d * warmup)^-0.5
        peak_factor = (model.d_model * train.warmup_steps) ** -0.5
        schedule = {"decay_method": "noam", "learning_rate": train.lr / peak_factor}
        steps = 10_000_000
    return {
        "seed": train.seed,
        "overwrite": True,
        "report_every": args.log_every,
        "src_vocab": str(text / "spm.vocab.txt"),
        "tgt_vocab": str(text / "spm.vocab.txt"),
        "share_vocab": True,
        "src_vocab_size": data.tokenizer.vocab_size,
        "tgt_vocab_size": data.tokenizer.vocab_size,
        "pad_token": "<pad>",
        "n_sample": 0,
        "data": {
            "corpus_1": {"path_src": str(text / "train.en"), "path_tgt": str(text / "train.de")}
        },
        "transforms": ["sentencepiece", "filtertoolong"],
        "transforms_configs": {
            "sentencepiece": {
                "src_subword_model": str(text / "spm.model"),
                "tgt_subword_model": str(text / "spm.model"),
            },
            "filtertoolong": {"src_seq_length": data.max_length, "tgt_seq_length": data.max_length},
        },
        "training": {
            "model_path": str(model_path),
            "save_checkpoint_steps": args.save_every,
            "keep_checkpoint": 2,
            "train_steps": steps,
            "valid_steps": 10_000_000,  # no validation set: all the budget trains
            "world_size": 1,
            "gpu_ranks": [],
            "batch_type": "tokens",
            "batch_size": data.max_tokens // 2,
            "bucket_size": args.eole_bucket_size,
            "compute_dtype": precision,
            "optim": "adamw",
            "adam_beta1": train.betas[0],
            "adam_beta2": train.betas[1],
            "weight_decay": train.weight_decay,
            "warmup_steps": train.warmup_steps,
            **schedule,
            "max_grad_norm": train.clip_norm,
            "dropout": [model.dropout],
            "attention_dropout": [model.attention_dropout],
            "dropout_steps": [0],
            "label_smoothing": train.label_smoothing,
            "param_init_method": "xavier_uniform",
            "normalization": "tokens",
        },
        "model": {
            "architecture": "transformer",
            "hidden_size": model.d_model,
            "layers": model.n_encoder_layers,
            "heads": model.n_heads,
            "transformer_ff": model.d_ff,
            "mlp_activation_fn": model.activation,
            "add_qkvbias": True,
            "add_final_linear_bias": True,
            "add_ffnbias": True,
            "share_embeddings": model.share_embeddings,
            "share_decoder_embeddings": model.tie_output_embedding,
            "embeddings": {
                "word_vec_size": model.d_model,
                "position_encoding_type": "SinusoidalInterleaved",
            },
        },
    }


def run_eole(args: argparse.Namespace, recipe: Config, data: Path, precision: str) -> Result:
    result = Result("eole", precision)
    python = venv_python(args, "eole")
    eole = python.parent / "eole"
    work, log, env = train_peer(
        args,
        result,
        recipe,
        data,
        python,
        lambda text, model: eole_config(args, recipe, text, model, precision),
        lambda config: [str(eole), "train", "--config", str(config)],
    )
    # "Step  50/10000000; acc: ...; bsz: 1394/1549/55; 1234/1300 tok/s; 60 sec;" (source/target)
    windows = re.findall(r"Step\s+(\d+)/.*?\s([\d.]+)/\s*([\d.]+) tok/s", log)
    result.windows = [float(target) for _, _, target in windows]
    result.steps = int(windows[-1][0]) if windows else 0
    saved = sorted(work.glob("model/step_*"), key=lambda path: int(path.name.split("_")[1]))
    if not saved:
        return failed(result, "no checkpoint", work / "train.log")
    result.checkpoint_step = int(saved[-1].name.split("_")[1])
    result.tokens_per_sentence = spm_tokens_per_sentence(python, work / "text")
    command = [
        str(eole),
        "predict",
        "--model_path",
        str(saved[-1]),
        "--src",
        str(work / "text" / "val.en"),
        "--output",
        str(work / "hyp.de"),
        "--beam_size",
        str(args.beam),
        "--length_penalty",
        "wu",
        "--alpha",
        str(recipe.decode.length_penalty),
        "--batch_type",
        "tokens",
        "--batch_size",
        str(args.decode_tokens),
    ]
    code, result.decode_s = timed(command, work / "decode.log", work, env)
    if code != 0:
        return failed(result, f"eole predict exited with {code}", work / "decode.log")
    score(result, work / "hyp.de", read_lines(data / "val.de.gz"))
    return result


# --- the table ------------------------------------------------------------------------------------


def number(value: float, digits: int = 0, unit: str = "") -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}{unit}"


def machine() -> str:
    """The CPU, its flags that decide bf16 speed, the core count, torch and the date."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"model name\s*:\s*(.+)", info)
    flags = set(re.search(r"flags\s*:\s*(.+)", info)[1].split()) if "flags" in info else set()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return (
        f"{name[1] if name else 'CPU'} ({os.cpu_count()} cores; "
        f"{' '.join(f for f in wanted if f in flags) or 'no avx2'}), torch {torch.__version__} "
        f"(ours), {time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


def print_table(results: list[Result], args: argparse.Namespace, references: int) -> None:
    print(
        f"\nMulti30k en-de, {args.minutes:g} min per run (data preparation included), val "
        f"{references} sentences, beam {args.beam}; tok/s: harmonic mean of the log windows but "
        f"the first\n"
        f"{machine()}"
    )
    print(
        "\n| toolkit | precision | target tok/s | windows | tok/sent | sent/s | steps (decoded) "
        "| train wall min | val BLEU | decode s | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        sentences = r.tok_s / r.tokens_per_sentence
        print(
            f"| {r.toolkit} | {r.precision} | {number(r.tok_s)} | {len(r.windows)} "
            f"| {number(r.tokens_per_sentence, 1)} | {number(sentences, 1)} "
            f"| {r.steps} ({r.checkpoint_step}) | {number(r.train_wall_s / 60, 1)} "
            f"| {number(r.bleu, 2)} | {number(r.decode_s, 1)} "
            f"| {r.status}{': ' + r.note if r.note else ''} |"
        )
    ours = {r.precision: r for r in results if r.toolkit == "ours"}
    print("\n| ours vs | precision | tok/s ratio | sent/s ratio | BLEU difference |")
    print("|---|---|---|---|---|")
    for r in results:
        if r.toolkit == "ours" or r.precision not in ours or r.status != "ok":
            continue
        mine = ours[r.precision]
        sentences = (mine.tok_s / mine.tokens_per_sentence) / (r.tok_s / r.tokens_per_sentence)
        print(
            f"| {r.toolkit} | {r.precision} | {number(mine.tok_s / r.tok_s, 2, 'x')} "
            f"| {number(sentences, 2, 'x')} | {number(mine.bleu - r.bleu, 2)} |"
        )
    signatures = {r.bleu_signature for r in results if r.bleu_signature}
    print(f"\nsacreBLEU: {', '.join(sorted(signatures)) or '-'}")


def main() -> None:
    args = parse_args()
    recipe = load_config(args.config, [])
    Path(args.work).mkdir(parents=True, exist_ok=True)
    data = data_dir(args)
    unavailable = {}
    for toolkit in PEERS:
        if toolkit in args.toolkits and (reason := ensure_venv(args, toolkit)):
            unavailable[toolkit] = reason
    runners = {"ours": run_ours, "joeynmt": run_joeynmt, "eole": run_eole}
    results = []
    for precision in args.precisions:
        for toolkit in args.toolkits:
            print(f"\n=== {toolkit} {precision}, {args.minutes:g} min", flush=True)
            if toolkit in unavailable:
                result = Result(toolkit, precision, "failed", unavailable[toolkit])
            else:
                try:
                    result = runners[toolkit](args, recipe, data, precision)
                except (OSError, subprocess.SubprocessError, ValueError) as error:
                    result = Result(
                        toolkit, precision, "failed", f"{type(error).__name__}: {error}"
                    )
            print(f"{toolkit} {precision}: {result.status} {result.note}", flush=True)
            results.append(result)
    (Path(args.work) / "results.json").write_text(
        json.dumps([asdict(r) for r in results], indent=1)
    )
    print_table(results, args, len(read_lines(data / "val.de.gz")))
    print(f"logs and outputs: {args.work}/<toolkit>-<precision>/; results.json there")


if __name__ == "__main__":
    main()
