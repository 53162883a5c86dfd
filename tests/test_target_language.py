"""Choosing the target language of a multilingual model: the >>xx<< tags in the vocabulary, the
searches that never emit them, and translate.py's --tgt-lang (every decoding mode, every input
kind, every user error in one line)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from helpers import NUMBERS, tiny_multilingual_checkpoint

import transformer.inference.translator
from transformer.checkpoint import load_model
from transformer.commands import translate
from transformer.config import Config, DataConfig, TokenizerConfig
from transformer.inference.translator import Translator, describe_languages, target_languages
from transformer.tokenization.tokenizer import LanguageError, train_tokenizers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_multilingual_checkpoint(tmp_path_factory.mktemp("multi") / "multi.pt")


@pytest.fixture(scope="module")
def bilingual(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_multilingual_checkpoint(tmp_path_factory.mktemp("bi") / "bi.pt", languages=())


@pytest.fixture
def sources_seen(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The source ids every search of the test was given (the translator's translate_ids, spied)."""
    seen: list[list[int]] = []
    real = transformer.inference.translator.translate_ids

    def spy(models: list, sources: list[torch.Tensor], *args: object, **kwargs: object) -> list:
        seen.extend(source.tolist() for source in sources)
        return real(models, sources, *args, **kwargs)

    monkeypatch.setattr(transformer.inference.translator, "translate_ids", spy)
    return seen


def the_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- the tags in the vocabulary ------------------------------------------------------------------


def test_tags_are_added_once_and_never_split(multilingual: Path) -> None:
    tokenizers = load_model(multilingual).tokenizers
    tags = tokenizers.language_tags
    assert sorted(tags) == ["de", "fr"]
    again = tokenizers.with_language_tags(["fr", "de"])
    assert again.src_vocab_size == tokenizers.src_vocab_size and again.language_tags == tags
    more = tokenizers.with_language_tags(["de", "cs"])
    assert more.src_vocab_size == tokenizers.src_vocab_size + 1
    assert {k: v for k, v in more.language_tags.items() if k != "cs"} == tags  # ids kept

    plain = tokenizers.encode_source(["seven hundred"], tgt_lang="de")[0]
    own_tag = tokenizers.encode_source([">>fr<< seven hundred"])[0]
    assert own_tag == [tags["fr"], *plain[1:]] and plain[0] == tags["de"]
    assert tokenizers.source.encode(">>fr<<", add_special_tokens=False).ids == [tags["fr"]]
    assert tokenizers.language_tag_ids == tuple(sorted(tags.values()))  # joint: target ids too


def test_separate_vocabularies_forbid_no_ordinary_target_token() -> None:
    """With separate vocabularies the tags are source tokens only: the ids the searches exclude
    come from the target vocabulary, so no ordinary target subword is lost."""
    english = (NUMBERS / "train.en").read_text(encoding="utf-8").splitlines()
    german = (NUMBERS / "train.de").read_text(encoding="utf-8").splitlines()
    config = TokenizerConfig(vocab_size=300, joint=False)
    tokenizers = train_tokenizers(english, german, config).with_language_tags(["de", "fr"])
    assert tokenizers.language_tags and tokenizers.language_tag_ids == ()


# --- the searches never emit a tag ---------------------------------------------------------------


def test_the_decoder_never_emits_a_tag_even_when_biased_to(tmp_path: Path) -> None:
    path = tiny_multilingual_checkpoint(tmp_path / "biased.pt", biased_to_tag="fr")
    loaded = load_model(path)
    tags = set(loaded.tokenizers.language_tag_ids)
    source = loaded.tokenizers.encode_source(["seven"], tgt_lang="de")
    with torch.no_grad():  # the reference: unconstrained, the model's first choice is the tag
        logits = loaded.model(torch.tensor(source), torch.tensor([[2]]))  # (1, 1, V)
    assert logits[0, -1].argmax().item() == loaded.tokenizers.language_tags["fr"]

    modes = {
        "greedy": dict(beam_size=1),
        "beam": dict(beam_size=3, nbest=3),
        "sampling": dict(beam_size=1, sample=True, nbest=3, seed=1),
    }
    for mode, options in modes.items():
        translator = Translator.with_options(loaded, torch.device("cpu"), **options)
        with torch.inference_mode():
            results = translator.translate(["seven", "two hundred"], tgt_lang="de")
        for translations in results:
            for translation in translations:
                assert translation.tokens, mode  # it produced something, and not a tag
                assert not tags & set(translation.tokens), mode


# --- translate.py --tgt-lang ---------------------------------------------------------------------


