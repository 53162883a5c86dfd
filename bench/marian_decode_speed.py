"""Decoding speed against Hugging Face `MarianMTModel.generate` (and CTranslate2) at the same sizes,
in float32 and in int8.

    pip install transformers ctranslate2                      # bench-only dependencies
    python bench/marian_decode_speed.py                       # d 256, 3+3 layers, 20 new tokens
    python bench/marian_decode_speed.py --new-tokens 30 --threads 1
    python bench/marian_decode_speed.py --no-int8             # float32 rows only

All models have random weights, so every decoder is forced to generate exactly --new-tokens tokens
per sentence (EOS included) and the work does not depend on what the weights say:
- project: its own `greedy_search` / `beam_search` with max_len_a=0, max_len_b=N-1 (N-1 tokens, then
  the EOS the search forces at the limit), on a model whose output bias for EOS is -1e4, so EOS is
  never chosen (nor in the beam's top K) before the limit; its float32 linear layers packed for
  oneDNN as `translate.py` does (`transformer.inference.onednn_linear`); "project unpacked" is the same
  model through `F.linear` (MKL), as before packing existed;
- marian:  `generate(min_new_tokens=N, max_new_tokens=N, num_beams=K, do_sample=False)`, KV cache on;
- ctranslate2: the same Marian weights converted with CTranslate2's TransformersConverter,
  `translate_batch(min_decoding_length=N, max_decoding_length=N, beam_size=K)`, float32;
- int8 rows: the project's model through `transformer.inference.quantize.quantize_model` (dynamic int8 linear
  layers; "project int8" keeps the output projection float32, "project int8 +proj" makes it int8
  too), and the same CTranslate2 model loaded with
  compute_type="int8" (int8 weights, quantized on load, the output projection included).
Each model is checked to have produced exactly N tokens for every sentence. Times are medians of
--rounds rounds in which every decoder runs once, in turn (this VM's speed drifts by tens of
percent within minutes; one pass each made ratios move by 0.2 between runs).

Sources: Multi30k test_2016_flickr English, encoded with a joint BPE tokenizer that the project trains
on the training split (no EOS appended; the same ids for all three). Batch 1: the first
--batch1-sentences sentences, one call each. Batched: the first --batched-sentences sentences in
their corpus order, cut into batches of --batch-size, each padded to its own longest; the same
batches for all three. Beam search keeps the project's default length penalty (0.6) and Marian's
(1.0); with every hypothesis the same length this changes no work.
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from peers import add_size_and_data_arguments, marian_model, prepare_corpus, project_model
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from transformer.device import keep_freed_cpu_memory
from transformer.inference.decoding import BEAM_DEFAULTS, SearchSettings, beam_search, greedy_search
from transformer.inference.onednn_linear import pack_linear_layers
from transformer.inference.quantize import quantize_model
from transformer.model import Transformer
from transformer.tokenization.tokenizer import BOS_ID, EOS_ID, PAD_ID


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_size_and_data_arguments(parser)
    parser.add_argument("--new-tokens", type=int, default=20, help="tokens per sentence, EOS incl.")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch1-sentences", type=int, default=50)
    parser.add_argument("--batched-sentences", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-ctranslate2", action="store_true", help="skip CTranslate2")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 rows")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of every decoder in turn; medians shown"
    )
    parser.add_argument("--seed", type=int, default=1234)
    return parser.parse_args(argv)


# --- the three decoders ---------------------------------------------------------------------------


def build_project(args: argparse.Namespace, vocab_size: int) -> Transformer:
    model = project_model(args, vocab_size).eval()
    with torch.no_grad():
        model.projection.linear.bias[EOS_ID] = -1e4  # EOS only where the search forces it
    return model


def build_marian(args: argparse.Namespace, vocab_size: int) -> torch.nn.Module:
    return marian_model(args, vocab_size).eval()


def project_decode(model: Transformer, src: Tensor, beam: int, n: int) -> list[list[int]]:
    """The generated ids of each sentence: N - 1 tokens and the forced EOS."""
    settings = SearchSettings(max_len_a=0.0, max_len_b=n - 1)
    if beam == 1:
        hypotheses = greedy_search(model, src, settings)
    else:
        settings = replace(settings, length_penalty=BEAM_DEFAULTS.length_penalty)
        hypotheses = [best[0] for best in beam_search(model, src, settings, beam_size=beam)]
    return [h.tokens + [EOS_ID] for h in hypotheses]


def marian_decode(model: torch.nn.Module, src: Tensor, beam: int, n: int) -> list[list[int]]:
    """The generated ids of each sentence (without the decoder start token)."""
    with torch.inference_mode():
        out = model.generate(
            input_ids=src,
            attention_mask=(src != PAD_ID).long(),
            num_beams=beam,
            do_sample=False,
            min_new_tokens=n,
            max_new_tokens=n,
        )  # (B, 1 + N)
    return [[i for i in row if i != PAD_ID] for row in out[:, 1:].tolist()]


class _FakeTokenizer:
    """What CTranslate2's converter reads from a tokenizer: the vocabulary and special tokens."""

    def __init__(self, vocabulary: dict[str, int]) -> None:
        self.vocabulary = vocabulary
        self.id_to_token = {i: token for token, i in vocabulary.items()}
        self.bos_token = self.id_to_token[BOS_ID]
        self.eos_token = self.id_to_token[EOS_ID]
        self.unk_token = self.id_to_token[1]

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocabulary)

    def convert_ids_to_tokens(self, i: int) -> str:
        return self.id_to_token[i]


