"""The moving average of the weights: its update rule, and a training run that validates, saves and
resumes it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_model_config
from tests.test_train import run_train
from transformer.model import build_transformer
from transformer.training.moving_average import WeightMovingAverage, decay_at


def test_update_is_the_exponential_moving_average_with_a_warmed_up_decay() -> None:
    torch.manual_seed(0)
    model = build_transformer(tiny_model_config(tie_output_embedding=True))
    average = WeightMovingAverage(model, decay=0.9)
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    for step in (1, 2, 50):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        expected = {
            name: decay_at(step, 0.9) * start[name] + (1 - decay_at(step, 0.9)) * p.detach()
            for name, p in model.named_parameters()
        }
        average.update(step)
        for name, p in average.model.named_parameters():
            torch.testing.assert_close(p, expected[name], msg=name)
        start = {name: p.detach().clone() for name, p in average.model.named_parameters()}
    assert decay_at(1, 0.9) == pytest.approx(2 / 11) and decay_at(100, 0.9) == 0.9
    # The copy's tied output projection still shares the averaged embedding.
    assert average.model.projection.linear.weight is average.model.tgt_embed.embedding.weight
    assert not any(p.requires_grad for p in average.model.parameters())


def saved(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def test_training_validates_and_saves_the_average_and_resumes_it_exactly(tmp_path: Path) -> None:
    common = (  # validations decode 4 tokens at most: the weights are what is compared
        "train.validate_every=4",
        "model.dropout=0.1",
        "train.ema_decay=0.8",
        "decode.max_len_a=0",
        "decode.max_len_b=4",
    )
    assert run_train(tmp_path / "straight", "train.max_steps=8", *common) == 0
    assert run_train(tmp_path / "split", "train.max_steps=4", *common) == 0
    assert run_train(tmp_path / "split", "train.max_steps=8", *common, flags=("--resume",)) == 0
    straight, split = saved(tmp_path / "straight"), saved(tmp_path / "split")
    for key in ("model", "training_weights"):
        for name, tensor in straight[key].items():
            assert torch.equal(tensor, split[key][name]), (key, name)
    # "model" is the average, not the live weights, and a run without the average matches the
    # live weights bit for bit (the average changes nothing in training itself).
    weight = "encoder.layers.0.feed_forward.linear_in.weight"
    assert not torch.equal(straight["model"][weight], straight["training_weights"][weight])
    assert run_train(tmp_path / "plain", "train.max_steps=8", *common[:2]) == 0
    plain = saved(tmp_path / "plain")
    assert "training_weights" not in plain
    assert torch.equal(plain["model"][weight], straight["training_weights"][weight])
