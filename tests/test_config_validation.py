"""Every config value is checked where it is parsed: one clear line and exit code 2, never a
traceback from deep inside or a run that silently trains nothing."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import train
from transformer.config import Config, ConfigError, load_config
from transformer.training.schedule import learning_rate_factor

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")
NUMBERS = str(Path(__file__).parent.parent / "configs" / "data" / "numbers")
# Quick if a value were wrongly accepted: one step of a small model (the case's override comes last).
ONE_STEP = [f"data.dataset={NUMBERS}", "train.device=cpu", "train.max_steps=1", "model.d_model=32"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # the rows of issue 11
        ("train.warmup_steps=0", "train.warmup_steps >= 1"),  # inverse_sqrt: lr 0 at every step
        ("train.warmup_steps=-5", "train.warmup_steps must be at least 0, not -5"),
        ("train.lr=-1", "train.lr must be a positive number, not -1.0"),
        ("data.tokenizer.vocab_size=0", "data.tokenizer.vocab_size must be at least 260"),
        # and the other values that can be nonsensical
        ("train.lr=0", "train.lr must be a positive number"),
        ("train.lr=.nan", "train.lr must be a positive number, not nan"),
        ("train.betas=[0.9,1.5]", "train.betas must both be in [0, 1)"),
        ("train.eps=0", "train.eps must be positive"),
        ("train.label_smoothing=1", "train.label_smoothing must be in [0, 1)"),
        ("train.ema_decay=1", "train.ema_decay must be in [0, 1)"),
        ("train.min_lr_ratio=2", "train.min_lr_ratio must be in [0, 1]"),
        ("train.clip_norm=-1", "train.clip_norm must be at least 0"),
        ("train.weight_decay=-0.1", "train.weight_decay must be at least 0"),
        ("train.validate_every=0", "train.validate_every must be at least 1"),
        ("train.log_every=0", "train.log_every must be at least 1"),
        ("train.max_steps=-1", "train.max_steps must be at least 0"),
        ("train.max_minutes=-2", "train.max_minutes must be at least 0"),
        ("train.keep_checkpoints=-1", "train.keep_checkpoints must be at least 0"),
        ("train.max_bad_steps=0", "train.max_bad_steps must be at least 1"),
        ("model.n_heads=0", "model.n_heads must be at least 1"),
        ("model.d_model=-8", "model.d_model must be at least 1"),
        ("model.n_encoder_layers=0", "model.n_encoder_layers must be at least 1"),
        ("model.dropout=1.0", "model.dropout must be in [0, 1)"),
        ("data.max_tokens=0", "data.max_tokens must be at least 1"),
        ("data.max_length=-3", "data.max_length must be at least 1"),
        ("data.tokenizer.min_frequency=-1", "data.tokenizer.min_frequency must be at least 0"),
        ("data.tokenizer.kind=wordlevel data.tokenizer.vocab_size=4", "at least 5"),
        ("decode.max_len_a=-1", "decode.max_len_a must be at least 0"),
        ("decode.batch_tokens=0", "decode.batch_tokens must be at least 1"),
        ("decode.max_len_a=0 decode.max_len_b=0", "every translation would be empty"),
        ("train.loggers=[tensorboard,neptune]", "'neptune' is not a logger; choose from"),
        ("train.loggers=wandb", "train.loggers must be a list (one item: [wandb])"),
        ("train.wandb_mode=online!", "train.wandb_mode must be online, offline, disabled"),
    ],
)
def test_nonsensical_values_give_one_clear_line_and_exit_2(
    override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--config", TINY, f"train.run_dir={tmp_path / 'run'}", *ONE_STEP, *override.split()]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("error: ")  # one line, no traceback
    assert not (tmp_path / "run").exists()  # stopped before any work


def test_a_schedule_defined_at_zero_warmup_is_accepted() -> None:
    config = load_config(TINY, ["train.schedule=cosine", "train.warmup_steps=0"])
    assert config.train.warmup_steps == 0


# --- property: any dotted override applies or gives a ConfigError, never another exception ------


def _dotted_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            keys += _dotted_keys(hints[field.name], prefix + field.name + ".")
        else:
            keys.append(prefix + field.name)
    return keys


KEYS = _dotted_keys()
VALUE_TEXTS = st.one_of(
    st.integers(-3, 3).map(str),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "",
            "true",
            "null",
            "~",
            "[]",
            "{}",
            "[1, 2]",
            "[0.5, 0.5]",
            ".inf",
            "-.nan",
            "1e400",
            "!!python/object:os.system",
            "{a: [",
            "'x'",
            "auto",
            "bpe",
            "cosine",
            "0x10",
            "1_000",
        ]
    ),
    st.text(max_size=12),
)
KEY_TEXTS = st.one_of(
    st.sampled_from(KEYS),
    st.sampled_from(KEYS).map(lambda key: key + ".deeper"),
    st.sampled_from(["model", "train", "data.tokenizer", "", ".", "train..lr"]),
    st.text(max_size=10),
)
OVERRIDES = st.lists(st.tuples(KEY_TEXTS, VALUE_TEXTS).map("=".join), max_size=3)


def check_usable(config: Config) -> None:
    """What training builds first from the settings must accept them: AdamW, a learning rate
    above 0 at the first steps."""
    train = config.train
    parameter = torch.zeros(1, requires_grad=True)
    torch.optim.AdamW(
        [parameter], lr=train.lr, betas=train.betas, eps=train.eps, weight_decay=train.weight_decay
    )
    for step in (0, 1):
        factor = learning_rate_factor(
            step, train.warmup_steps, train.schedule, train.max_steps, train.min_lr_ratio
        )
        assert train.lr * factor > 0, (step, factor)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OVERRIDES)
def test_any_dotted_override_applies_or_gives_a_config_error(overrides: list[str]) -> None:
    try:
        config = load_config(TINY, overrides)
    except ConfigError as error:
        assert str(error) and "\n" not in str(error).strip()  # one line
        return
    check_usable(config)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(KEYS), VALUE_TEXTS)
def test_any_value_for_a_known_key_applies_or_gives_a_config_error(key: str, value: str) -> None:
    try:
        config = load_config(TINY, [f"{key}={value}"])
    except ConfigError:
        return
    check_usable(config)
