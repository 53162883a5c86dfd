"""`train.init_from=PATH.pt`: a new run that starts from a checkpoint's weights.

Fine-tuning a converted OPUS-MT model on one's own data, or continuing one of our own runs on new
data, is a *new* run: a fresh optimiser, learning-rate schedule, step count and data order, and a
run directory of its own that `--resume` continues exactly like any other. What it takes from the
checkpoint is what the weights need: the model config and the tokenizers.

Model keys: the architecture is the checkpoint's. A model key the recipe leaves at its default is
taken from the checkpoint; one it sets to something else must equal the checkpoint's, or the run
is refused in one line (the weights would not fit, or would mean something else). Dropout and
attention dropout are training choices: the recipe's values are used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

from transformer.checkpoint import load_checkpoint
from transformer.config import Config, ConfigError, ModelConfig, config_from_dict

TRAINING_CHOICES = ("dropout", "attention_dropout")  # may differ from the checkpoint's
FROM_TOKENIZERS = ("src_vocab_size", "tgt_vocab_size", "pad_id")  # set from the tokenizers


def load_initial_checkpoint(config: Config) -> dict[str, Any] | None:
    """The checkpoint named by train.init_from (weights, config, tokenizers), or None."""
    if not config.train.init_from:
        return None
    return load_checkpoint(config.train.init_from)


def initial_model_config(config: Config, initial: dict[str, Any]) -> Config:
    """`config` with the model section of the checkpoint `initial` (see the module docstring)."""
    theirs = config_from_dict(initial["config"]).model
    ours, default = config.model, ModelConfig()
    for field in dataclasses.fields(ModelConfig):
        name = field.name
        if name in TRAINING_CHOICES or name in FROM_TOKENIZERS:
            continue
        mine, saved = getattr(ours, name), getattr(theirs, name)
        if mine != getattr(default, name) and mine != saved:
            raise ConfigError(
                f"train.init_from: model.{name} is {mine!r} here but {saved!r} in "
                f"{config.train.init_from!r}; the architecture is the checkpoint's: remove "
                f"model.{name} from the recipe and overrides, or set it to {saved!r}"
            )
    chosen = {name: getattr(ours, name) for name in TRAINING_CHOICES}
    return replace(config, model=replace(theirs, **chosen))
