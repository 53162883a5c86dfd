"""Configuration: nested dataclasses mirrored by YAML, with dotted command-line overrides.

One `Config` object describes a whole run. It is written into the run directory and into every
checkpoint, so a model can always be rebuilt from the checkpoint alone.

    config = load_config("configs/tiny.yaml", ["train.lr=3e-4", "data.max_tokens=2048"])
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem the user can fix; its message says how."""


@dataclass
class ModelConfig:
    """Sizes and choices of the encoder-decoder Transformer (defaults: the paper's base model)."""

    src_vocab_size: int = 8000  # source vocabulary; set from the tokenizer at training time
    tgt_vocab_size: int = 8000  # target vocabulary; set from the tokenizer at training time
    d_model: int = 512  # width of every residual stream
    n_heads: int = 8  # attention heads; d_model must divide by it
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    d_ff: int = 2048  # hidden width of the position-wise feed-forward block
    dropout: float = 0.1  # on embeddings, sub-layer outputs and the feed-forward hidden layer
    attention_dropout: float = 0.0  # on attention probabilities
    activation: str = "relu"  # relu | gelu
    norm_placement: str = (
        "post"  # post (the paper) | pre (most modern toolkits; trains more stably)
    )
    max_positions: int = 256  # longest sequence the positional encoding covers
    tie_output_embedding: bool = True  # decoder input embedding and output projection share weights
    share_embeddings: bool = False  # source and target embeddings are one tensor (joint vocabulary)
    pad_id: int = 0  # id of the padding token, for both sides

    def validate(self) -> None:
        if self.d_model % self.n_heads != 0:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        if self.activation not in ("relu", "gelu"):
            raise ConfigError(f"model.activation must be relu or gelu, not {self.activation!r}")
        if self.norm_placement not in ("pre", "post"):
            raise ConfigError(
                f"model.norm_placement must be pre or post, not {self.norm_placement!r}"
            )
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ConfigError(
                "model.share_embeddings needs one joint vocabulary "
                f"(src_vocab_size {self.src_vocab_size} != tgt_vocab_size {self.tgt_vocab_size}); "
                "set data.tokenizer.joint=true or model.share_embeddings=false"
            )
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), not {value}")


@dataclass
class TokenizerConfig:
    """Subword tokenizers, trained on the training split only."""

    kind: str = "bpe"  # bpe | wordlevel (wordlevel is the tutorial's behaviour)
    vocab_size: int = 8000  # target size of each vocabulary (joint: of the one shared vocabulary)
    joint: bool = True  # one vocabulary for source and target, so embeddings can be shared
    min_frequency: int = 2  # ignore merges / words seen fewer times than this
    lowercase: bool = False  # lowercase during normalisation (output is then lowercased too)


@dataclass
class SplitsConfig:
    """Names of the splits in the dataset; empty validation/test means carve them from train."""

    train: str = "train"
    validation: str = "validation"
    test: str = "test"


@dataclass
class DataConfig:
    """Where the parallel corpus comes from and how it is batched."""

    dataset: str = "bentrevett/multi30k"  # a hub name or a local path (directory, .tsv, .jsonl)
    subset: str | None = None  # hub configuration name, e.g. en-it for Helsinki-NLP/opus_books
    src_lang: str = "en"
    tgt_lang: str = "de"
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    carve_size: int = 1000  # sentences carved for each of validation/test when missing
    max_tokens: int = 4096  # batch budget: padded source + padded target tokens per batch
    max_length: int = 128  # training pairs longer than this (subword tokens) are dropped
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


@dataclass
class TrainConfig:
    """The optimisation loop, validation, logging and checkpoints."""

    run_dir: str = "runs/default"  # checkpoints, TensorBoard logs and the resolved config go here
    seed: int = 1234  # one seed for data order, initialisation and dropout
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default
    lr: float = 7e-4  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    schedule: str = "inverse_sqrt"  # inverse_sqrt (the paper) | cosine
    warmup_steps: int = 4000  # linear warmup to the peak learning rate
    min_lr_ratio: float = 0.0  # cosine: final learning rate as a fraction of the peak
    label_smoothing: float = 0.1
    clip_norm: float = 1.0  # max gradient norm; 0 disables clipping
    accumulate: int = 1  # batches per optimiser step
    precision: str = (
        "fp32"  # fp32 | bf16 (autocast, CPU and CUDA) | fp16 (autocast + GradScaler, CUDA)
    )
    compile: bool = False  # torch.compile the model
    max_steps: int = 0  # stop after this many optimiser steps; 0 = no limit
    max_epochs: int = 0  # stop after this many epochs; 0 = no limit
    max_minutes: float = 0.0  # stop after this much wall time in this process; 0 = no limit
    validate_every: int = 1000  # optimiser steps between validations (and checkpoints)
    log_every: int = 50  # optimiser steps between TensorBoard scalars
    keep_checkpoints: int = 5  # most recent step checkpoints kept besides last.pt and best.pt
    patience: int = 0  # stop after this many validations without a better BLEU; 0 = never
    num_samples: int = 3  # sample translations printed and logged at each validation


