"""Configuration: nested dataclasses mirrored by YAML, with dotted command-line overrides.

One `Config` object describes a whole run. It is written into the run directory and into every
checkpoint, so a model can always be rebuilt from the checkpoint alone.

    config = load_config("configs/tiny.yaml", ["train.lr=3e-4", "data.max_tokens=2048"])

The comment after each field is its documentation: `transformer config --markdown` turns
the dataclasses into the table of every key in docs/configuration.md (a test keeps the two equal).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import io
import math
import re
import tokenize
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transformer.recipes import find_recipe, recipe_names


class ConfigError(ValueError):
    """A configuration problem the user can fix; its message says how."""


def _require(condition: bool, message: str) -> None:
    """Raise `message` as a ConfigError unless `condition` holds (NaN fails every comparison)."""
    if not condition:
        raise ConfigError(message)


def _check_at_least(section: object, prefix: str, minimum: int, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        _require(value >= minimum, f"{prefix}.{name} must be at least {minimum}, not {value}")


def _check_fraction(
    section: object, prefix: str, *names: str, upper_inclusive: bool = False
) -> None:
    """Each value in [0, 1) (or [0, 1] with `upper_inclusive`)."""
    for name in names:
        value = getattr(section, name)
        inside = 0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0
        interval = "[0, 1]" if upper_inclusive else "[0, 1)"
        _require(inside, f"{prefix}.{name} must be in {interval}, not {value}")


ACTIVATIONS = ("relu", "gelu", "swish")  # of the feed-forward block
LOGGERS = ("tensorboard", "wandb", "mlflow")  # where train.loggers can send a run's numbers
WANDB_MODES = ("online", "offline", "disabled")  # train.wandb_mode, as wandb.init takes it


@dataclass
class ModelConfig:
    """Sizes and choices of the encoder-decoder Transformer (defaults: the paper's base model)."""

    src_vocab_size: int = 8000  # source vocabulary; set from the tokenizer at training time
    tgt_vocab_size: int = 8000  # target vocabulary; set from the tokenizer at training time
    d_model: int = 512  # width of every residual stream
    n_heads: int = 8  # attention heads; d_model must divide by it
    n_encoder_layers: int = 6  # encoder blocks (self-attention + feed-forward)
    n_decoder_layers: int = 6  # decoder blocks (self-attention + cross-attention + feed-forward)
    d_ff: int = 2048  # hidden width of the position-wise feed-forward block
    dropout: float = 0.1  # on embeddings, sub-layer outputs and the feed-forward hidden layer
    attention_dropout: float = 0.0  # on attention probabilities
    activation: str = "relu"  # relu | gelu | swish (SiLU, x * sigmoid(x): OPUS-MT / Marian models)
    norm_placement: str = (
        "post"  # post (the paper) | pre (most modern toolkits; trains more stably)
    )
    max_positions: int = 256  # longest sequence the positional encoding covers
    tie_output_embedding: bool = True  # decoder input embedding and output projection share weights
    share_embeddings: bool = False  # source and target embeddings are one tensor (joint vocabulary)
    pad_id: int = 0  # id of the padding token, for both sides; set from the tokenizer
    source_eos: bool = (
        False  # every source sentence ends with </s> (as Marian / OPUS-MT models expect)
    )

    def validate(self) -> None:
        _check_at_least(self, "model", 1, "d_model", "n_heads", "d_ff", "max_positions")
        _check_at_least(self, "model", 1, "n_encoder_layers", "n_decoder_layers")
        _check_at_least(self, "model", 1, "src_vocab_size", "tgt_vocab_size")
        _require(self.pad_id >= 0, f"model.pad_id must be at least 0, not {self.pad_id}")
        if self.d_model % self.n_heads != 0:
            raise ConfigError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"model.activation must be {', '.join(ACTIVATIONS)}, not {self.activation!r}"
            )
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
        _check_fraction(self, "model", "dropout", "attention_dropout")


MIN_BPE_VOCAB = 4 + 256  # special tokens + the byte-level alphabet
MIN_WORDLEVEL_VOCAB = 4 + 1  # special tokens + at least one word
MIN_UNIGRAM_VOCAB = 4 + 1  # special tokens + at least one piece (unseen characters become <unk>)


