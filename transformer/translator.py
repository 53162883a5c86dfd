"""Text in, text out: encode sentences, decode them with `decoding`, detokenize.

The one place where strings meet the model at inference time; `translate.py` and the benchmarks
call it. Decoding itself stays in `decoding.py`, as pure functions over token ids.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from transformer.checkpoint import CheckpointError, LoadedModel
from transformer.config import DecodeConfig
from transformer.decoding import translate_ids
from transformer.quantize import quantize_model


@dataclass
class Translation:
    text: str
    score: float  # the model score used for ranking (length-penalised log-probability)
    tokens: list[int] = field(default_factory=list)  # output ids (no BOS/EOS), for attention plots


def choose_beam(requested: int | None, nbest: int, default: int) -> int:
    """The beam size of a search that must return `nbest` translations: the one asked for, else
    the checkpoint's `default`, widened to nbest (n-best needs at least that many beams).
    translate.py and the server both ask here, so a request means the same in either."""
    return requested if requested is not None else max(nbest, default)


def check_ensemble(members: Sequence[LoadedModel], names: Sequence[str]) -> None:
    """Refuse, in one line, checkpoints that cannot be ensembled: averaging next-token
    distributions needs the same target vocabulary, and one encoding of the input needs the same
    source tokenizer. names: how to call each checkpoint in the message."""
    first = members[0].tokenizers
    for member, name in zip(members[1:], names[1:], strict=True):
        for side in ("source", "target"):
            if getattr(member.tokenizers, side).to_str() != getattr(first, side).to_str():
                raise CheckpointError(
                    f"cannot ensemble {names[0]!r} and {name!r}: their {side} tokenizers "
                    "(vocabularies) differ; ensemble only models trained with the same tokenizers"
                )


class Translator:
    """A model (or an ensemble of models) loaded from checkpoints, with its tokenizers and
    decoding settings."""

    def __init__(
        self,
        loaded: LoadedModel | Sequence[LoadedModel],
        decode_config: DecodeConfig,
        device: torch.device,
        quantize: str | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        """quantize="int8" translates with dynamically quantized copies of the models (CPU only;
        see transformer/quantize.py); None keeps the checkpoints' float weights. `names` (e.g. the
        file names) say which checkpoints cannot be ensembled, if any."""
        members = [loaded] if isinstance(loaded, LoadedModel) else list(loaded)
        check_ensemble(members, names or [f"checkpoint {i + 1}" for i in range(len(members))])
        models = [member.model.to(device).eval() for member in members]
        if quantize is not None:
            models = [quantize_model(model, quantize) for model in models]
        self.models = models
        self.model = self.models[0]
        self.tokenizers = members[0].tokenizers
        self.decode_config = decode_config
        self.device = device
        self.max_positions = min(member.config.model.max_positions for member in members)

    @classmethod
    def with_options(
        cls,
        loaded: LoadedModel | Sequence[LoadedModel],
        device: torch.device,
        quantize: str | None = None,
        names: Sequence[str] | None = None,
        **options: object,
    ) -> Translator:
        """The (first) checkpoint's decoding settings, with the non-None `options` replacing
        them."""
        first = loaded if isinstance(loaded, LoadedModel) else loaded[0]
        chosen = {key: value for key, value in options.items() if value is not None}
        return cls(loaded, replace(first.config.decode, **chosen), device, quantize, names)

    def translate(
        self,
        sentences: list[str],
        prefixes: list[str] | None = None,
        decode_config: DecodeConfig | None = None,
        tgt_lang: str | Sequence[str | None] | None = None,
    ) -> list[list[Translation]]:
        """n-best translations of each sentence, best first. An empty or whitespace-only line gives
        one empty translation; a source longer than the model's maximum positions is truncated
        with a warning. `prefixes`, one per sentence ("" for none), are the forced beginnings of
        the translations: each translation starts with its prefix and continues from there.
        `decode_config` replaces this translator's settings for this call only (the server decodes each
        batch with its requests' beam, n-best and length penalty). `tgt_lang` (one for all, or
        one per sentence) chooses the output language of a multilingual model; a sentence that
        starts with its own >>xx<< tag keeps it (tokenizer.LanguageError for a language the
        model does not know, or none where one is needed)."""
        if prefixes is not None and len(prefixes) != len(sentences):
            raise ValueError(f"{len(prefixes)} prefixes for {len(sentences)} sentences")
        ids = self.tokenizers.encode_source(sentences, tgt_lang)
        too_long = [
            i for i, sentence_ids in enumerate(ids) if len(sentence_ids) > self.max_positions
        ]
        if too_long:
            warnings.warn(
                f"{len(too_long)} input sentence(s) longer than the model's {self.max_positions} "
                f"positions were truncated (first: line {too_long[0] + 1})",
                stacklevel=2,
            )
        sources = [torch.tensor(x[: self.max_positions], dtype=torch.long) for x in ids]
        prefix_ids = None if prefixes is None else self.tokenizers.encode_target(prefixes)
        hypotheses = translate_ids(
            self.models,
            sources,
            decode_config or self.decode_config,
            self.device,
            prefixes=prefix_ids,
            never_ids=self.tokenizers.language_tag_ids,
        )
        results = []
        for sentence, nbest in zip(sentences, hypotheses, strict=True):
            if not sentence.strip():
                results.append([Translation("", 0.0)])
                continue
            texts = self.tokenizers.decode_target([h.tokens for h in nbest])
            results.append(
                [Translation(t, h.score, h.tokens) for t, h in zip(texts, nbest, strict=True)]
            )
        return results
