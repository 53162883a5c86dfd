"""A Hugging Face MarianMTModel with random weights, at any size: the one builder behind the tests
of the OPUS-MT import (tests/test_convert.py), the peers in the speed benches (bench/peers.py) and
an OPUS-MT-shaped model to try the import on (bench/random_opus_mt.py). Needs `transformers`.

    sys.path.insert(0, "tools"); from random_marian import random_marian
    model = random_marian(vocab_size=58101, d_model=512, layers=6, heads=8, d_ff=2048)
"""

from __future__ import annotations

from typing import Any

import torch


def random_marian(
    vocab_size: int,
    *,
    d_model: int,
    layers: int,
    heads: int,
    d_ff: int,
    target_vocab_size: int | None = None,
    max_positions: int = 512,
    activation: str = "swish",
    pad_id: int | None = None,
    decoder_start_id: int | None = None,
    eos_id: int = 0,
    forced_eos_id: int | None = None,
    bos_id: int | None = None,
    dropout: float = 0.0,
    activation_dropout: float | None = None,
    init_std: float = 0.02,
    seed: int | None = None,
) -> torch.nn.Module:
    """A randomly initialised MarianMTModel. Defaults are OPUS-MT's conventions: swish, scaled
    embeddings, <pad> as the last id and the decoder's start token, </s> = 0, and one shared,
    tied vocabulary unless target_vocab_size gives the target its own."""
    import transformers  # test and bench dependency only (the [convert] extra)

    shared = target_vocab_size is None
    pad = vocab_size - 1 if pad_id is None else pad_id
    config: Any = transformers.MarianConfig(
        vocab_size=vocab_size,
        decoder_vocab_size=vocab_size if shared else target_vocab_size,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=d_ff,
        decoder_ffn_dim=d_ff,
        activation_function=activation,
        scale_embedding=True,
        max_position_embeddings=max_positions,
        pad_token_id=pad,
        decoder_start_token_id=pad if decoder_start_id is None else decoder_start_id,
        eos_token_id=eos_id,
        bos_token_id=bos_id,
        forced_eos_token_id=forced_eos_id,
        share_encoder_decoder_embeddings=shared,
        tie_word_embeddings=shared,
        dropout=dropout,
        attention_dropout=0.0,
        activation_dropout=dropout if activation_dropout is None else activation_dropout,
        init_std=init_std,
    )
    if seed is not None:
        torch.manual_seed(seed)
    return transformers.MarianMTModel(config)