@dataclass
class TokenizerConfig:
    """Subword tokenizers, trained on the training split only."""

    kind: str = "bpe"  # bpe | unigram (SentencePiece's model) | wordlevel (the tutorial's)
    vocab_size: int = 8000  # target size of each vocabulary (joint: of the one shared vocabulary)
    joint: bool = True  # one vocabulary for source and target, so embeddings can be shared
    min_frequency: int = 2  # bpe, wordlevel: ignore merges / words seen fewer times than this
    lowercase: bool = False  # lowercase during normalisation (output is then lowercased too)
    sample_size: int = 2_000_000  # train on a seeded sample of this many pairs; corpus smaller: all

    def validate(self) -> None:
        """A vocabulary must hold the 4 special tokens and, for byte-level BPE, all 256 bytes;
        the `tokenizers` trainers would silently make a larger one than asked."""
        _require(
            self.kind in ("bpe", "unigram", "wordlevel"),
            f"data.tokenizer.kind must be bpe, unigram or wordlevel, not {self.kind!r}",
        )
        smallest, holds = {
            "bpe": (MIN_BPE_VOCAB, "4 special tokens + 256 bytes"),
            "unigram": (MIN_UNIGRAM_VOCAB, "4 special tokens + 1 piece"),
            "wordlevel": (MIN_WORDLEVEL_VOCAB, "4 special tokens + 1 word"),
        }[self.kind]
        _require(
            self.vocab_size >= smallest,
            f"data.tokenizer.vocab_size must be at least {smallest} for kind={self.kind} "
            f"({holds}), not {self.vocab_size}",
        )
        _check_at_least(self, "data.tokenizer", 0, "min_frequency")
        _check_at_least(self, "data.tokenizer", 1, "sample_size")


@dataclass
class SplitsConfig:
    """Names of the splits in the dataset; empty validation/test means carve them from train."""

    train: str = "train"  # split (or file prefix) to train on
    validation: str = "validation"  # split scored during training; "" = carve from train
    test: str = "test"  # held-out split; "" = carve from train


@dataclass
class SourceConfig:
    """One training corpus of several: an entry of `data.dataset` when it is a list."""

    dataset: str = ""  # a hub name or a local path, as data.dataset
    subset: str | None = None  # hub configuration name of this corpus (e.g. en-fr)
    weight: float = 1.0  # how often its pairs are drawn per epoch: 2 = twice as often as weight 1
    pairs: list[str] = field(default_factory=list)  # directions it gives; [] = all of data.pairs

    def validate(self, prefix: str) -> None:
        _require(bool(self.dataset.strip()), f"{prefix}.dataset must not be empty")
        _require(
            0.0 < self.weight < math.inf,
            f"{prefix}.weight must be a positive number, not {self.weight}",
        )
        for pair in self.pairs:
            parse_pair(pair, f"{prefix}.pairs")


def parse_pair(pair: str, key: str) -> tuple[str, str]:
    """ "en-de" -> ("en", "de"); languages with a region use "_" (pt_br-en)."""
    parts = pair.split("-")
    _require(
        len(parts) == 2 and all(part.strip() for part in parts) and parts[0] != parts[1],
        f"{key}: {pair!r} is not a direction like en-de (source-target, two different "
        "languages; write regions with _, e.g. pt_br-en)",
    )
    return parts[0].strip(), parts[1].strip()


