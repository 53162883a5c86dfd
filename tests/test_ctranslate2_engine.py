"""`--engine ctranslate2`: the exported model decodes what the PyTorch search decodes, the export
beside the checkpoint is made once and renewed when the checkpoint changes, and what the engine
cannot do is refused in one line."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from helpers import NUMBERS, trained_tiny_checkpoint

from transformer.checkpoint import load_model
from transformer.commands import translate
from transformer.commands.common import start_the_search
from transformer.device import reserve_search_threads
from transformer.inference.ctranslate2_engine import STAMP
from transformer.inference.translator import Translation, Translator
from transformer.tokenization.tokenizer import BOS_ID, EOS_ID

pytest.importorskip(
    "ctranslate2",
    reason="the optional [export] extra is not installed (pip install -e '.[export]')",
)
SOURCES = (NUMBERS / "test.en").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared trained checkpoint, so that its export lands in a folder of this
    module's own."""
    copy = tmp_path_factory.mktemp("engine") / "best.pt"
    shutil.copy(trained_tiny_checkpoint(tmp_path_factory), copy)
    return copy


@pytest.fixture(autouse=True)
def restore_torch_threads() -> object:
    """The engine leaves torch one thread (device.reserve_search_threads); the next test gets its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def translations(checkpoint: Path, engine: str, **options: object) -> list[list[Translation]]:
    loaded = load_model(checkpoint)
    translator = Translator.with_options(
        loaded, torch.device("cpu"), names=[str(checkpoint)], engine=engine, **options
    )
    with torch.inference_mode():
        return translator.translate(SOURCES)


def test_greedy_translations_are_the_pytorch_searchs(checkpoint: Path) -> None:
    expected = [nbest[0].text for nbest in translations(checkpoint, "torch", beam_size=1)]
    assert len(set(expected)) > 10  # a model that translates, not one repeated output
    found = translations(checkpoint, "ctranslate2", beam_size=1)
    assert [nbest[0].text for nbest in found] == expected


def test_each_sentence_keeps_its_own_output_limit(checkpoint: Path) -> None:
    """One call decodes sentences of every length under the longest limit; those that ran past
    their own are decoded again and end there, as in the PyTorch search."""
    limits = {"beam_size": 1, "max_len_a": 0.5, "max_len_b": 1}
    expected = [nbest[0].tokens for nbest in translations(checkpoint, "torch", **limits)]
    lengths = {len(tokens) for tokens in expected}
    assert len(lengths) > 2  # limits of several lengths were reached
    found = translations(checkpoint, "ctranslate2", **limits)
    assert [nbest[0].tokens for nbest in found] == expected


def test_the_model_loads_on_one_thread_and_the_search_gets_the_rest() -> None:
    """Torch and CTranslate2 share one OpenMP runtime, and a second pool of threads beside the
    search's made greedy decoding 2-6x slower (commands/common.py, ctranslate2_engine.py)."""
    torch.set_num_threads(2)
    assert reserve_search_threads(None) == 2 and torch.get_num_threads() == 1
    start_the_search(2, "torch")
    assert torch.get_num_threads() == 2
    assert reserve_search_threads(3) == 3 and torch.get_num_threads() == 1
    start_the_search(3, "ctranslate2")
    assert torch.get_num_threads() == 1


def test_beam_search_finds_what_the_model_scores_at_least_as_high(checkpoint: Path) -> None:
    """Beam search is not one algorithm: CTranslate2 refills its beam when a hypothesis ends,
    where the PyTorch search carries on with fewer, so now and then one finds a hypothesis the
    other pruned. What must hold: the same translation for nearly every sentence, and wherever
    they differ, the PyTorch model itself gives the engine's translation at least the
    log-probability of its own (length penalty 0: both rank by log-probability)."""
    model = load_model(checkpoint).model.eval()
    ours = translations(checkpoint, "torch", beam_size=4, length_penalty=0.0)
    theirs = translations(checkpoint, "ctranslate2", beam_size=4, length_penalty=0.0)
    source_ids = load_model(checkpoint).tokenizers.encode_source(SOURCES)
    differing = 0
    for src, mine, other in zip(source_ids, ours, theirs, strict=True):
        if mine[0].tokens != other[0].tokens:
            differing += 1
            assert (
                log_prob(model, src, other[0].tokens) >= log_prob(model, src, mine[0].tokens) - 1e-3
            )
    assert differing <= len(SOURCES) // 10


def log_prob(model: torch.nn.Module, src: list[int], tokens: list[int]) -> float:
    """log p(tokens + EOS | src) under the PyTorch model, by teacher forcing."""
    with torch.inference_mode():
        logits = model(torch.tensor([src]), torch.tensor([[BOS_ID, *tokens]]))  # (1, T, V)
    log_probs = logits[0].float().log_softmax(dim=-1)  # (T, V)
    wanted = torch.tensor([*tokens, EOS_ID])  # (T,)
    return float(log_probs.gather(1, wanted[:, None]).sum())


def test_the_export_is_made_once_and_renewed_for_a_new_checkpoint(checkpoint: Path) -> None:
    translations(checkpoint, "ctranslate2")
    stamp = checkpoint.with_name("best.pt.ctranslate2") / STAMP
    made = stamp.stat().st_mtime_ns
    translations(checkpoint, "ctranslate2")
    assert stamp.stat().st_mtime_ns == made  # reused
    later = checkpoint.stat().st_mtime_ns + 10**9
    os.utime(checkpoint, ns=(later, later))  # as a retrained best.pt would be
    translations(checkpoint, "ctranslate2")
    assert stamp.stat().st_mtime_ns != made  # exported again
    leftovers = [p.name for p in checkpoint.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary export folder left behind


def test_the_command_line_refuses_what_the_engine_cannot_do(
    checkpoint: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for extra in (["--attention", str(checkpoint.parent / "pictures")], [str(checkpoint)]):
        with pytest.raises(SystemExit) as exit_info:
            translate.main(["-c", str(checkpoint), *extra, "--engine", "ctranslate2", "seven"])
        assert exit_info.value.code == 2
        assert "leave out --engine ctranslate2" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # as if the extra were not installed
    assert translate.main(["-c", str(checkpoint), "--engine", "ctranslate2", "seven"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[export]"' in err


def test_nbest_and_sampling_through_the_command(
    checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["-c", str(checkpoint), "--engine", "ctranslate2", "twenty-one", "seven"]
    assert translate.main([*argv, "--beam", "4", "--nbest", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ||| ")[0] for line in lines] == ["0"] * 3 + ["1"] * 3
    sampled = [*argv, "--sample", "--nbest", "2", "--seed", "3", "--top-k", "5"]
    assert translate.main(sampled) == 0
    first = capsys.readouterr().out
    assert translate.main(sampled) == 0
    assert capsys.readouterr().out == first  # the seed fixes the draws
