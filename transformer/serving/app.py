"""The HTTP app behind `serve.py`: a JSON API and a web page over one loaded checkpoint.

    POST /translate  {"text": "A dog runs." | ["...", "..."], "beam": 5, "nbest": 1,
                      "length_penalty": 1.0, "tgt_lang": "fr"}  ->  {"translations": ..., "model": ...}
    GET  /health     ready or not
    GET  /info       the model (languages, sizes, parameters), limits and batching counters
    GET  /           the web page;  GET /docs  the OpenAPI page

A multilingual model translates each request into its "tgt_lang" (or, sentence by sentence, into
the language of a leading >>xx<< tag). Requests for different languages share batches: their
sentences reach the batcher with the tag written in front, as a user could have written it.

Built on FastAPI (validation, OpenAPI) and run by uvicorn. Requests are checked here, on the event
loop; the sentences of concurrent requests are decoded together by `batcher.DynamicBatcher`, in a
worker thread, through the same `Translator` that translate.py uses. Every bad request gets a 4xx
JSON body {"error": "..."} that names the problem (unknown paths, wrong methods and oversized bodies
too: body_limit.py refuses those before reading them), and the server goes on serving.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from transformer.checkpoint import LoadedModel
from transformer.inference.translator import Translation, Translator, choose_beam, tag_sentences
from transformer.serving.batcher import BatcherStopped, DynamicBatcher, RequestOptions
from transformer.serving.body_limit import BodyLimit
from transformer.serving.page import render_page
from transformer.tokenization.tokenizer import LanguageError

logger = logging.getLogger(__name__)

EXAMPLE = '{"text": "A dog runs."}'
MAX_LENGTH_PENALTY = 5.0  # GNMT alpha above this only makes outputs run to the length limit


@dataclass
class ServeSettings:
    """The server's limits and batching knobs (serve.py's options)."""

    name: str = "model"  # shown on the page and returned with every translation
    max_sentences: int = 64  # sentences per request
    max_chars: int = 10_000  # characters per request, all sentences together
    max_beam: int = 10  # largest beam a request may ask for
    max_batch_tokens: int = 4096  # source tokens x beam gathered into one batched decode
    max_wait_ms: float = 10.0  # how long the oldest request waits for others to join its batch
    max_body_bytes: int = 1_000_000  # larger request bodies are refused (413) before being read


class TranslateRequest(BaseModel):
    """The body of POST /translate."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr | list[StrictStr] = Field(
        description="a sentence, or a list of sentences translated in the same order",
        examples=["A man is riding a bike."],
    )
    beam: StrictInt | None = Field(None, description="beam size (1 = greedy); default: server's")
    nbest: StrictInt | None = Field(None, description="translations per sentence (<= beam)")
    length_penalty: StrictFloat | StrictInt | None = Field(
        None, description=f"GNMT alpha for beam search, 0 to {MAX_LENGTH_PENALTY}"
    )
    tgt_lang: StrictStr | None = Field(
        None,
        description="the language to translate into (multilingual models: one of GET /info's "
        "target_languages; a sentence starting with its own >>xx<< tag keeps it)",
        examples=["fr"],
    )


class TranslateResponse(BaseModel):
    """A string for a string, a list in the same order for a list; with nbest > 1 each sentence
    gives a list of translations, best first, and `scores` holds their model scores."""

    translations: str | list[str] | list[list[str]]
    scores: list[float] | list[list[float]] | None = None
    model: str