@dataclass
class DataConfig:
    """Where the parallel corpus comes from and how it is batched."""

    dataset: str | list[SourceConfig | str] = (
        "bentrevett/multi30k"  # a hub name or a local path (directory, .tsv, .jsonl); or a list
    )
    subset: str | None = None  # hub configuration name, e.g. en-it for Helsinki-NLP/opus_books
    src_lang: str = "en"  # source language code: a column, or the {split}.{lang} file suffix
    tgt_lang: str = "de"  # target language code
    pairs: list[str] | str = field(
        default_factory=list
    )  # multilingual: directions, e.g. [en-de, de-en], or all (of data.languages); [] = one pair
    languages: list[str] = field(default_factory=list)  # with pairs: all, the languages to pair
    pair_temperature: float = 1.0  # sampling across directions: 1 = by size, larger = flatter
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    carve_size: int = 1000  # sentences carved for each of validation/test when missing
    max_tokens: int = 4096  # batch budget: padded source + padded target tokens per batch
    max_length: int = 128  # training pairs longer than this (subword tokens) are dropped
    max_length_ratio: float = (
        0.0  # drop training pairs whose longer side has > this x tokens; 0 = off
    )
    cache_dir: str = ""  # where the prepared (encoded) training data goes; "" = <run_dir>/prepared
    streaming: bool = False  # hub datasets: stream the train split instead of downloading it whole
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)

    def validate(self) -> None:
        _check_at_least(self, "data", 1, "carve_size", "max_tokens", "max_length")
        _require(
            self.max_length_ratio == 0.0 or 1.0 <= self.max_length_ratio < math.inf,
            f"data.max_length_ratio must be 0 (off) or at least 1, not {self.max_length_ratio}",
        )
        for name in ("src_lang", "tgt_lang"):
            _require(bool(getattr(self, name).strip()), f"data.{name} must not be empty")
        _require(
            1.0 <= self.pair_temperature < math.inf,
            f"data.pair_temperature must be at least 1, not {self.pair_temperature}",
        )
        sources = self.training_sources()
        _require(bool(sources), "data.dataset is an empty list: name at least one corpus")
        for number, source in enumerate(sources):
            source.validate(f"data.dataset[{number}]")
        directions = self.directions()
        for number, source in enumerate(sources):
            for pair in source.pairs:
                _require(
                    parse_pair(pair, "") in directions,
                    f"data.dataset[{number}].pairs: {pair} is not one of data.pairs "
                    f"({', '.join(f'{s}-{t}' for s, t in directions)})",
                )
        self.tokenizer.validate()

    def training_sources(self) -> list[SourceConfig]:
        """data.dataset as a list of corpora (one, with data.subset, when it is a string)."""
        if isinstance(self.dataset, str):
            return [SourceConfig(self.dataset, self.subset)]
        return [SourceConfig(s) if isinstance(s, str) else s for s in self.dataset]

    def directions(self) -> list[tuple[str, str]]:
        """The (source, target) languages trained: data.pairs, or data.src_lang -> tgt_lang."""
        if self.pairs == "all" or self.pairs == ["all"]:
            languages = list(dict.fromkeys(self.languages))
            _require(
                len(languages) >= 2,
                "data.pairs: all needs data.languages, at least two, e.g. [en, de, fr]",
            )
            return [(s, t) for s in languages for t in languages if s != t]
        _require(
            isinstance(self.pairs, list),
            f"data.pairs must be a list of directions like [en-de, de-en] or all, not {self.pairs!r}",
        )
        if not self.pairs:
            return [(self.src_lang, self.tgt_lang)]
        directions = [parse_pair(pair, "data.pairs") for pair in self.pairs]
        _require(
            len(set(directions)) == len(directions),
            f"data.pairs lists a direction twice: {self.pairs}",
        )
        return directions

    @property
    def multilingual(self) -> bool:
        """More than one target language: sources then start with a >>xx<< tag (tokenizer.py)."""
        return len({target for _, target in self.directions()}) > 1


