"""serve.py and its app on a model trained here: the API through FastAPI's test client, and the
batching of concurrent requests over a real socket (uvicorn in a thread, on a free 127.0.0.1 port)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REASON = "serving needs the [serve] extra: pip install -e '.[serve]'"
pytest.importorskip("fastapi", reason=REASON)
pytest.importorskip("uvicorn", reason=REASON)
pytest.importorskip("httpx", reason=REASON)

import httpx  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from test_train import run_train  # noqa: E402  # the suite's tiny fast training run
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear  # noqa: E402

import serve  # noqa: E402
import translate  # noqa: E402
from transformer.checkpoint import LoadedModel, load_model  # noqa: E402
from transformer.inference.translator import Translator  # noqa: E402
from transformer.serving.app import ServeSettings, create_app  # noqa: E402

NUMBERS = Path(__file__).parent.parent / "configs" / "data" / "numbers"
SENTENCES = (NUMBERS / "test.en").read_text(encoding="utf-8").splitlines()[:16]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained long enough (150 steps, seconds) that outputs differ from sentence to sentence and
    end before the length limit."""
    run_dir = tmp_path_factory.mktemp("serve_run")
    assert run_train(run_dir, "train.max_steps=150", "train.validate_every=150") == 0
    return run_dir / "checkpoints" / "best.pt"


@pytest.fixture(scope="module")
def loaded(checkpoint: Path) -> LoadedModel:
    return load_model(checkpoint)


@pytest.fixture(scope="module")
def translator(loaded: LoadedModel) -> Translator:
    return Translator.with_options(loaded, torch.device("cpu"))


def translations_of(translator: Translator, sentences: list[str]) -> list:
    with torch.inference_mode():
        return translator.translate(sentences)


@pytest.fixture(scope="module")
def client(loaded: LoadedModel, translator: Translator) -> Iterator[TestClient]:
    settings = ServeSettings(name="numbers", max_sentences=8, max_chars=400, max_beam=4)
    with TestClient(create_app(loaded, translator, settings)) as test_client:
        yield test_client


def test_single_and_list_requests_keep_order_and_empty_strings(
    client: TestClient, translator: Translator
) -> None:
    expected = [t[0].text for t in translations_of(translator, SENTENCES[:5])]
    single = client.post("/translate", json={"text": SENTENCES[0]})
    assert single.status_code == 200
    assert single.json() == {"translations": expected[0], "model": "numbers"}

    texts = [SENTENCES[3], "", SENTENCES[1], "   ", SENTENCES[4], SENTENCES[2]]
    listed = client.post("/translate", json={"text": texts})
    assert listed.status_code == 200
    assert listed.json()["translations"] == [
        expected[3],
        "",
        expected[1],
        "",
        expected[4],
        expected[2],
    ]
    assert client.post("/translate", json={"text": ""}).json()["translations"] == ""
    assert client.post("/translate", json={"text": []}).json()["translations"] == []


def test_nbest_gives_lists_best_first(client: TestClient) -> None:
    body = {"text": [SENTENCES[0], SENTENCES[1]], "beam": 4, "nbest": 3, "length_penalty": 1}
    answer = client.post("/translate", json=body)
    assert answer.status_code == 200
    translations, scores = answer.json()["translations"], answer.json()["scores"]
    assert len(translations) == 2 and all(len(n) == 3 for n in translations)
    assert all(row == sorted(row, reverse=True) for row in scores)
    single = client.post("/translate", json={"text": SENTENCES[0], "nbest": 2}).json()
    assert len(single["translations"]) == 2 and len(single["scores"]) == 2


