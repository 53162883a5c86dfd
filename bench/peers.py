"""The peer implementations the benchmarks compare against, built at the project's sizes."""

from __future__ import annotations

import argparse

import torch

from transformer.tokenizer import BOS_ID, EOS_ID, PAD_ID


def marian_model(
    args: argparse.Namespace, vocab_size: int, dropout: float = 0.1
) -> torch.nn.Module:
    """Hugging Face MarianMTModel, randomly initialised, with the sizes in `args` (d_model, layers,
    heads, d_ff, max_positions), one shared vocabulary and this project's special-token ids.
    `dropout` also covers the feed-forward hidden layer, as the project's does; no attention dropout."""
    from transformers import MarianConfig, MarianMTModel  # a bench-only dependency

    config = MarianConfig(
        vocab_size=vocab_size,
        d_model=args.d_model,
        encoder_layers=args.layers,
        decoder_layers=args.layers,
        encoder_attention_heads=args.heads,
        decoder_attention_heads=args.heads,
        encoder_ffn_dim=args.d_ff,
        decoder_ffn_dim=args.d_ff,
        max_position_embeddings=args.max_positions,
        activation_function="relu",
        dropout=dropout,
        activation_dropout=dropout,
        attention_dropout=0.0,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        decoder_start_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        bos_token_id=None,
        forced_eos_token_id=None,
    )
    return MarianMTModel(config)