def convert_to_ctranslate2(model: torch.nn.Module, vocabulary: dict[str, int], out: Path) -> None:
    """Save the Marian model and convert it.

    CTranslate2's Marian loader assumes the Helsinki-NLP (OPUS-MT) layout: PAD is the last token and
    the decoder starts from a zero vector, so it drops the last vocabulary row. Our Marian model has
    PAD 0 and starts from BOS (2), like the project, so the conversion uses the loader's BART path
    (which keeps every row and starts from `decoder_start_token_id`) with Marian's post-norm
    settings. There is no sentencepiece model: the vocabulary comes from the project's tokenizer."""
    from ctranslate2.converters import TransformersConverter
    from ctranslate2.converters import transformers as ct2_transformers

    class Loader(ct2_transformers.MarianMTLoader):
        def get_model_spec(self, hf_model: torch.nn.Module):  # noqa: ANN202
            hf_model.config.normalize_before = False
            hf_model.config.normalize_embedding = False
            return ct2_transformers.BartLoader.get_model_spec(self, hf_model)

        set_config = ct2_transformers.BartLoader.set_config
        set_decoder = ct2_transformers.BartLoader.set_decoder
        get_vocabulary = ct2_transformers.BartLoader.get_vocabulary

    class Converter(TransformersConverter):
        def load_tokenizer(self, *_: object, **__: object) -> _FakeTokenizer:
            return _FakeTokenizer(vocabulary)

    hf_dir = out / "hf"
    model.save_pretrained(hf_dir)
    loaders = ct2_transformers._MODEL_LOADERS
    original = loaders["MarianConfig"]
    loaders["MarianConfig"] = Loader()
    try:
        Converter(str(hf_dir)).convert(str(out / "ct2"), quantization="float32", force=True)
    finally:
        loaders["MarianConfig"] = original


def ct2_decode(
    translator: object, tokens: list[list[str]], beam: int, n: int, ids: dict[str, int]
) -> list[list[int]]:
    """The generated ids of each sentence."""
    results = translator.translate_batch(  # type: ignore[attr-defined]
        tokens,
        beam_size=beam,
        min_decoding_length=n,
        max_decoding_length=n,
        return_end_token=True,
    )
    return [[ids[token] for token in result.hypotheses[0]] for result in results]


# --- timing ---------------------------------------------------------------------------------------


# A runner decodes a list of batches with a beam size: (seconds taken, generated ids per sentence).
Runner = Callable[[list[Tensor], int], tuple[float, list[list[int]]]]