TOO_LONG_SENTENCE = " ".join(["nine"] * 200)  # more subword tokens than the model's 128 positions


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "the request body is empty"),
        (("text/plain", b'{"text": "one"}'), 415, "Content-Type: application/json"),
        ([1, 2], 422, "must be a JSON object"),
        ({}, 422, '"text" is missing'),
        ({"text": 5}, 422, '"text" must be a string or a list of strings'),
        ({"text": ["one", 2]}, 422, '"text" must be a string or a list of strings'),
        ({"text": "one", "beams": 2}, 422, 'unknown field "beams"'),
        ({"text": ["one"] * 9}, 413, "too many sentences: 9 in one request, at most 8"),
        ({"text": "one " * 101}, 413, "too much text: 404 characters"),
        ({"text": TOO_LONG_SENTENCE[:399]}, 422, "sentence 0 is"),
        ({"text": "one", "beam": 0}, 422, "beam must be between 1 and 4, not 0"),
        ({"text": "one", "beam": 5}, 422, "beam must be between 1 and 4, not 5"),
        ({"text": "one", "beam": "2"}, 422, '"beam"'),
        ({"text": "one", "beam": 2, "nbest": 3}, 422, "nbest must be between 1 and the beam"),
        ({"text": "one", "nbest": 0}, 422, "nbest must be between 1"),
        ({"text": "one", "length_penalty": -1}, 422, "length_penalty must be between 0 and"),
        ({"text": "one", "length_penalty": "high"}, 422, '"length_penalty"'),
    ],
)
def test_bad_requests_get_a_4xx_json_error_and_the_server_goes_on(
    client: TestClient, body: object, status: int, message: str
) -> None:
    if isinstance(body, bytes):
        body = ("application/json", body)
    if isinstance(body, tuple):
        content_type, raw = body
        answer = client.post("/translate", content=raw, headers={"Content-Type": content_type})
    else:
        answer = client.post("/translate", json=body)
    assert answer.status_code == status
    assert message in answer.json()["error"]
    good = client.post("/translate", json={"text": "twenty-one"})
    assert good.status_code == 200 and isinstance(good.json()["translations"], str)


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "message"),
    [
        ("GET", "/nowhere", None, 404, "there is no /nowhere; the API is POST /translate"),
        ("GET", "/translate", None, 405, "GET /translate is not allowed; the API is"),
        ("DELETE", "/info", None, 405, "DELETE /info is not allowed"),
        ("POST", "/translate", b'{"text": "caf\xe9"}', 400, "send JSON encoded as UTF-8"),
    ],
)
def test_every_error_has_the_one_json_shape(
    client: TestClient, method: str, path: str, content: bytes | None, status: int, message: str
) -> None:
    """Errors that FastAPI raises by itself answer as {"error": ...} too, never {"detail": ...}."""
    headers = {"Content-Type": "application/json"}
    answer = client.request(method, path, content=content, headers=headers)
    assert answer.status_code == status
    assert list(answer.json()) == ["error"] and message in answer.json()["error"]