class BadRequest(Exception):
    """A request the server refuses: answered with `status` and {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(loaded: LoadedModel, translator: Translator, settings: ServeSettings) -> FastAPI:
    """The app for one model. `loaded` describes it (config, step); `translator` decodes with it.
    The batcher's counters are at app.state.batcher.stats."""
    batcher: DynamicBatcher[list[Translation]] = DynamicBatcher(
        lambda sentences, options: _decode(translator, sentences, options),
        settings.max_batch_tokens,
        settings.max_wait_ms,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="Transformer translation",
        summary=f"{settings.name}: {translator.languages}",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes)
    app.add_exception_handler(BadRequest, _bad_request)
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    page = _page(loaded, translator, settings)

    @app.post("/translate", response_model=TranslateResponse, response_model_exclude_none=True)
    async def translate(body: TranslateRequest) -> dict[str, Any] | JSONResponse:
        """Translate a sentence or a list of sentences (decoded together with concurrent requests)."""
        sentences = [body.text] if isinstance(body.text, str) else body.text
        options = _options(body, translator, settings)
        language = _target_language(body, translator)
        token_counts = _check_sentences(sentences, language, translator, settings)
        tagged = tag_sentences(sentences, language)  # so that any languages may share a batch
        try:
            results = await batcher.translate(tagged, token_counts, options)
        except BatcherStopped as error:
            return JSONResponse(status_code=503, content={"error": str(error)})
        except Exception as error:  # decoding failed: this request gets a 500, the server goes on
            logger.error("decoding failed", exc_info=error)
            return JSONResponse(
                status_code=500, content={"error": f"decoding failed: {type(error).__name__}"}
            )
        return _response(body.text, results, options.nbest, settings.name)

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 {"status": "ready"} while the decoding worker runs, else 503."""
        ready = batcher.running
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"status": "ready" if ready else "not ready", "model": settings.name},
        )

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """The model, its languages and size, the decoding defaults, limits and batch counters."""
        return _info(loaded, translator, settings, batcher)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        """The web page: a text box, the language pair, a Translate button and the result."""
        return page

    return app


def _page(loaded: LoadedModel, translator: Translator, settings: ServeSettings) -> str:
    """The web page, rendered once: a language selector only for a multilingual model."""
    return render_page(
        settings.name,
        translator.languages,
        "Text" if translator.multilingual else loaded.config.data.src_lang,
        translator.target_languages,
        translator.decode_config.beam_size,
        settings.max_beam,
        choose_language=translator.multilingual,
    )


def _decode(
    translator: Translator, sentences: list[str], options: RequestOptions
) -> list[list[Translation]]:
    """One batched decode (runs in the batcher's worker thread)."""
    config = dataclasses.replace(
        translator.decode_config,
        beam_size=options.beam_size,
        nbest=options.nbest,
        length_penalty=options.length_penalty,
    )
    with torch.inference_mode():  # grad mode is per thread: set it in the thread that decodes
        return translator.translate(sentences, decode_config=config)


def _options(
    body: TranslateRequest, translator: Translator, settings: ServeSettings
) -> RequestOptions:
    """The request's decoding options, defaults filled in (as translate.py does), range-checked."""
    nbest = 1 if body.nbest is None else body.nbest
    beam = choose_beam(body.beam, nbest, translator.decode_config.beam_size)
    largest_beam = min(settings.max_beam, translator.model.config.tgt_vocab_size)
    if not 1 <= beam <= largest_beam:
        raise BadRequest(422, f"beam must be between 1 and {largest_beam}, not {beam}")
    if not 1 <= nbest <= beam:
        raise BadRequest(422, f"nbest must be between 1 and the beam size ({beam}), not {nbest}")
    alpha = (
        translator.decode_config.length_penalty
        if body.length_penalty is None
        else body.length_penalty
    )
    if not (math.isfinite(alpha) and 0.0 <= alpha <= MAX_LENGTH_PENALTY):
        raise BadRequest(
            422, f"length_penalty must be between 0 and {MAX_LENGTH_PENALTY}, not {alpha}"
        )
    return RequestOptions(beam_size=beam, nbest=nbest, length_penalty=float(alpha))


def _target_language(body: TranslateRequest, translator: Translator) -> str | None:
    """The request's tgt_lang, checked: a language the model does not know is a 422 that lists
    those it does."""
    try:
        return translator.check_target_language(body.tgt_lang)
    except LanguageError as error:
        raise BadRequest(422, str(error)) from None


def _check_sentences(
    sentences: list[str], language: str | None, translator: Translator, settings: ServeSettings
) -> list[int]:
    """Refuse requests over the limits, or without a target language where the model needs one;
    return each sentence's length in source tokens (its tag included)."""
    if len(sentences) > settings.max_sentences:
        raise BadRequest(
            413,
            f"too many sentences: {len(sentences)} in one request, at most "
            f"{settings.max_sentences}; split the list over several requests",
        )
    characters = sum(len(sentence) for sentence in sentences)
    if characters > settings.max_chars:
        raise BadRequest(
            413,
            f"too much text: {characters} characters in one request, at most "
            f"{settings.max_chars}; split it over several requests",
        )
    try:
        encoded = translator.tokenizers.encode_source(sentences, language)
    except LanguageError as error:  # no language for a multilingual model, or an unknown tag
        raise BadRequest(422, error.numbered(first=0, noun="sentence")) from None
    token_counts = [len(ids) for ids in encoded]
    for index, count in enumerate(token_counts):
        if count > translator.max_positions:
            raise BadRequest(
                422,
                f"sentence {index} is {count} subword tokens long; this model reads at most "
                f"{translator.max_positions}: split it into shorter sentences",
            )
    return token_counts


def _response(
    text: str | list[str], results: list[list[Translation]], nbest: int, name: str
) -> dict[str, Any]:
    if nbest == 1:
        translations: Any = [nbest_list[0].text for nbest_list in results]
        scores = None
    else:
        translations = [[t.text for t in nbest_list] for nbest_list in results]
        scores = [[t.score for t in nbest_list] for nbest_list in results]
    if isinstance(text, str):
        translations = translations[0]
        scores = scores[0] if scores is not None else None
    return {"translations": translations, "scores": scores, "model": name}


def _info(
    loaded: LoadedModel, translator: Translator, settings: ServeSettings, batcher: DynamicBatcher
) -> dict[str, Any]:
    config = loaded.config
    return {
        "model": settings.name,
        "languages": translator.languages,
        "source_language": config.data.src_lang,
        "target_language": None if translator.multilingual else config.data.tgt_lang,
        "target_languages": translator.target_languages,
        "multilingual": translator.multilingual,
        "step": loaded.step,
        "parameters": sum(p.numel() for p in loaded.model.parameters()),  # the checkpoint's
        "architecture": dataclasses.asdict(config.model),
        "decoding": {
            "beam": translator.decode_config.beam_size,
            "length_penalty": translator.decode_config.length_penalty,
            "max_len_a": translator.decode_config.max_len_a,
            "max_len_b": translator.decode_config.max_len_b,
        },
        "device": str(translator.device),
        "limits": {
            key: value for key, value in dataclasses.asdict(settings).items() if key != "name"
        },
        "batching": dataclasses.asdict(batcher.stats),
    }


# --- error answers ------------------------------------------------------------------------------


async def _bad_request(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, BadRequest)
    return JSONResponse(status_code=error.status, content={"error": error.message})


ROUTES = "POST /translate, GET /health, GET /info, GET / (the page), GET /docs"


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    """The errors FastAPI raises itself (unknown path, wrong method, a body it cannot decode) in
    this API's one shape, {"error": "..."}, instead of FastAPI's {"detail": ...}."""
    assert isinstance(error, StarletteHTTPException)
    where = f"{request.method} {request.url.path}"
    if error.status_code == 404:
        message = f"there is no {request.url.path}; the API is {ROUTES}"
    elif error.status_code == 405:
        message = f"{where} is not allowed; the API is {ROUTES}"
    elif error.status_code == 400:
        message = "the request body could not be read: send JSON encoded as UTF-8"
    else:
        message = str(error.detail)
    return JSONResponse(
        status_code=error.status_code, content={"error": message}, headers=error.headers
    )


async def _invalid_body(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's validation errors as one sentence: 415 for a body not sent as JSON, 400 for one
    that is empty or not JSON, else 422."""
    assert isinstance(error, RequestValidationError)
    errors = error.errors()
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    if "json" not in request.headers.get("content-type", ""):
        status, message = (
            415,
            'send the body as JSON, with the header "Content-Type: application/json"',
        )
    elif first["type"] == "json_invalid":
        status, message = 400, "the request body is not valid JSON"
    elif first["type"] == "missing" and list(first["loc"]) == ["body"]:
        status, message = 400, f"the request body is empty; send a JSON object such as {EXAMPLE}"
    else:
        status, message = 422, _describe(first)
    return JSONResponse(status_code=status, content={"error": message})


def _describe(error: dict[str, Any]) -> str:
    """A pydantic error in the words of this API."""
    location = [str(part) for part in error["loc"] if part != "body"]
    kind = error["type"]
    if not location:
        return f"the request body must be a JSON object such as {EXAMPLE}"
    field = location[0]
    if kind == "missing":
        return f'"{field}" is missing' + (
            ": give a string or a list of strings" if field == "text" else ""
        )
    if kind == "extra_forbidden":
        known = ", ".join(TranslateRequest.model_fields)
        return f'unknown field "{field}"; the known fields are {known}'
    if field == "text":
        return '"text" must be a string or a list of strings'
    return f'"{field}": {error["msg"]}'