@dataclass
class TrainConfig:
    """The optimisation loop, validation, logging and checkpoints."""

    run_dir: str = "runs/default"  # checkpoints, TensorBoard logs and the resolved config go here
    seed: int = 1234  # one seed for data order, initialisation and dropout
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    threads: int = 0  # CPU threads for torch; 0 keeps torch's default
    lr: float = 7e-4  # peak learning rate
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW moment decay rates (the paper's)
    eps: float = 1e-9  # AdamW denominator epsilon
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    schedule: str = "inverse_sqrt"  # inverse_sqrt (the paper) | cosine
    warmup_steps: int = 4000  # linear warmup to the peak learning rate
    min_lr_ratio: float = 0.0  # cosine: final learning rate as a fraction of the peak
    label_smoothing: float = 0.1  # probability mass spread over the vocabulary; 0 = off
    clip_norm: float = 1.0  # max gradient norm; 0 disables clipping
    ema_decay: float = 0.0  # validate and save a moving average of the weights; 0 = off
    accumulate: int = 1  # batches per optimiser step: the step sees accumulate x max_tokens
    precision: str = (
        "auto"  # auto (native bf16: the faster of bf16/fp32, timed) | fp32 | bf16 | fp16 (CUDA)
    )
    compile: bool = False  # torch.compile the training forward pass (first steps compile)
    max_steps: int = (
        0  # stop after this many optimiser steps; 0 = no limit, or what fits max_minutes
    )
    max_epochs: int = 0  # stop after this many epochs; 0 = no limit
    max_minutes: float = (
        0.0  # wall time of train.py, data included; 0 = none; cosine with max_steps 0 fits it
    )
    validate_every: int = 1000  # optimiser steps between validations (and checkpoints)
    log_every: int = 50  # optimiser steps between logged training scalars (loss, lr, tokens/s)
    loggers: list[str] = field(
        default_factory=lambda: ["tensorboard"]
    )  # where the scalars, samples and heatmaps go: any of tensorboard, wandb, mlflow; [] = none
    logger_project: str = ""  # W&B project and MLflow experiment; "" = WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME, else each library's default
    logger_run_name: str = ""  # the run's name in W&B and MLflow; "" = the name of train.run_dir
    wandb_mode: str = ""  # online | offline (local files; `wandb sync` uploads them) | disabled; "" = WANDB_MODE, else online
    mlflow_tracking_uri: str = ""  # MLflow server or store (http://host:5000, sqlite:///mlflow.db); "" = MLFLOW_TRACKING_URI, else MLflow's default
    keep_checkpoints: int = 5  # most recent step checkpoints kept besides last.pt and best.pt
    patience: int = 0  # stop after this many validations without a better BLEU; 0 = never
    num_samples: int = 3  # sentences shown at each validation: translations and attention maps
    max_bad_steps: int = 20  # stop after this many non-finite or exploded steps in a row
    dist_timeout_s: float = 600.0  # torchrun: seconds a rank waits for the others before it stops
    init_from: str = ""  # a checkpoint (.pt) whose weights, model config and tokenizers start a new run; "" = none

    def validate(self) -> None:
        _require(
            self.precision in ("auto", "fp32", "bf16", "fp16"),
            f"train.precision must be auto, fp32, bf16 or fp16, not {self.precision!r}",
        )
        _require(
            self.schedule in ("inverse_sqrt", "cosine"),
            f"train.schedule must be inverse_sqrt or cosine, not {self.schedule!r}",
        )
        _require(0.0 < self.lr < math.inf, f"train.lr must be a positive number, not {self.lr}")
        _require(self.eps > 0.0, f"train.eps must be positive, not {self.eps}")
        _require(
            all(0.0 <= beta < 1.0 for beta in self.betas),
            f"train.betas must both be in [0, 1), not {list(self.betas)}",
        )
        _require(
            0.0 <= self.weight_decay < math.inf,
            f"train.weight_decay must be at least 0, not {self.weight_decay}",
        )
        _require(
            0.0 <= self.clip_norm < math.inf,
            f"train.clip_norm must be at least 0 (0 = off), not {self.clip_norm}",
        )
        _require(
            0.0 <= self.max_minutes < math.inf,
            f"train.max_minutes must be at least 0 (0 = no limit), not {self.max_minutes}",
        )
        _check_fraction(self, "train", "label_smoothing")
        _check_fraction(self, "train", "ema_decay")
        _check_fraction(self, "train", "min_lr_ratio", upper_inclusive=True)
        _check_at_least(self, "train", 0, "warmup_steps", "threads", "max_steps", "max_epochs")
        _check_at_least(self, "train", 0, "keep_checkpoints", "patience", "num_samples")
        _check_at_least(self, "train", 1, "accumulate", "validate_every", "log_every")
        _check_at_least(self, "train", 1, "max_bad_steps")
        for name in self.loggers:
            _require(
                name in LOGGERS,
                f"train.loggers: {name!r} is not a logger; choose from {', '.join(LOGGERS)}",
            )
        _require(
            len(set(self.loggers)) == len(self.loggers),
            f"train.loggers names a logger twice: {self.loggers}",
        )
        _require(
            self.wandb_mode in ("", *WANDB_MODES),
            f'train.wandb_mode must be {", ".join(WANDB_MODES)} or "" (WANDB_MODE decides), '
            f"not {self.wandb_mode!r}",
        )
        _require(
            0.0 < self.dist_timeout_s < math.inf,
            f"train.dist_timeout_s must be a positive number of seconds, not {self.dist_timeout_s}",
        )
        _require(
            self.schedule != "inverse_sqrt" or self.warmup_steps >= 1,
            "train.schedule=inverse_sqrt needs train.warmup_steps >= 1 (its rate is "
            "sqrt(warmup / step): 0 warmup steps give a learning rate of 0); use "
            "train.schedule=cosine for no warmup",
        )
        _require(
            self.schedule != "cosine" or self.max_steps > 0 or self.max_minutes > 0,
            "train.schedule=cosine needs train.max_steps > 0 or train.max_minutes > 0 to know "
            "its length",
        )


@dataclass
class DecodeConfig:
    """Decoding used by validation and translate.py."""

    beam_size: int = 1  # 1 = greedy
    length_penalty: float = 0.6  # GNMT alpha; 0 = raw log-probability
    max_len_a: float = 1.2  # output length limit: a * source length + b
    max_len_b: int = 10  # see max_len_a
    nbest: int = 1  # hypotheses per sentence (beam search: <= beam_size; sampling: draws)
    batch_tokens: int = 4096  # source tokens per decoding batch
    sample: bool = False  # draw each token at random instead of searching (beam_size unused)
    temperature: float = 1.0  # sampling: < 1 sharpens the distribution, > 1 flattens it
    top_k: int = 0  # sampling: draw among the k most probable tokens only (0 = all)
    top_p: float = 1.0  # sampling: among the fewest tokens reaching this probability (1 = all)
    seed: int | None = None  # sampling: seed of the draws (None = a fresh one each run)

    def validate(self) -> None:
        _check_at_least(self, "decode", 1, "beam_size", "nbest", "batch_tokens")
        _require(
            self.nbest <= self.beam_size or self.sample,
            f"decode.nbest ({self.nbest}) cannot exceed decode.beam_size ({self.beam_size})",
        )
        _require(
            0.0 < self.temperature < math.inf,
            f"decode.temperature must be a positive number, not {self.temperature}",
        )
        _require(0.0 < self.top_p <= 1.0, f"decode.top_p must be in (0, 1], not {self.top_p}")
        _check_at_least(self, "decode", 0, "top_k")
        for name in ("length_penalty", "max_len_a"):
            value = getattr(self, name)
            _require(0.0 <= value < math.inf, f"decode.{name} must be at least 0, not {value}")
        _require(self.max_len_b >= 0, f"decode.max_len_b must be at least 0, not {self.max_len_b}")
        _require(
            self.max_len_a > 0 or self.max_len_b > 0,
            "decode.max_len_a and decode.max_len_b are both 0: every translation would be empty",
        )


@dataclass
class Config:
    """Everything a run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def validate(self) -> None:
        """Every value checked where it is parsed: one clear ConfigError for the first bad one."""
        self.model.validate()
        self.data.validate()
        self.train.validate()
        self.decode.validate()


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
                # A list or mapping that fails inside says more than "must be a str".
                same_kind = (typing.get_origin(arg) is list and isinstance(value, list)) or (
                    dataclasses.is_dataclass(arg) and isinstance(value, dict)
                )
                errors.insert(0 if same_kind else len(errors), str(error))
        raise ConfigError(errors[0])
    if origin is list:
        if not isinstance(value, (list, tuple)):
            example = f" (one item: [{value}])" if isinstance(value, str) else ""
            raise ConfigError(f"{key} must be a list{example}, not {value!r}")
        (item_hint,) = args
        return [_coerce(item, item_hint, f"{key}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return config_from_dict(value, hint, key + ".")
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
        raise ConfigError(
            f"override {text!r}: cannot read the value ({_one_line(error)})"
        ) from None
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "3e-4" as a string
    return key.strip().split("."), value


def _one_line(error: yaml.YAMLError) -> str:
    """PyYAML's messages span several lines; keep the problem and where it is."""
    problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


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
        path = find_recipe(path)
        if not path.is_file():
            names = ", ".join(recipe_names()) or "none installed"
            raise ConfigError(
                f"config {str(path)!r} not found: it is neither a file nor the name of an "
                f"installed recipe ({names})"
            )
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ConfigError(
                f"config file {str(path)!r} is not valid YAML: {_one_line(error)}"
            ) from None
        if isinstance(values, dict):
            _paths_next_to_recipe(values, path.parent)
    values = apply_overrides(_lists_for_tuples(values), overrides or [])
    config = config_from_dict(values)
    config.validate()
    return config


def _paths_next_to_recipe(values: dict[str, Any], folder: Path) -> None:
    """A relative data.dataset (or corpus entry) that is not found from the working directory but
    is found next to the recipe file becomes that path, so that a recipe can ship its own data."""

    def resolved(dataset: Any) -> Any:
        if not isinstance(dataset, str) or not dataset or Path(dataset).is_absolute():
            return dataset
        beside = folder / dataset
        return str(beside) if not Path(dataset).exists() and beside.exists() else dataset

    data = values.get("data")
    if not isinstance(data, dict) or "dataset" not in data:
        return
    dataset = data["dataset"]
    if isinstance(dataset, list):
        for entry in dataset:
            if isinstance(entry, dict) and "dataset" in entry:
                entry["dataset"] = resolved(entry["dataset"])
        data["dataset"] = [resolved(entry) for entry in dataset]
    else:
        data["dataset"] = resolved(dataset)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False)
    Path(path).write_text(text, encoding="utf-8")