def test_a_chunked_body_over_the_limit_is_refused(
    loaded: LoadedModel, translator: Translator
) -> None:
    """Without a Content-Length the body is read only up to the limit, then refused with 413; a
    chunked body within the limit is translated as usual."""
    settings = ServeSettings(max_body_bytes=2_000)
    chunks_sent = []

    def body(size: int) -> Iterator[bytes]:
        yield b'{"text": "' + b"one " * (size // 4) + b'"}'
        chunks_sent.append(1)

    with TestClient(create_app(loaded, translator, settings)) as small:
        answer = small.post(
            "/translate", content=body(4_000), headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 413
        assert "the request body is too large (more than 2000 bytes" in answer.json()["error"]
        fine = small.post(
            "/translate", content=body(40), headers={"Content-Type": "application/json"}
        )
        assert fine.status_code == 200 and fine.json()["translations"]


def test_a_decoding_exception_is_a_500_for_that_request_only(
    client: TestClient, translator: Translator, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_translate = translator.translate

    def translate_or_fail(sentences: list[str], decode_config: object = None) -> list:
        if "explode" in sentences:
            raise RuntimeError("a fault inside decoding")
        return real_translate(sentences, decode_config=decode_config)

    monkeypatch.setattr(translator, "translate", translate_or_fail)
    failed = client.post("/translate", json={"text": "explode"})
    assert failed.status_code == 500
    assert failed.json() == {"error": "decoding failed: RuntimeError"}
    assert client.post("/translate", json={"text": "seven"}).status_code == 200


def test_health_info_and_page(
    client: TestClient, loaded: LoadedModel, translator: Translator
) -> None:
    assert client.get("/health").json() == {"status": "ready", "model": "numbers"}
    info = client.get("/info").json()
    assert info["model"] == "numbers" and info["step"] == loaded.step
    assert (info["source_language"], info["target_language"]) == ("en", "de")
    assert info["parameters"] == sum(p.numel() for p in loaded.model.parameters())
    assert info["architecture"]["d_model"] == loaded.config.model.d_model
    assert info["limits"]["max_sentences"] == 8
    assert set(info["batching"]) == {"requests", "sentences", "batches", "largest_batch"}
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for part in (
        "<form",
        "<textarea",
        "Translate</button>",
        "en → de",
        "numbers",
        'fetch("translate"',
    ):
        assert part in page.text
    assert "/translate" in client.get("/openapi.json").json()["paths"]


def test_health_is_503_before_the_worker_starts(
    loaded: LoadedModel, translator: Translator
) -> None:
    not_started = TestClient(create_app(loaded, translator, ServeSettings()))  # no lifespan
    answer = not_started.get("/health")
    assert answer.status_code == 503 and answer.json()["status"] == "not ready"
    refused = not_started.post("/translate", json={"text": "one"})
    assert refused.status_code == 503 and "not running" in refused.json()["error"]


# --- over a real socket -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def live_server(loaded: LoadedModel, translator: Translator) -> Iterator[str]:
    """uvicorn serving the app in a thread on 127.0.0.1; stopped (and joined) after the test."""
    app = create_app(loaded, translator, ServeSettings(max_wait_ms=50))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.config.port}"
    server.should_exit = True
    thread.join(timeout=20)
    assert not thread.is_alive()


def test_a_large_body_is_refused_before_it_is_sent(live_server: str) -> None:
    """A client announcing 50 MB gets 413 at once, from the header alone: the server answers
    while the client has sent only the headers and one byte (if it waited for the body, the
    read below would time out)."""
    host, port = live_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(
            b"POST /translate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n{"
        )
        answer = b""
        while b"}" not in answer:
            received = connection.recv(4096)
            if not received:
                break
            answer += received
    assert answer.startswith(b"HTTP/1.1 413")
    assert b'{"error": "the request body is too large (50000000 bytes; at most 1000000)' in answer


def test_concurrent_requests_are_batched_and_match_translate_py(
    live_server: str, checkpoint: Path, tmp_path: Path
) -> None:
    source, output = tmp_path / "in.en", tmp_path / "out.de"
    source.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    assert translate.main(["-c", str(checkpoint), "-i", str(source), "-o", str(output)]) == 0
    expected = output.read_text(encoding="utf-8").splitlines()

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live_server, timeout=30) as http:
            return await asyncio.gather(
                *(http.post("/translate", json={"text": s}) for s in SENTENCES)
            )

    with httpx.Client(base_url=live_server, timeout=30) as http:
        assert http.get("/health").json()["status"] == "ready"
        before = http.get("/info").json()["batching"]
        answers = asyncio.run(send_all())
        after = http.get("/info").json()["batching"]
    assert [a.status_code for a in answers] == [200] * 16
    assert [a.json()["translations"] for a in answers] == expected
    assert after["requests"] - before["requests"] == 16
    assert after["batches"] - before["batches"] < 16
    assert after["largest_batch"] > 1


# --- the command line ---------------------------------------------------------------------------


def test_cli_builds_the_app_on_localhost(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    assert serve.main(["-c", str(checkpoint), "--beam", "2", "--max-wait-ms", "3"]) == 0
    ((app, options),) = calls
    assert options["host"] == "127.0.0.1" and options["port"] == 8000
    assert app.state.batcher.max_wait == pytest.approx(0.003)
    with TestClient(app) as http:
        info = http.get("/info").json()
    assert info["decoding"]["beam"] == 2
    assert info["model"] == f"{checkpoint.parent.parent.name}/best.pt"
    assert "serving" in capsys.readouterr().err


def test_cli_serves_an_int8_model(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from transformer.inference import translator as translator_module

    calls, quantized = [], []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(app))
    real_quantize = translator_module.quantize_model

    def spy(model: torch.nn.Module, kind: str) -> torch.nn.Module:
        quantized.append(real_quantize(model, kind))
        return quantized[-1]

    monkeypatch.setattr(translator_module, "quantize_model", spy)
    assert serve.main(["-c", str(checkpoint), "--quantize", "int8"]) == 0
    feed_forward = quantized[0].encoder.layers[0].feed_forward.linear_in
    assert isinstance(feed_forward, DynamicQuantizedLinear)  # the server decodes with int8
    with TestClient(calls[0]) as http:
        answer = http.post("/translate", json={"text": ["twenty-one", ""]})
    assert answer.status_code == 200 and answer.json()["translations"][1] == ""
    assert answer.json()["translations"][0]  # the int8 model translates


def test_cli_errors_are_one_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert serve.main(["-c", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    for bad in (["--beam", "0"], ["--max-wait-ms", "-1"], ["--port", "70000"], ["--beam", "20"]):
        with pytest.raises(SystemExit) as exit_info:
            serve.main(["-c", "x.pt", *bad])
        assert exit_info.value.code == 2
