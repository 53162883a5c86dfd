"""Dynamic batching: gather the sentences of concurrent requests into one batched decode.

A server that decoded each request on its own would spend most of its time on small batches; one
that waited for a full batch would keep a lone caller waiting. The batcher does what Marian's and
the inference servers' schedulers do:

- Requests join a queue. A single worker takes the oldest waiting request and gathers the others
  that arrive until that request is `max_wait_ms` old (and the worker has been free for as long),
  or until the batch holds `max_batch_tokens` source tokens (times the beam size: every beam is a
  row of the decoder), or until as many requests wait as the last batch answered: the callers it
  answered are the ones likely to come back, so a lone caller never waits for company that is not
  there (one client: 25 -> 15 ms a sentence), and 32 callers start their next batch as soon as
  they are all back rather than when the clock runs out.
- Only requests with the same decoding options (beam, n-best, length penalty) share a batch.
- A request larger than the budget is decoded in budget-sized pieces, and after each piece it goes
  to the back of the line, so a long request delays short ones by at most one batch.
- The decode runs in one worker thread, off the event loop, so the server keeps accepting
  requests; each caller's future gets its own sentences' translations, in its own order.
- If a batched decode raises, each request of the batch is retried alone, so a request that makes
  decoding fail fails by itself.

The decoding itself is a callable `decode(sentences, options)` (in the server:
`Translator.translate`), so this file knows nothing about models.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Result = TypeVar("Result")  # what decoding gives for one sentence


class BatcherStopped(RuntimeError):
    """The batcher is not running (not started yet, or shutting down)."""


@dataclass(frozen=True)
class RequestOptions:
    """The per-request settings that change the search; requests share a batch only if equal."""

    beam_size: int
    nbest: int
    length_penalty: float


@dataclass
class _Request(Generic[Result]):
    """One caller's sentences, their cost in source tokens, and the future that answers it."""

    sentences: list[str]
    token_counts: list[int]
    options: RequestOptions
    future: asyncio.Future
    arrived: float  # event-loop time
    results: list[Result | None] = field(default_factory=list)
    next_sentence: int = 0  # sentences before this one are taken by a batch already

    def cost(self, index: int) -> int:
        """Decoder rows times source tokens of sentence `index` (at least 1, so that empty
        sentences count too)."""
        return max(1, self.token_counts[index]) * self.options.beam_size


@dataclass
class _Piece:
    """The part of a request that one batch decodes: sentences[start:stop]."""

    request: _Request
    start: int
    stop: int


@dataclass
class BatcherStats:
    """Counters that show batching at work (the server reports them under GET /info)."""

    requests: int = 0  # requests answered (with translations or an error)
    sentences: int = 0  # sentences decoded
    batches: int = 0  # batched decode calls
    largest_batch: int = 0  # most sentences in one batched decode


