"""Shared by the tests: the tiny model size of the style guide (d_model 32, 2 heads, 2 layers)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from transformer.config import ModelConfig
from transformer.tokenization.tokenizer import BOS_ID, EOS_ID, PAD_ID

PAD, BOS, EOS = PAD_ID, BOS_ID, EOS_ID  # short names for the tests, from their one home


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


NUMBERS = Path(__file__).parent.parent / "configs" / "data" / "numbers"
_trained_checkpoints: dict[int, Path] = {}


def trained_tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.pt of a tiny model trained on the numbers corpus until it translates most test
    sentences sensibly (greedy outputs end with EOS rather than at the length limit).

    Trained once per test session and shared by the modules that compare decoders on it
    (quantization, export), since training is the slow part of those tests."""
    session = id(tmp_path_factory)
    if session not in _trained_checkpoints:
        import train  # the script at the repository root; imported only when a test needs it

        directory = tmp_path_factory.mktemp("tiny_trained")
        status = train.main(
            [
                "--config",
                str(Path(__file__).parent.parent / "configs" / "tiny.yaml"),
                f"train.run_dir={directory}",
                f"data.dataset={NUMBERS}",
                "train.device=cpu",
                "train.max_steps=80",
                "train.validate_every=80",
                "model.d_model=48",
                "model.d_ff=96",
            ]
        )
        assert status == 0
        _trained_checkpoints[session] = directory / "checkpoints" / "best.pt"
    return _trained_checkpoints[session]


def tiny_multilingual_checkpoint(
    path: Path, languages: tuple[str, ...] = ("de", "fr"), biased_to_tag: str | None = None
) -> Path:
    """An untrained tiny en -> de, fr model saved at `path`: tokenizers trained on the numbers
    corpus, then given the >>de<< and >>fr<< tags; config with data.pairs [en-de, en-fr].
    languages=() gives the bilingual en -> de model of the same corpus (no tags, no data.pairs).

    biased_to_tag: make that tag the most probable output at every step (its output bias far
    above every other logit), so that a search that did not exclude tags would emit it."""
    import torch

    from transformer.checkpoint import save_checkpoint
    from transformer.config import Config, DataConfig, TokenizerConfig, config_to_dict
    from transformer.model import build_transformer
    from transformer.tokenization.tokenizer import train_tokenizers

    source = (NUMBERS / "train.en").read_text(encoding="utf-8").splitlines()
    target = (NUMBERS / "train.de").read_text(encoding="utf-8").splitlines()
    tokenizers = train_tokenizers(source, target, TokenizerConfig(vocab_size=280))
    if languages:
        tokenizers = tokenizers.with_language_tags(languages)
    model_config = tiny_model_config(
        src_vocab_size=tokenizers.src_vocab_size, tgt_vocab_size=tokenizers.tgt_vocab_size
    )
    pairs = [f"en-{language}" for language in languages]
    config = Config(model=model_config, data=DataConfig(pairs=pairs))
    torch.manual_seed(0)
    model = build_transformer(model_config)
    if biased_to_tag is not None:
        with torch.no_grad():
            model.projection.linear.bias[tokenizers.language_tags[biased_to_tag]] = 1000.0
    payload = {
        "config": config_to_dict(config),
        "tokenizers": tokenizers.to_json(),
        "model": model.state_dict(),
        "step": 0,
    }
    save_checkpoint(payload, path)
    return path
