"""Linear layers packed for oneDNN: the same float32 results as nn.Linear, the same searches, a
copy that leaves the model as it was, and no packing where it cannot work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import NUMBERS, tiny_model_config, trained_tiny_checkpoint
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from transformer.checkpoint import load_model
from transformer.inference.decoding import beam_search, greedy_search
from transformer.inference.onednn_linear import PackedLinear, pack_linear_layers, packing_works
from transformer.inference.translator import Translator
from transformer.model import build_transformer

needs_packing = pytest.mark.skipif(not packing_works(), reason="this torch build cannot pack")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_tiny_checkpoint(tmp_path_factory)


@needs_packing
@pytest.mark.parametrize("shape", [(1, 32), (7, 32), (3, 5, 32)])
def test_packed_linear_computes_what_nn_linear_computes(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(32, 48)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(PackedLinear(linear)(x), linear(x), rtol=1e-5, atol=1e-5)


@needs_packing
def test_packing_copies_every_linear_layer_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = build_transformer(tiny_model_config()).eval()
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    random_state = torch.random.get_rng_state()
    packed = pack_linear_layers(model)
    # Validation packs the training model: dropout and data order must not notice.
    assert torch.equal(torch.random.get_rng_state(), random_state)

    assert not any(type(module) is nn.Linear for module in packed.modules())
    assert isinstance(packed.projection.linear, PackedLinear)
    assert isinstance(packed.decoder.layers[0].cross_attention.in_proj_parts["query"], PackedLinear)
    assert type(model.projection.linear) is nn.Linear  # the original is untouched
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[name], state[name]) for name in state)
    assert not any("packed_weight" in name for name in packed.state_dict())  # never saved


@needs_packing
def test_packed_model_searches_like_the_float_model(checkpoint: Path) -> None:
    loaded = load_model(checkpoint)
    sources = loaded.tokenizers.encode_source(
        (NUMBERS / "test.en").read_text(encoding="utf-8").splitlines()
    )
    src = pad_sequence([torch.tensor(ids) for ids in sources], batch_first=True)  # (B, S)
    packed = pack_linear_layers(loaded.model)

    for search in (greedy_search, lambda model, src: [n[0] for n in beam_search(model, src)]):
        expected, got = search(loaded.model, src), search(packed, src)
        # Only the order of float32 additions differs: the same tokens, scores equal to 1e-4.
        assert [h.tokens for h in got] == [h.tokens for h in expected]
        torch.testing.assert_close(
            torch.tensor([h.score for h in got]),
            torch.tensor([h.score for h in expected]),
            rtol=1e-4,
            atol=1e-4,
        )


@needs_packing
def test_translator_packs_a_float_model_on_the_cpu(checkpoint: Path) -> None:
    loaded = load_model(checkpoint)
    translator = Translator.with_options(loaded, torch.device("cpu"))
    assert isinstance(translator.model.decoder.layers[0].feed_forward.linear_in, PackedLinear)
    assert type(loaded.model.decoder.layers[0].feed_forward.linear_in) is nn.Linear
    assert all(t[0].text for t in translator.translate(["twenty-one", "I see five birds ."]))


def test_no_packing_where_it_cannot_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another dtype, or a torch build whose op is missing or disagrees: the model as it is."""
    torch.manual_seed(0)
    model = build_transformer(tiny_model_config()).eval()
    assert pack_linear_layers(model.double()) is model
    monkeypatch.setattr("transformer.inference.onednn_linear.packing_works", lambda: False)
    model = model.float()
    assert pack_linear_layers(model) is model
