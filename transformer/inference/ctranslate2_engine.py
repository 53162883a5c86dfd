"""Decoding with CTranslate2 in place of the PyTorch search: `translate --engine ctranslate2` and
`serve --engine ctranslate2`.

The PyTorch search (decoding.py) stays the readable reference with every feature; this engine runs
the same model, exported by export.py, in CTranslate2's C++ decoder, which pays one call per batch
where eager PyTorch pays ~80 operator dispatches per generated token. That matters most for one
sentence at a time (bench/marian_decode_speed.py). The export happens on first use, into a folder
beside the checkpoint (`best.pt` -> `best.pt.ctranslate2/`), and is reused while the checkpoint's
size and modification time are those it was made from.

What is the same: ids in, ids out (the Translator tokenizes and detokenizes as for the PyTorch
search), greedy and beam search, n-best lists, sampling (temperature, top-k, top-p, seed), forced
prefixes, the output limit a * source length + b, language tags never produced. What differs, said
once here: beam search normalises scores by length ** alpha where the PyTorch search uses GNMT's
((5 + length) / 6) ** alpha, so with a length penalty a beam can end on another hypothesis (alpha 0:
the same); scores are CTranslate2's. What it cannot do: ensembles and attention pictures (refused in
one line by the commands).

Threads: in one process CTranslate2 runs on torch's OpenMP runtime (its library binds to the libgomp
that torch loaded first), so once torch has started worker threads the runtime counts more threads
than cores and CTranslate2's threads sleep and wake at every barrier instead of spinning: greedy
decoding one sentence at a time took 5.3 s instead of 0.8 s for 200 sentences (2 cores, 440,000
context switches). Torch's share of the work beside the engine (loading, tokenizing) needs no second
thread, so torch keeps one and CTranslate2 gets the rest (device.reserve_search_threads, which the
commands call before torch's first operation).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from transformer.checkpoint import LoadedModel
from transformer.config import DecodeConfig
from transformer.device import reserve_search_threads
from transformer.inference.decoding import Hypothesis
from transformer.inference.export import ExportError, import_ctranslate2, write_ctranslate2
from transformer.tokenization.tokenizer import EOS_ID, TokenizerPair

ENGINES = ("torch", "ctranslate2")
STAMP = "exported_from.json"  # in the export folder: the checkpoint it was made from


def checkpoint_stamp(checkpoint: Path) -> dict[str, int]:
    """What identifies the checkpoint file an export was made from (as prepare.py's fingerprint
    identifies input files): a retrained or replaced best.pt changes it."""
    stat = checkpoint.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def exported_model(checkpoint: Path, loaded: LoadedModel) -> Path:
    """The CTranslate2 folder for `checkpoint`, exported now unless a current one is there. The
    export is written to a temporary folder and renamed into place, so an interrupted export
    never leaves a folder that a later run trusts."""
    target = checkpoint.with_name(checkpoint.name + ".ctranslate2")
    stamp = checkpoint_stamp(checkpoint)
    if (target / STAMP).is_file():
        if json.loads((target / STAMP).read_text(encoding="utf-8")) == stamp:
            return target
    if not os.access(checkpoint.parent, os.W_OK):
        raise ExportError(
            f"cannot export {str(checkpoint)!r} for CTranslate2 beside it ({checkpoint.parent} is "
            "not writable); copy the checkpoint to a writable folder"
        )
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=checkpoint.parent))
    try:
        write_ctranslate2(loaded.model.float().cpu(), loaded.tokenizers, temporary, "float32")
        (temporary / STAMP).write_text(json.dumps(stamp), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)  # a stale export of an older checkpoint
        temporary.rename(target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return target


class CTranslate2Search:
    """translate_ids' work done by CTranslate2: a list of source id sequences in, each sentence's
    n-best hypotheses out, in order."""

    def __init__(
        self,
        model_dir: Path,
        tokenizers: TokenizerPair,
        max_positions: int,
        quantize: str | None,
        device: torch.device,
        threads: int | None = None,
    ) -> None:
        """threads: CTranslate2's CPU threads; None takes them from torch
        (device.reserve_search_threads)."""
        ctranslate2 = import_ctranslate2("--engine ctranslate2")
        compute_type = "int8" if quantize == "int8" else "float32"
        self.translator = ctranslate2.Translator(
            str(model_dir),
            device=device.type,
            device_index=device.index or 0,
            compute_type=compute_type,
            intra_threads=threads or reserve_search_threads(None),
        )
        self.ctranslate2 = ctranslate2
        self.tokenizers = tokenizers
        self.max_positions = max_positions

    def translate_ids(
        self,
        sources: Sequence[list[int]],
        decode_config: DecodeConfig,
        prefixes: Sequence[list[int]] | None = None,
    ) -> list[list[Hypothesis]]:
        """All sentences go in one call, which CTranslate2 sorts by length and cuts into batches of
        `batch_tokens`. It takes one output limit per call, so the call gets the batch's longest
        limit a * length + b, and the few sentences whose translation ran past their own limit are
        decoded again with it, as the PyTorch search gives each sentence its own (CTranslate2 stops
        one token after it, where the PyTorch search forces the EOS: the last token is cut)."""
        results: list[list[Hypothesis]] = [[] for _ in sources]
        limits = [self._limit(len(ids), decode_config) for ids in sources]
        todo = [i for i, ids in enumerate(sources) if ids]
        for i, ids in enumerate(sources):
            if not ids:
                results[i] = [Hypothesis(tokens=[], score=0.0, log_prob=0.0)]
        if decode_config.sample and decode_config.seed is not None:
            self.ctranslate2.set_random_seed(decode_config.seed)
        if todo:
            self._decode(
                todo, max(limits[i] for i in todo), sources, prefixes, decode_config, results
            )
        too_long: dict[int, list[int]] = defaultdict(list)
        for i in todo:
            if any(len(hypothesis.tokens) > limits[i] for hypothesis in results[i]):
                too_long[limits[i]].append(i)
        for limit, indices in sorted(too_long.items()):
            self._decode(indices, limit, sources, prefixes, decode_config, results)
            for i in indices:  # one that reached its limit ends there, as in the PyTorch search
                results[i] = [replace(h, tokens=h.tokens[:limit]) for h in results[i]]
        return results

    def _limit(self, length: int, config: DecodeConfig) -> int:
        """The most tokens a translation of `length` source tokens may have, EOS excluded."""
        limit = int(config.max_len_a * length + config.max_len_b)
        return max(0, min(limit, self.max_positions - 1))  # as max_output_lengths caps it

    def _decode(
        self,
        indices: list[int],
        limit: int,
        sources: Sequence[list[int]],
        prefixes: Sequence[list[int]] | None,
        config: DecodeConfig,
        results: list[list[Hypothesis]],
    ) -> None:
        """Decode sources[indices] with at most `limit` tokens each into results[indices]."""
        batch = [self._source_tokens(sources[i]) for i in indices]
        target_prefix = None
        if prefixes is not None:
            target_prefix = [self._tokens(prefixes[i], "target") or None for i in indices]
        outputs = self.translator.translate_batch(
            batch,
            target_prefix,
            max_decoding_length=limit + 1,  # + the EOS
            return_scores=True,
            **self._search_options(config),
        )
        for i, output in zip(indices, outputs, strict=True):
            results[i] = [
                Hypothesis(tokens=self._ids(tokens), score=score, log_prob=score)
                for tokens, score in zip(output.hypotheses, output.scores, strict=True)
            ]

    def _search_options(self, config: DecodeConfig) -> dict[str, Any]:
        rows = config.nbest if config.sample else config.beam_size
        options: dict[str, Any] = {
            "num_hypotheses": config.nbest,
            "max_batch_size": max(1, config.batch_tokens // rows),
            "batch_type": "tokens",
        }
        if config.sample:
            return options | {
                "beam_size": 1,
                "sampling_topk": config.top_k,  # 0: the whole vocabulary, as ours
                "sampling_topp": config.top_p,
                "sampling_temperature": config.temperature,
            }
        return options | {"beam_size": config.beam_size, "length_penalty": config.length_penalty}

    def _source_tokens(self, ids: list[int]) -> list[str]:
        """The engine appends the source EOS itself (the export says so when the model has one)."""
        if self.tokenizers.source_eos and ids and ids[-1] == EOS_ID:
            ids = ids[:-1]
        return self._tokens(ids, "source")

    def _tokens(self, ids: list[int], side: str) -> list[str]:
        tokenizer = getattr(self.tokenizers, side)
        return [tokenizer.id_to_token(i) for i in ids]

    def _ids(self, tokens: list[str]) -> list[int]:
        return [self.tokenizers.target.token_to_id(token) for token in tokens]