# --- documentation: the table of every key (docs/configuration.md) ------------------------------


def config_markdown(cls: type = Config, prefix: str = "") -> str:
    """A Markdown table per section (model, data, data.splits, ...): key, type, default, meaning,
    read from the dataclasses and the comment after each field."""
    comments = _field_comments(cls)
    hints = typing.get_type_hints(cls)
    rows, sections = [], []
    for f in dataclasses.fields(cls):
        hint, key = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(hint):
            sections.append(config_markdown(hint, key + "."))
            continue
        sections += [config_markdown(inner, key + "[].") for inner in _listed_dataclasses(hint)]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        # "|" would end the cell; "<" would open an HTML tag (</s>, <run_dir>) and hide the text
        meaning = comments.get(f.name, "").replace("|", "\\|").replace("<", "&lt;")
        kind = _type_name(hint).replace("|", "\\|")
        rows.append(f"| `{key}` | {kind} | `{_yaml_value(default)}` | {meaning} |")
    parts = []
    if rows:
        doc = (inspect.getdoc(cls) or "").split("\n")[0]
        header = "| key | type | default | meaning |\n|---|---|---|---|\n"
        parts.append(f"**`{prefix.rstrip('.')}`**: {doc}\n\n{header}" + "\n".join(rows) + "\n")
    return "\n".join(parts + sections)


def _field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment written after it in the class body (also when ruff format wrapped
    the default onto its own line)."""
    source = inspect.getsource(cls)
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    found = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines = range(node.lineno, node.end_lineno + 1)
            found[node.target.id] = " ".join(comments[n] for n in lines if n in comments)
    return found


def _listed_dataclasses(hint: Any, in_list: bool = False) -> list[type]:
    """Dataclasses that a hint holds in a list (data.dataset's SourceConfig entries)."""
    if in_list and dataclasses.is_dataclass(hint):
        return [hint]
    in_list = in_list or typing.get_origin(hint) is list
    return [found for arg in typing.get_args(hint) for found in _listed_dataclasses(arg, in_list)]


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return re.sub(r"[\w.]+\.(\w+)", r"\1", str(hint))  # typing.X, module.SourceConfig -> X


def _yaml_value(value: Any) -> str:
    """How the value is written in a YAML recipe or an override (true, null, [0.9, 0.98], '')."""
    text = yaml.safe_dump(_lists_for_tuples(value), default_flow_style=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()