class DynamicBatcher(Generic[Result]):
    """Decodes concurrent requests together. Call `start()` inside the running event loop, then
    `await translate(...)` from any number of tasks; `stop()` ends the worker.

    The waiting requests form a queue in arrival order: a plain list plus an asyncio.Event that
    wakes the worker, rather than an asyncio.Queue, because the worker must look at every waiting
    request (to group equal options) and put a partly decoded one back at the end."""

    def __init__(
        self,
        decode: Callable[[list[str], RequestOptions], Sequence[Result]],
        max_batch_tokens: int,
        max_wait_ms: float,
    ) -> None:
        if max_batch_tokens < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_tokens must be >= 1 and max_wait_ms >= 0")
        self.decode = decode
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000.0
        self.stats = BatcherStats()
        self._waiting: list[_Request] = []  # arrival order; not yet fully taken by a batch
        self._in_flight: list[_Piece] = []  # the batch being decoded
        self._arrived = asyncio.Event()
        self._expected = 1  # requests the last batch answered: how many to gather at most
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def start(self) -> None:
        self._arrived = asyncio.Event()  # bound to the running loop
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """End the worker (after the decode in progress); callers still waiting get an error."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        for request in self._waiting + [piece.request for piece in self._in_flight]:
            self._fail(request, BatcherStopped("the server is shutting down"))
        self._waiting.clear()
        self._in_flight.clear()

    async def translate(
        self, sentences: list[str], token_counts: list[int], options: RequestOptions
    ) -> list[Result]:
        """The results for `sentences` (in their order), decoded together with whatever other
        requests arrive at about the same time. token_counts[i] is sentence i's length in source
        tokens (the budget is counted in them)."""
        if not self.running:
            raise BatcherStopped("the batcher is not running (call start() first)")
        if not sentences:
            return []
        loop = asyncio.get_running_loop()
        request: _Request[Result] = _Request(
            sentences, token_counts, options, loop.create_future(), loop.time()
        )
        request.results = [None] * len(sentences)
        self._waiting.append(request)
        self._arrived.set()
        return await request.future

    # --- the worker -------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        free_since = loop.time()
        while True:
            await self._gather(free_since)
            pieces = self._take_batch()
            self._expected = len(pieces)
            await self._decode(pieces)
            free_since = loop.time()
            # A request with sentences left goes to the back of the line, behind those that
            # arrived while its piece was decoding.
            for piece in pieces:
                request = piece.request
                if piece.stop < len(request.sentences) and not request.future.done():
                    self._waiting.append(request)

    async def _gather(self, free_since: float) -> None:
        """Wait for a request, then for more, until the budget of the oldest request's options is
        full, or as many requests with those options wait as the last batch answered, or
        max_wait has passed since that request arrived and since the worker became free
        (`free_since`). The second clock matters under load: the callers answered by the last
        batch send their next requests right away, and they join this batch instead of starting
        a half-empty one each time."""
        loop = asyncio.get_running_loop()
        while True:
            self._waiting = [r for r in self._waiting if not r.future.done()]  # callers gone
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            head = self._waiting[0]
            remaining = max(head.arrived, free_since) + self.max_wait - loop.time()
            if (
                remaining <= 0
                or self._tokens_waiting(head.options) >= self.max_batch_tokens
                or self._requests_waiting(head.options) >= self._expected
            ):
                return
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _requests_waiting(self, options: RequestOptions) -> int:
        return sum(request.options == options for request in self._waiting)

    def _tokens_waiting(self, options: RequestOptions) -> int:
        return sum(
            request.cost(i)
            for request in self._waiting
            if request.options == options
            for i in range(request.next_sentence, len(request.sentences))
        )

    def _take_batch(self) -> list[_Piece]:
        """Sentences for one decode, in arrival order: those of the oldest request's options, up
        to the token budget (a first sentence over the budget goes alone). The requests taken
        leave the line; `_run` puts those with sentences left back at its end."""
        options = self._waiting[0].options
        pieces, used = [], 0
        for request in self._waiting:
            if request.options != options:
                continue
            start = stop = request.next_sentence
            while stop < len(request.sentences) and (
                used + request.cost(stop) <= self.max_batch_tokens or used == 0
            ):
                used += request.cost(stop)
                stop += 1
            if stop > start:
                pieces.append(_Piece(request, start, stop))
                request.next_sentence = stop
            if stop < len(request.sentences):
                break  # the budget is full
        for piece in pieces:
            self._waiting.remove(piece.request)
        return pieces

    async def _decode(self, pieces: list[_Piece]) -> None:
        """Decode the pieces as one batch in the worker thread and hand out the results. If that
        fails, each request is decoded alone, so that only the one that fails gets the error."""
        sentences = [
            s for piece in pieces for s in piece.request.sentences[piece.start : piece.stop]
        ]
        options = pieces[0].request.options
        self._in_flight = pieces
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._decode_checked, sentences, options
            )
        except Exception as error:  # noqa: BLE001  # any decoding failure answers its callers
            self._in_flight = []
            if len(pieces) > 1:
                for piece in pieces:
                    await self._decode([piece])
            else:
                self._fail(pieces[0].request, error)
            return
        self._in_flight = []
        self.stats.batches += 1
        self.stats.sentences += len(sentences)
        self.stats.largest_batch = max(self.stats.largest_batch, len(sentences))
        offset = 0
        for piece in pieces:
            request, count = piece.request, piece.stop - piece.start
            request.results[piece.start : piece.stop] = results[offset : offset + count]
            offset += count
            if piece.stop == len(request.sentences) and not request.future.done():
                request.future.set_result(request.results)
                self.stats.requests += 1

    def _decode_checked(self, sentences: list[str], options: RequestOptions) -> Sequence[Result]:
        results = self.decode(sentences, options)
        if len(results) != len(sentences):
            raise RuntimeError(f"decoding gave {len(results)} results for {len(sentences)} inputs")
        return results

    def _fail(self, request: _Request, error: BaseException) -> None:
        if request in self._waiting:
            self._waiting.remove(request)
        if not request.future.done():
            request.future.set_exception(error)
            self.stats.requests += 1
