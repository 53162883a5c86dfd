"""Load test of serve.py: concurrent clients sending one sentence per request, against the same
sentences translated in one batch by `Translator` (translate.py's path) as the ceiling.

    python bench/serve_load.py -c runs/multi30k_en_de/checkpoints/best.pt \\
        --source ../shared/data/multi30k/test_2016_flickr.en.gz --clients 1 8 32

It starts `python serve.py` as a subprocess on a free 127.0.0.1 port (the server has its own
process, as in production), and for each number of clients sends the first `--requests` sentences,
each client posting its next sentence as soon as its previous answer arrives. A level stops after
`--requests` requests or `--max-seconds`, whichever comes first; the server is stopped at the end.
Prints requests/s, sentences/s, latency percentiles, the batches the server formed, whether each
answer equals Translator's translation of the same sentence, and checks that every request got
exactly one answer. The ceiling is measured before the first level and after every level, and each
level is compared with the mean of the two measurements around it; "% of calls of N" compares it
with the same sentences translated N at a time (N clients), the most a server can batch. Prints a
table; asserts nothing.

The clients share the machine's cores with the server, so the load generator's own CPU time per
request is printed too. `--client raw` (the default) speaks HTTP/1.1 over asyncio streams with one
keep-alive connection per client, the lightest load generator Python allows; `--client httpx`
uses the library a user would pick, at several times the client CPU per request.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import torch

from transformer.checkpoint import load_model
from transformer.commands.common import start_the_search
from transformer.device import reserve_search_threads
from transformer.inference.translator import Translator

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-c", "--checkpoint")
    parser.add_argument("--ceiling-of", help=argparse.SUPPRESS)  # the ceiling's own process
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--source",
        default="../shared/data/multi30k/test_2016_flickr.en.gz",
        help="sentences to send (.gz or plain)",
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=300, help="requests per level, at most")
    parser.add_argument("--max-seconds", type=float, default=30, help="per level, at most")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--max-batch-tokens", type=int, default=4096, help="the server's option")
    parser.add_argument("--max-wait-ms", type=float, default=10, help="the server's option")
    parser.add_argument("--threads", type=int, default=0, help="search threads (0: default)")
    parser.add_argument(
        "--engine", choices=["torch", "ctranslate2"], default="torch", help="the server's option"
    )
    parser.add_argument(
        "--taskset", help="run the server and the ceiling on these cores only (taskset -c LIST)"
    )
    parser.add_argument(
        "--vs-ctranslate2",
        action="store_true",
        help="also time CTranslate2 alone translating the sentences one a call (its per-sentence "
        "latency, for the 1-client level)",
    )
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="raw: a minimal keep-alive HTTP/1.1 client on asyncio streams, so that the load "
        "generator, which shares the cores with the server, costs as little as it can; httpx: the "
        "library a user would pick",
    )
    return parser.parse_args(argv)


def read_lines(path: str) -> list[str]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as file:
        return [line.rstrip("\n") for line in file]


def cpu_flags() -> str:
    wanted = {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    found = {
        word for line in text.splitlines() if line.startswith("flags") for word in line.split()
    }
    return " ".join(sorted(wanted & found)) or "unknown"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def pinned(args: argparse.Namespace) -> list[str]:
    """The taskset prefix that keeps a process on --taskset's cores, if given."""
    return ["taskset", "-c", args.taskset] if args.taskset else []


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    command = [*pinned(args), sys.executable, str(ROOT / "serve.py"), "-c", args.checkpoint]
    command += ["--port", str(port), "--engine", args.engine]
    command += ["--beam", str(args.beam), "--max-batch-tokens", str(args.max_batch_tokens)]
    command += ["--max-wait-ms", str(args.max_wait_ms), "--max-beam", str(max(10, args.beam))]
    command += ["--threads", str(args.threads)] if args.threads else []
    server = subprocess.Popen(command, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit("error: the server did not become ready within 120 s")


@dataclass
class Level:
    clients: int
    sent: int
    answered: int  # 200 answers
    errors: int  # other answers or failed connections
    seconds: float
    latencies: list[float]  # seconds, one per answered request
    translations: dict[int, str]  # sentence index -> translation
    batches: int
    sentences_batched: int
    client_cpu: float  # CPU seconds the load generator itself used (this process)


class RawConnection:
    """One keep-alive HTTP/1.1 connection that posts JSON and reads JSON answers with a
    Content-Length (what uvicorn sends). About a tenth of httpx's work per request, which matters
    when the clients run on the server's cores."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        body = json.dumps(payload).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        length = next(
            int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length")
        )
        return status, json.loads(await reader.readexactly(length))

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


async def run_level(
    port: int, sentences: list[str], clients: int, beam: int, max_seconds: float, raw: bool
) -> Level:
    """`clients` tasks, each sending the next unsent sentence as soon as it has its answer."""
    next_index, answers = 0, {}
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        before = (await http.get("/info")).json()["batching"]
        started, cpu_started = time.perf_counter(), time.process_time()
        deadline = started + max_seconds

        async def post(connection: RawConnection | None, index: int) -> tuple[int, Any]:
            payload = {"text": sentences[index], "beam": beam}
            if connection is not None:
                return await connection.post("/translate", payload)
            answer = await http.post("/translate", json=payload)
            return answer.status_code, answer.json() if answer.status_code == 200 else None

        async def client() -> None:
            nonlocal next_index, errors
            connection = RawConnection(port) if raw else None
            while next_index < len(sentences) and time.perf_counter() < deadline:
                index, next_index = next_index, next_index + 1
                sent = time.perf_counter()
                try:
                    status, answer = await post(connection, index)
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    if connection is not None:  # start a fresh connection
                        connection.close()
                        connection = RawConnection(port)
                    continue
                if status != 200 or index in answers:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                answers[index] = answer["translations"]
            if connection is not None:
                connection.close()

        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - started
        client_cpu = time.process_time() - cpu_started
        after = (await http.get("/info")).json()["batching"]
    return Level(
        clients,
        next_index,
        len(answers),
        errors,
        seconds,
        latencies,
        answers,
        after["batches"] - before["batches"],
        after["sentences"] - before["sentences"],
        client_cpu,
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class Ceiling:
    """The same sentences through Translator in one call (as translate.py -i does): the batched
    throughput the server is compared with. Measured again around every level, because other
    jobs on a shared machine make the speed drift; a level is compared with the mean of the
    measurements just before and just after it. Each measurement runs in a fresh process, as
    translate.py would (in this process, after a level had run, the same call measured up to 9x
    slower, for reasons not found)."""

    def __init__(self, args: argparse.Namespace, sentences: list[str]) -> None:
        self.args, self.sentences = args, sentences
        self.translations = self._run(measure=False)[1]

    def measure(self, chunk: int = 0) -> float:
        """Sentences/s of one call over all the sentences (chunk 0), or of one call per `chunk`
        sentences in order (what a server can do at best when `chunk` clients each send one
        sentence), after a warm-up call."""
        return self._run(measure=True, chunk=chunk)[0]

    def _run(self, measure: bool, chunk: int = 0) -> tuple[float, list[str]]:
        command = [*pinned(self.args), sys.executable, __file__]
        command += ["--ceiling-of", self.args.checkpoint, "--engine", self.args.engine]
        command += ["--beam", str(self.args.beam), "--threads", str(self.args.threads)]
        command += ["--chunk", str(chunk)]
        answer = subprocess.run(
            command + (["--measure"] if measure else []),
            input="\n".join(self.sentences),
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        ).stdout.split("\n")
        return float(answer[0]), answer[1:]


def ceiling_process(args: argparse.Namespace) -> None:
    """In the fresh process: translate stdin's lines in one call; print sentences/s (of a second,
    timed pass if --measure, in calls of --chunk sentences if given) and then the translations."""
    threads = reserve_search_threads(args.threads or None)  # as serve.py and translate.py do
    sentences = sys.stdin.read().split("\n")
    loaded = load_model(args.ceiling_of)
    decode = replace(loaded.config.decode, beam_size=args.beam, nbest=1, batch_tokens=4096)
    device = torch.device("cpu")
    names = [args.ceiling_of]
    translator = Translator(
        loaded, decode, device, names=names, engine=args.engine, threads=threads
    )
    start_the_search(threads, args.engine)
    with torch.inference_mode():
        started = time.perf_counter()
        results = translator.translate(sentences)
        if args.measure:
            chunk = args.chunk or len(sentences)
            started = time.perf_counter()
            for start in range(0, len(sentences), chunk):
                translator.translate(sentences[start : start + chunk])
        rate = len(sentences) / (time.perf_counter() - started)
    print("\n".join([f"{rate:.3f}"] + [r[0].text for r in results]))


def ctranslate2_latency(args: argparse.Namespace, sentences: list[str]) -> float:
    """Seconds a sentence for CTranslate2 alone, one sentence a call, float32, the server's beam
    and threads: translate_vs_ctranslate2.py's user-written worker on these sentences, less the
    same worker on no sentences (its start and model loading)."""
    from transformer.inference.export import export_ctranslate2

    directory = Path(tempfile.mkdtemp(prefix="serve_load_ct2_"))
    model_dir = export_ctranslate2(args.checkpoint, directory / "model")
    worker = [*pinned(args), sys.executable, str(ROOT / "bench" / "translate_vs_ctranslate2.py")]
    options = ["--beam", str(args.beam), "--one-at-a-time"]  # threads: the worker's cores
    options += ["--threads", str(args.threads)] if args.threads else []
    (directory / "source.txt").write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    (directory / "empty.txt").write_text("", encoding="utf-8")
    seconds = {}
    for name in ("source", "empty"):
        command = [*worker, "ct2-translate", str(model_dir), str(directory / f"{name}.txt")]
        command += [str(directory / "out.txt"), *options]
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=ROOT)
        seconds[name] = time.perf_counter() - started
    return (seconds["source"] - seconds["empty"]) / len(sentences)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.ceiling_of:
        ceiling_process(args)
        return
    if not args.checkpoint:
        raise SystemExit("error: give the checkpoint to serve with -c")
    sentences = read_lines(args.source)[: args.requests]
    threads = args.threads or "default"
    print(f"CPU flags: {cpu_flags()}; cores {args.taskset or 'all'}; beam {args.beam}")
    print(
        f"server: --engine {args.engine} --threads {threads} --max-batch-tokens "
        f"{args.max_batch_tokens} --max-wait-ms {args.max_wait_ms}"
    )
    print(f"client: {args.client}")
    ceiling = Ceiling(args, sentences)  # also the warm-up, and the translations to compare with
    port = free_port()
    server = start_server(args, port)
    levels, ceilings, batch_ceilings = [], [ceiling.measure()], []
    try:
        for clients in args.clients:
            levels.append(
                asyncio.run(
                    run_level(
                        port, sentences, clients, args.beam, args.max_seconds, args.client == "raw"
                    )
                )
            )
            ceilings.append(ceiling.measure())
            batch_ceilings.append(ceiling.measure(chunk=clients))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    if args.vs_ctranslate2:
        alone = ctranslate2_latency(args, sentences)
        print(f"CTranslate2 alone, one sentence a call: {1000 * alone:.1f} ms a sentence (mean)")
    rates = ", ".join(f"{rate:.1f}" for rate in ceilings)
    print(f"ceiling: Translator, {len(sentences)} sentences in one call: {rates} sentences/s")
    rates = ", ".join(f"{rate:.1f}" for rate in batch_ceilings)
    print(f"in calls of as many sentences as clients (one per level): {rates} sentences/s\n")
    print(
        "| clients | requests | answered | errors | requests/s | sentences/s | % of ceiling "
        "| % of calls of N | p50 ms | p95 ms | p99 ms | batches | sentences/batch "
        "| same as Translator | client CPU ms/request |"
    )
    print("|---:" * 15 + "|")
    for index, level in enumerate(levels):
        rate = level.answered / level.seconds
        around = (ceilings[index] + ceilings[index + 1]) / 2
        same = sum(ceiling.translations[i] == text for i, text in level.translations.items())
        p50, p95, p99 = (1000 * percentile(level.latencies, q) for q in (50, 95, 99))
        print(
            f"| {level.clients} | {level.sent} | {level.answered} | {level.errors} | {rate:.1f} "
            f"| {rate:.1f} | {100 * rate / around:.0f}% | {100 * rate / batch_ceilings[index]:.0f}% "
            f"| {p50:.0f} | {p95:.0f} | {p99:.0f} "
            f"| {level.batches} | {level.sentences_batched / max(1, level.batches):.1f} "
            f"| {same}/{level.answered} | {1000 * level.client_cpu / max(1, level.sent):.2f} |"
        )


if __name__ == "__main__":
    main()
