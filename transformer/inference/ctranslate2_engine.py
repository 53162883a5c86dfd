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
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from transformer.checkpoint import LoadedModel
from transformer.config import DecodeConfig
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
    ) -> None:
        ctranslate2 = import_ctranslate2("--engine ctranslate2")
        compute_type = "int8" if quantize == "int8" else "float32"
        self.translator = ctranslate2.Translator(
            str(model_dir),
            device=device.type,
            device_index=device.index or 0,
            compute_type=compute_type,
            intra_threads=torch.get_num_threads(),  # --threads, or torch's choice
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
        """Sentences of one source length go together, so that each call's max_decoding_length is
        their limit a * length + b (CTranslate2 takes one limit per call), as the PyTorch search
        gives each sentence its own."""
        results: list[list[Hypothesis]] = [[] for _ in sources]
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, ids in enumerate(sources):
            if ids:
                by_length[len(ids)].append(i)
            else:
                results[i] = [Hypothesis(tokens=[], score=0.0, log_prob=0.0)]
        if decode_config.sample and decode_config.seed is not None:
            self.ctranslate2.set_random_seed(decode_config.seed)
        for length, indices in sorted(by_length.items()):
            limit = int(decode_config.max_len_a * length + decode_config.max_len_b)
            limit = max(0, min(limit, self.max_positions - 1))  # as max_output_lengths caps it
            batch = [self._source_tokens(sources[i]) for i in indices]
            target_prefix = None
            if prefixes is not None:
                target_prefix = [self._tokens(prefixes[i], "target") or None for i in indices]
            outputs = self.translator.translate_batch(
                batch,
                target_prefix,
                max_decoding_length=limit + 1,  # + the EOS
                return_scores=True,
                **self._search_options(decode_config, len(batch)),
            )
            for i, output in zip(indices, outputs, strict=True):
                results[i] = [
                    Hypothesis(tokens=self._ids(tokens), score=score, log_prob=score)
                    for tokens, score in zip(output.hypotheses, output.scores, strict=True)
                ]
        return results

    def _search_options(self, config: DecodeConfig, sentences: int) -> dict[str, Any]:
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