def test_tgt_lang_reaches_the_model_in_every_mode(
    multilingual: Path,
    tmp_path: Path,
    sources_seen: list[list[int]],
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tags = load_model(multilingual).tokenizers.language_tags
    model = str(multilingual)
    assert translate.main(["-c", model, "--tgt-lang", "fr", "--beam", "1", "seven", "nine"]) == 0
    by_flag = capsys.readouterr().out
    assert translate.main(["-c", model, "--beam", "1", ">>fr<< seven", ">>fr<< nine"]) == 0
    assert capsys.readouterr().out == by_flag  # the flag and the user's own tag are one thing
    assert all(ids[0] == tags["fr"] for ids in sources_seen) and len(sources_seen) == 4

    given = tmp_path / "in.en"
    given.write_text("seven\n\n>>de<< nine\n", encoding="utf-8")  # a line keeps its own tag
    prefixes = tmp_path / "prefixes"
    prefixes.write_text("\n\n\n", encoding="utf-8")
    runs = {
        "file + n-best": ["-i", str(given), "--beam", "3", "--nbest", "2"],
        "sampling": ["-i", str(given), "--sample", "--nbest", "2", "--seed", "3"],
        "ensemble": ["-i", str(given), "--beam", "2"],
        "prefixes + attention": ["-i", str(given), "--prefix-file", str(prefixes)]
        + ["--attention", str(tmp_path / "pictures")],
    }
    for name, options in runs.items():
        sources_seen.clear()
        checkpoints = [model, model] if name == "ensemble" else [model]
        assert translate.main(["-c", *checkpoints, "--tgt-lang", "fr", *options]) == 0, name
        lines = capsys.readouterr().out.splitlines()
        nbest = "--nbest" in options  # 2 lines each, 1 for the empty line
        assert len(lines) == (5 if nbest else 3), name
        firsts = [ids[0] for ids in sources_seen if ids]
        assert firsts == [tags["fr"], tags["de"]], name
    assert sorted(p.name for p in (tmp_path / "pictures").iterdir()) == ["00001.png", "00003.png"]

    sources_seen.clear()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"seven\n>>de<< nine\n")))
    assert translate.main(["-c", model, "--tgt-lang", "fr", "--beam", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert [ids[0] for ids in sources_seen] == [tags["fr"], tags["de"]]


def test_a_line_without_a_tag_needs_tgt_lang(
    multilingual: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Removing the tag from an input makes --tgt-lang required: one line, exit 2, naming the
    input's line (stdin comes in chunks; the number counts from the start of the input)."""
    model = str(multilingual)
    assert translate.main(["-c", model, ">>de<< seven"]) == 0
    capsys.readouterr()
    assert translate.main(["-c", model, "seven"]) == 2
    error = the_error_line(capsys.readouterr().err)
    assert "line 1" in error and "(de, fr)" in error and "--tgt-lang" in error

    monkeypatch.setattr(translate, "STDIN_CHUNK_LINES", 2)
    stdin = b">>de<< seven\n>>fr<< one\n>>de<< two\nnine\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    assert translate.main(["-c", model, "--beam", "1"]) == 2
    captured = capsys.readouterr()
    assert "line 4:" in the_error_line(captured.err)
    assert len(captured.out.splitlines()) == 2  # the first chunk, translated before it


def test_unknown_languages_list_the_known_ones(
    multilingual: Path, bilingual: Path, capsys: pytest.CaptureFixture
) -> None:
    assert translate.main(["-c", str(multilingual), "--tgt-lang", "cs", "seven"]) == 2
    captured = capsys.readouterr()
    assert "'cs'" in the_error_line(captured.err) and "it knows de, fr" in captured.err
    assert captured.out == ""
    assert translate.main(["-c", str(multilingual), ">>cs<< seven"]) == 2
    assert "it knows de, fr" in the_error_line(capsys.readouterr().err)

    # A bilingual model: its own language is no choice at all, any other one is an error.
    assert translate.main(["-c", str(bilingual), "--tgt-lang", "de", "seven"]) == 0
    with_flag = capsys.readouterr().out
    assert translate.main(["-c", str(bilingual), "seven"]) == 0
    assert capsys.readouterr().out == with_flag
    assert translate.main(["-c", str(bilingual), "--tgt-lang", "fr", "seven"]) == 2
    error = the_error_line(capsys.readouterr().err)
    assert "only into de (en -> de)" in error and "'fr'" in error


def test_an_ensemble_of_different_languages_is_refused(
    multilingual: Path, bilingual: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoints = ["-c", str(multilingual), str(bilingual)]
    assert translate.main([*checkpoints, "--tgt-lang", "de", "seven"]) == 2
    assert "tokenizers" in the_error_line(capsys.readouterr().err)


def test_the_translator_describes_its_languages(multilingual: Path, bilingual: Path) -> None:
    cpu = torch.device("cpu")
    multi = Translator.with_options(load_model(multilingual), cpu)
    assert (multi.languages, multi.target_languages, multi.multilingual) == (
        "en -> de, fr",
        ["de", "fr"],
        True,
    )
    assert multi.check_target_language("fr") == "fr"
    with pytest.raises(LanguageError, match="it knows de, fr"):
        multi.check_target_language("cs")
    single = Translator.with_options(load_model(bilingual), cpu)
    assert (single.languages, single.target_languages, single.multilingual) == (
        "en -> de",
        ["de"],
        False,
    )
    assert single.check_target_language("de") is None


def test_languages_come_from_the_tags_else_from_the_directions(bilingual: Path) -> None:
    """An imported OPUS-MT model has tags but no data.pairs; a many-to-one run has pairs but no
    tags: both are described by what they really translate into."""
    tokenizers = load_model(bilingual).tokenizers
    many_to_one = Config(data=DataConfig(src_lang="de", tgt_lang="en", pairs=["de-en", "fr-en"]))
    assert target_languages(many_to_one, tokenizers) == ["en"]
    assert describe_languages(many_to_one, tokenizers) == "de -> en; fr -> en"
    imported = Config(data=DataConfig(src_lang="en", tgt_lang="tgt"))
    tagged = tokenizers.with_language_tags(["fra", "deu"])
    assert target_languages(imported, tagged) == ["deu", "fra"]
    assert describe_languages(imported, tagged) == "en -> deu, fra"
