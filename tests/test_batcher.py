"""The dynamic batcher on its own, with a stand-in for decoding: who shares a batch, in what order,
and what a caller gets back. (tests/test_serve.py runs it inside the server with a real model.)"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from transformer.serving.batcher import DynamicBatcher, RequestOptions

GREEDY = RequestOptions(beam_size=1, nbest=1, length_penalty=0.0)
BEAM = RequestOptions(beam_size=4, nbest=1, length_penalty=0.6)


class RecordingDecoder:
    """Upper-cases sentences and remembers every batch it was given (and in which thread); takes
    `seconds` per batch, as a model would."""

    def __init__(
        self, fail_on: str | None = None, seconds: float = 0.0, hold: threading.Event | None = None
    ) -> None:
        """hold: the first batch is not finished before this event is set (a test decides what
        arrives meanwhile, whatever the machine's speed)."""
        self.seconds = seconds
        self.hold = hold
        self.batches: list[tuple[list[str], RequestOptions]] = []
        self.threads: set[int] = set()
        self.fail_on = fail_on

    def __call__(self, sentences: list[str], options: RequestOptions) -> list[str]:
        self.batches.append((list(sentences), options))
        self.threads.add(threading.get_ident())
        if self.hold is not None and len(self.batches) == 1:
            assert self.hold.wait(timeout=10), "the test never released the first batch"
        time.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in sentences:
            raise ValueError(f"cannot decode {self.fail_on!r}")
        return [sentence.upper() for sentence in sentences]


def run_with_batcher(decoder: RecordingDecoder, scenario, **settings: float):  # noqa: ANN001, ANN201
    """Run `scenario(batcher)` in a fresh event loop with a started batcher; return its result."""

    async def main():  # noqa: ANN202
        batcher = DynamicBatcher(
            decoder,
            max_batch_tokens=int(settings.get("max_batch_tokens", 100)),
            max_wait_ms=settings.get("max_wait_ms", 20.0),
        )
        batcher.start()
        try:
            return await asyncio.wait_for(scenario(batcher), timeout=10), batcher.stats
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_concurrent_requests_share_a_batch_and_get_their_own_answers() -> None:
    decoder = RecordingDecoder()
    requests = [[f"sentence {i}"] for i in range(10)] + [["a", "b", "c"], ["", "x"]]

    async def scenario(batcher: DynamicBatcher) -> list:
        return await asyncio.gather(*(batcher.translate(r, [2] * len(r), GREEDY) for r in requests))

    answers, stats = run_with_batcher(decoder, scenario)
    assert answers == [[s.upper() for s in r] for r in requests]
    assert len(decoder.batches) == 1 and stats.batches == 1
    assert stats.requests == 12 and stats.sentences == 15 and stats.largest_batch == 15
    assert threading.get_ident() not in decoder.threads  # decoded off the event loop's thread


def test_different_options_never_share_a_batch() -> None:
    decoder = RecordingDecoder()

    async def scenario(batcher: DynamicBatcher) -> list:
        return await asyncio.gather(
            batcher.translate(["one"], [1], GREEDY),
            batcher.translate(["two"], [1], BEAM),
            batcher.translate(["three"], [1], GREEDY),
        )

    answers, _ = run_with_batcher(decoder, scenario)
    assert answers == [["ONE"], ["TWO"], ["THREE"]]
    assert decoder.batches == [(["one", "three"], GREEDY), (["two"], BEAM)]


def test_a_long_request_is_split_and_short_ones_pass_it() -> None:
    decoder = RecordingDecoder(hold=threading.Event())
    long_request = [f"long {i}" for i in range(10)]  # 10 tokens each: 100 in all, budget 30

    async def scenario(batcher: DynamicBatcher) -> tuple[list, list, list[str]]:
        finished: list[str] = []

        async def send(name: str, sentences: list[str], tokens: int) -> list:
            answer = await batcher.translate(sentences, [tokens] * len(sentences), GREEDY)
            finished.append(name)
            return answer

        long_task = asyncio.create_task(send("long", long_request, 10))
        while not decoder.batches:  # until the long request's first piece is being decoded
            await asyncio.sleep(0.001)
        short_task = asyncio.create_task(send("short", ["short"], 1))
        await asyncio.sleep(0)  # the short request joins the line (translate() runs to its await)
        decoder.hold.set()  # only now does the first piece finish
        return await long_task, await short_task, finished

    (long_answer, short_answer, finished), stats = run_with_batcher(
        decoder, scenario, max_batch_tokens=30
    )
    assert long_answer == [s.upper() for s in long_request] and short_answer == ["SHORT"]
    assert finished == ["short", "long"]
    assert all(sum(10 if s != "short" else 1 for s in batch) <= 30 for batch, _ in decoder.batches)
    # The short request arrived while the long one's first piece was decoding; it went next.
    assert "short" in decoder.batches[1][0]
    assert stats.sentences == 11


def test_a_sentence_over_the_budget_is_decoded_alone() -> None:
    decoder = RecordingDecoder()

    async def scenario(batcher: DynamicBatcher) -> list:
        return await batcher.translate(["huge", "small"], [500, 1], GREEDY)

    answer, _ = run_with_batcher(decoder, scenario, max_batch_tokens=100)
    assert answer == ["HUGE", "SMALL"]
    assert [batch for batch, _ in decoder.batches] == [["huge"], ["small"]]


def test_a_failing_request_fails_alone() -> None:
    decoder = RecordingDecoder(fail_on="boom")

    async def scenario(batcher: DynamicBatcher) -> list:
        return await asyncio.gather(
            batcher.translate(["fine"], [1], GREEDY),
            batcher.translate(["boom"], [1], GREEDY),
            batcher.translate(["also fine", ""], [2, 0], GREEDY),
            return_exceptions=True,
        )

    (fine, boom, also_fine), stats = run_with_batcher(decoder, scenario)
    assert fine == ["FINE"] and also_fine == ["ALSO FINE", ""]
    assert isinstance(boom, ValueError) and "boom" in str(boom)
    assert stats.requests == 3


def test_a_lone_caller_never_waits_for_company() -> None:
    """One client at a time: each request is decoded as soon as it arrives, not max_wait later."""
    decoder = RecordingDecoder()

    async def scenario(batcher: DynamicBatcher) -> float:
        loop = asyncio.get_running_loop()
        slowest = 0.0
        for i in range(3):
            started = loop.time()
            await batcher.translate([f"sentence {i}"], [1], GREEDY)
            slowest = max(slowest, loop.time() - started)
        return slowest

    slowest, _ = run_with_batcher(decoder, scenario, max_wait_ms=2000)
    assert slowest < 1.0  # far below max_wait
    assert len(decoder.batches) == 3


def test_the_worker_gathers_as_many_requests_as_the_last_batch_answered() -> None:
    """After a batch of three, the worker waits for three (the callers it answered come back),
    and waits at most max_wait when fewer come."""
    decoder = RecordingDecoder()

    async def scenario(batcher: DynamicBatcher) -> float:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(batcher.translate([f"first {i}"], [1], GREEDY) for i in range(3)))
        early = asyncio.create_task(batcher.translate(["second 0"], [1], GREEDY))
        await asyncio.sleep(0.05)  # the first of three waits for the other two
        late = [batcher.translate([f"second {i}"], [1], GREEDY) for i in (1, 2)]
        await asyncio.gather(early, *late)
        started = loop.time()
        await batcher.translate(["alone"], [1], GREEDY)  # two others never come
        return loop.time() - started

    waited, _ = run_with_batcher(decoder, scenario, max_wait_ms=500)
    assert [len(batch) for batch, _ in decoder.batches] == [3, 3, 1]
    assert 0.45 <= waited < 5.0


def test_translate_before_start_is_an_error() -> None:
    batcher = DynamicBatcher(RecordingDecoder(), max_batch_tokens=10, max_wait_ms=1)
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(batcher.translate(["x"], [1], GREEDY))
    with pytest.raises(ValueError, match="max_batch_tokens"):
        DynamicBatcher(RecordingDecoder(), max_batch_tokens=0, max_wait_ms=1)
