"""The server and a multilingual model: "tgt_lang" per request (checked, with a 4xx that lists the
model's languages), requests for different languages decoded in one batch, /info and the page's
language selector."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REASON = "serving needs the [serve] extra: pip install -e '.[serve]'"
pytest.importorskip("fastapi", reason=REASON)
pytest.importorskip("httpx", reason=REASON)

import torch  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import tiny_multilingual_checkpoint  # noqa: E402

from transformer.checkpoint import LoadedModel, load_model  # noqa: E402
from transformer.inference.translator import Translator  # noqa: E402
from transformer.serving.app import ServeSettings, create_app  # noqa: E402

SENTENCES = ["seven", "two hundred and one", ""]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(tiny_multilingual_checkpoint(tmp_path_factory.mktemp("m") / "multi.pt"))


@pytest.fixture(scope="module")
def translator(loaded: LoadedModel) -> Translator:
    return Translator.with_options(loaded, torch.device("cpu"), beam_size=1)


@pytest.fixture(scope="module")
def client(loaded: LoadedModel, translator: Translator) -> Iterator[TestClient]:
    settings = ServeSettings(name="multi", max_wait_ms=0)
    with TestClient(create_app(loaded, translator, settings)) as test_client:
        yield test_client


def expected(translator: Translator, sentences: list[str], tgt_lang: str | None) -> list[str]:
    with torch.inference_mode():
        return [t[0].text for t in translator.translate(sentences, tgt_lang=tgt_lang)]


def test_tgt_lang_per_request_translates_as_translate_py_does(
    client: TestClient, translator: Translator
) -> None:
    for language in ("de", "fr"):
        answer = client.post("/translate", json={"text": SENTENCES, "tgt_lang": language})
        assert answer.status_code == 200, answer.json()
        assert answer.json()["translations"] == expected(translator, SENTENCES, language)
    # A sentence that starts with its own tag keeps it, with or without tgt_lang.
    mixed = [">>de<< seven", "seven"]
    answer = client.post("/translate", json={"text": mixed, "tgt_lang": "fr"})
    assert answer.json()["translations"] == expected(translator, ["seven"], "de") + expected(
        translator, ["seven"], "fr"
    )
    own = client.post("/translate", json={"text": ">>fr<< seven"}).json()["translations"]
    assert own == expected(translator, ["seven"], "fr")[0]


def test_requests_for_different_languages_share_a_batch(
    loaded: LoadedModel, translator: Translator
) -> None:
    """max_wait_ms long enough that two requests sent together share a batch on a busy CPU, once
    the batcher expects two (as after a batch of two; a first request alone goes at once)."""
    app = create_app(loaded, translator, ServeSettings(max_wait_ms=500))
    requests = [{"text": "seven", "tgt_lang": "de"}, {"text": "seven", "tgt_lang": "fr"}]
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        app.state.batcher._expected = 2
        answers = list(pool.map(lambda body: client.post("/translate", json=body), requests))
    assert [a.json()["translations"] for a in answers] == [
        expected(translator, ["seven"], "de")[0],
        expected(translator, ["seven"], "fr")[0],
    ]
    stats = app.state.batcher.stats
    assert (stats.requests, stats.batches, stats.largest_batch) == (2, 1, 2)


def test_a_missing_or_unknown_language_is_a_422_listing_the_known_ones(
    client: TestClient,
) -> None:
    missing = client.post("/translate", json={"text": [">>de<< one", "two"]})
    assert missing.status_code == 422
    message = missing.json()["error"]
    assert message.startswith("sentence 1:") and "(de, fr)" in message and "tgt_lang" in message
    for body in ({"text": "one", "tgt_lang": "cs"}, {"text": ">>cs<< one"}):
        unknown = client.post("/translate", json=body)
        assert unknown.status_code == 422 and "it knows de, fr" in unknown.json()["error"]
    wrong_type = client.post("/translate", json={"text": "one", "tgt_lang": 3})
    assert wrong_type.status_code == 422 and '"tgt_lang"' in wrong_type.json()["error"]
    assert client.post("/translate", json={"text": "one", "tgt_lang": "de"}).status_code == 200


def test_info_and_page_offer_the_target_languages(client: TestClient) -> None:
    info = client.get("/info").json()
    assert info["target_languages"] == ["de", "fr"] and info["multilingual"] is True
    assert info["languages"] == "en -> de, fr" and info["target_language"] is None
    page = client.get("/").text
    assert "en → de, fr" in page and '<select id="tgt_lang">' in page
    assert '<option value="de">de</option><option value="fr">fr</option>' in page
    assert "request.tgt_lang = targetLanguage.value" in page


def test_a_bilingual_model_takes_its_own_language_only(tmp_path: Path) -> None:
    loaded = load_model(tiny_multilingual_checkpoint(tmp_path / "bi.pt", languages=()))
    translator = Translator.with_options(loaded, torch.device("cpu"), beam_size=1)
    with TestClient(create_app(loaded, translator, ServeSettings(max_wait_ms=0))) as client:
        plain = client.post("/translate", json={"text": "seven"}).json()["translations"]
        same = client.post("/translate", json={"text": "seven", "tgt_lang": "de"})
        assert same.status_code == 200 and same.json()["translations"] == plain
        other = client.post("/translate", json={"text": "seven", "tgt_lang": "fr"})
        assert other.status_code == 422 and "only into de" in other.json()["error"]
        info = client.get("/info").json()
        assert info["target_languages"] == ["de"] and info["target_language"] == "de"
        page = client.get("/").text
        assert "<select" not in page and "en → de" in page