@dataclass
class DecodeConfig:
    """Decoding used by validation and translate.py."""

    beam_size: int = 1  # 1 = greedy
    length_penalty: float = 0.6  # GNMT alpha; 0 = raw log-probability
    max_len_a: float = 1.2  # output length limit: a * source length + b
    max_len_b: int = 10
    nbest: int = 1  # hypotheses per sentence (beam search: <= beam_size; sampling: draws)
    batch_tokens: int = 4096  # source tokens per decoding batch
    sample: bool = False  # draw each token at random instead of searching (beam_size unused)
    temperature: float = 1.0  # sampling: < 1 sharpens the distribution, > 1 flattens it
    top_k: int = 0  # sampling: draw among the k most probable tokens only (0 = all)
    top_p: float = 1.0  # sampling: among the fewest tokens reaching this probability (1 = all)
    seed: int | None = None  # sampling: seed of the draws (None = a fresh one each run)


@dataclass
class Config:
    """Everything a run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def validate(self) -> None:
        self.model.validate()
        if self.train.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(
                f"train.precision must be fp32, bf16 or fp16, not {self.train.precision!r}"
            )
        if self.train.schedule not in ("inverse_sqrt", "cosine"):
            raise ConfigError(
                f"train.schedule must be inverse_sqrt or cosine, not {self.train.schedule!r}"
            )
        if self.data.tokenizer.kind not in ("bpe", "wordlevel"):
            raise ConfigError(
                f"data.tokenizer.kind must be bpe or wordlevel, not {self.data.tokenizer.kind!r}"
            )
        if self.train.schedule == "cosine" and self.train.max_steps <= 0:
            raise ConfigError("train.schedule=cosine needs train.max_steps > 0 to know its length")
        if self.train.accumulate < 1:
            raise ConfigError("train.accumulate must be at least 1")
        if self.decode.beam_size < 1 or self.decode.nbest < 1:
            raise ConfigError("decode.beam_size and decode.nbest must be at least 1")
        if self.decode.nbest > self.decode.beam_size and not self.decode.sample:
            raise ConfigError(
                f"decode.nbest ({self.decode.nbest}) cannot exceed decode.beam_size "
                f"({self.decode.beam_size})"
            )
        decode = self.decode
        if decode.temperature <= 0 or not 0 < decode.top_p <= 1 or decode.top_k < 0:
            raise ConfigError(
                "decode.temperature must be > 0, decode.top_p in (0, 1] and decode.top_k >= 0 "
                f"(got {decode.temperature}, {decode.top_p}, {decode.top_k})"
            )


# --- dict <-> dataclass, with type checking ---------------------------------------------------


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) for YAML and checkpoints."""
    result = dataclasses.asdict(config)
    return _lists_for_tuples(result)


def _lists_for_tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _lists_for_tuples(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_lists_for_tuples(item) for item in value]
    return value


def config_from_dict(values: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    """Build a dataclass from a nested dict, rejecting unknown keys and wrong types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, not {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(_unknown_key_message(prefix + key, [prefix + k for k in known]))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = config_from_dict(value, hint, prefix + key + ".")
        else:
            kwargs[key] = _coerce(value, hint, prefix + key)
    return cls(**kwargs)


def _unknown_key_message(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    hint = (
        f"; did you mean {close[0]}?" if close else f"; valid keys: {', '.join(sorted(candidates))}"
    )
    return f"unknown config key {key!r}{hint}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint; accept ints for floats and lists for tuples."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, not {value!r}")
        return tuple(
            _coerce(item, arg, f"{key}[{i}]")
            for i, (item, arg) in enumerate(zip(value, args, strict=True))
        )
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, not {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be an integer, not {value!r}")
    if hint in (float, str) and not isinstance(value, hint):
        raise ConfigError(f"{key} must be a {hint.__name__}, not {value!r}")
    return value


# --- YAML and overrides -------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=3e-4' -> (['train', 'lr'], 0.0003); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. train.lr=3e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: cannot read the value ({error})") from None
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "3e-4" as a string
    return key.strip().split("."), value


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict; unknown keys are caught later by `config_from_dict`."""
    for text in overrides:
        path, value = parse_override(text)
        node = values
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe (or start from defaults), apply overrides, type-check and validate."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found; the recipes are in configs/")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    values = apply_overrides(_lists_for_tuples(values), overrides or [])
    config = config_from_dict(values)
    config.validate()
    return config


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    Path(path).write_text(text, encoding="utf-8")
