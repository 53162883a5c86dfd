"""Shared by the tests: the tiny model size of the style guide (d_model 32, 2 heads, 2 layers)."""

from __future__ import annotations

import dataclasses

from transformer.config import ModelConfig

PAD, BOS, EOS = 0, 2, 3


def tiny_model_config(**changes: object) -> ModelConfig:
    """A model small enough to train in seconds on a CPU; `changes` override any field."""
    config = ModelConfig(
        src_vocab_size=50,
        tgt_vocab_size=40,
        d_model=32,
        n_heads=2,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=64,
        dropout=0.0,
        max_positions=64,
        tie_output_embedding=False,
    )
    return dataclasses.replace(config, **changes)