def in_process(decode: Callable[[Tensor, int], list[list[int]]]) -> Runner:
    """A runner timing `decode` (src, beam) -> ids over the batches, in this process."""

    def run(batches: list[Tensor], beam: int) -> tuple[float, list[list[int]]]:
        outputs = []
        start = time.perf_counter()
        for batch in batches:
            outputs += decode(batch, beam)
        return time.perf_counter() - start, outputs

    return run


class CTranslate2Process:
    """A CTranslate2 translator in a process of its own, timed there.

    Once CTranslate2 has translated in a process, torch's own CPU kernels in that process run
    slower for good (here, on 2 cores: a packed 1 x 256 -> 1,024 linear layer 26 -> 91 us, at 64
    rows 100 -> 225 us; F.linear at 64 rows 231 -> 313 us; nothing left spinning, the affinity
    unchanged: two OpenMP runtimes, CTranslate2 bundles its own libgomp). In one process every
    torch row measured after a CTranslate2 row was slowed down that much; a user runs one or the
    other, so each gets a process, and this one waits (blocked, using no CPU) while the other
    works."""

    def __init__(
        self, model_dir: Path, compute_type: str, threads: int, n: int, vocabulary
    ) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter, no torch threads
        self.connection, child = context.Pipe()
        self.process = context.Process(
            target=_ctranslate2_worker,
            args=(child, str(model_dir), compute_type, threads, n, vocabulary),
            daemon=True,
        )
        self.process.start()
        self.version = self.connection.recv()  # the worker's first message: it is ready

    def __call__(self, batches: list[Tensor], beam: int) -> tuple[float, list[list[int]]]:
        self.connection.send(([batch.tolist() for batch in batches], beam))
        return self.connection.recv()

    def close(self) -> None:
        self.connection.send(None)
        self.process.join(timeout=30)


def _ctranslate2_worker(
    connection, model_dir: str, compute_type: str, threads: int, n: int, vocabulary
) -> None:  # noqa: ANN001
    """Translate what the parent sends, timing only the translation (ids -> tokens before)."""
    import ctranslate2

    translator = ctranslate2.Translator(
        model_dir, device="cpu", compute_type=compute_type, intra_threads=threads
    )
    id_to_token = {i: token for token, i in vocabulary.items()}
    connection.send(ctranslate2.__version__)
    while (request := connection.recv()) is not None:
        batches, beam = request
        tokens = [[[id_to_token[i] for i in row if i != PAD_ID] for row in b] for b in batches]
        outputs: list[list[int]] = []
        start = time.perf_counter()
        for batch_tokens in tokens:
            outputs += ct2_decode(translator, batch_tokens, beam, n, vocabulary)
        connection.send((time.perf_counter() - start, outputs))


def time_in_rounds(
    runners: dict[str, Runner], batches: list[Tensor], beam: int, rounds: int
) -> dict[str, tuple[float, list[list[int]]]]:
    """Each runner's median seconds over `rounds` rounds, and its outputs. Within a round every
    runner runs once, in turn, so a machine whose speed drifts slows them all alike."""
    for run in runners.values():
        run(batches[:1], beam)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    outputs: dict[str, list[list[int]]] = {}
    for _ in range(rounds):
        for name, run in runners.items():
            taken, outputs[name] = run(batches, beam)
            seconds[name].append(taken)
    return {name: (statistics.median(seconds[name]), outputs[name]) for name in runners}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    # As translate.py does on a CPU (CTranslate2 runs in processes of its own).
    keep_freed_cpu_memory(torch.device("cpu"))
    tokenizers, splits = prepare_corpus(args)
    vocab_size = tokenizers.src_vocab_size
    test = splits["test"]
    sources = [test[i][0] for i in range(max(args.batch1_sentences, args.batched_sentences))]

    torch.manual_seed(args.seed)
    project = build_project(args, vocab_size)
    marian = build_marian(args, vocab_size)
    n = args.new_tokens

    batch1 = [s[None] for s in sources[: args.batch1_sentences]]  # (1, S) each
    batched = [
        pad_sequence(sources[k : k + args.batch_size], batch_first=True, padding_value=PAD_ID)
        for k in range(0, args.batched_sentences, args.batch_size)
    ]  # (B, S) each
    settings = [("batch 1", batch1), (f"batched ({args.batch_size})", batched)]

    packed = pack_linear_layers(project)  # what translate.py and serve.py decode with
    runners: dict[str, Runner] = {
        "project": in_process(lambda src, beam: project_decode(packed, src, beam, n)),
        "project unpacked": in_process(lambda src, beam: project_decode(project, src, beam, n)),
    }
    if not args.no_int8:
        project_int8 = quantize_model(project, "int8", output_projection=False)
        runners["project int8"] = in_process(
            lambda src, beam: project_decode(project_int8, src, beam, n)
        )
        all_int8 = quantize_model(project, "int8", output_projection=True)
        runners["project int8 +proj"] = in_process(
            lambda src, beam: project_decode(all_int8, src, beam, n)
        )
    runners["marian generate"] = in_process(lambda src, beam: marian_decode(marian, src, beam, n))
    skipped = ""
    directory = tempfile.TemporaryDirectory()
    workers: list[CTranslate2Process] = []
    if args.no_ctranslate2:
        skipped = "skipped: --no-ctranslate2"
    else:
        try:
            vocabulary = tokenizers.source.get_vocab()
            convert_to_ctranslate2(marian, vocabulary, Path(directory.name))
            model_dir = Path(directory.name) / "ct2"
            for compute_type in ["float32"] if args.no_int8 else ["float32", "int8"]:
                workers.append(CTranslate2Process(model_dir, compute_type, threads, n, vocabulary))
                suffix = "" if compute_type == "float32" else " int8"
                runners[f"ctranslate2{suffix}"] = workers[-1]
        except Exception as error:  # noqa: BLE001  (any failure: report it and go on)
            skipped = f"skipped: {type(error).__name__}: {error}"

    print(
        f"torch {torch.__version__}, {threads} threads; d_model {args.d_model}, "
        f"{args.layers}+{args.layers} layers, {args.heads} heads, d_ff {args.d_ff}, vocabulary "
        f"{vocab_size}; random weights, {n} generated tokens per sentence (forced)"
    )
    header = (
        f"{'search':<8} {'batching':<13} {'implementation':<19} {'sents':>5} {'seconds':>8} "
        f"{'sent/s':>7} {'tok/s':>7} {'vs project':>10} {'all N?':>6} {'= marian':>8}"
    )
    print(header)
    print("-" * len(header))
    for beam in (1, args.beam):
        search = "greedy" if beam == 1 else f"beam {beam}"
        for setting, batches in settings:
            count = sum(b.size(0) for b in batches)
            project_speed, marian_outputs = None, None
            timed = time_in_rounds(runners, batches, beam, args.rounds)
            for name, (seconds, outputs) in timed.items():
                speed = count / seconds
                project_speed = project_speed or speed
                exact = "yes" if all(len(output) == n for output in outputs) else "NO"
                same = "-"
                if name.startswith("marian"):
                    marian_outputs = outputs
                elif marian_outputs is not None:  # CTranslate2 runs the same weights
                    agree = sum(a == b for a, b in zip(outputs, marian_outputs, strict=True))
                    same = f"{agree / len(outputs):.0%}"
                print(
                    f"{search:<8} {setting:<13} {name:<19} {count:>5} {seconds:>8.2f} "
                    f"{speed:>7.1f} {speed * n:>7.0f} {speed / project_speed:>9.2f}x "
                    f"{exact:>6} {same:>8}"
                )
    if skipped:
        print(f"ctranslate2 {skipped}")
    elif workers:
        print(f"ctranslate2 {workers[0].version}, each compute type in a process of its own")
    for worker in workers:
        worker.close()
    directory.cleanup()


if __name__ == "__main__":
    main()
