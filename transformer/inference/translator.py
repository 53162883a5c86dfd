"""Text in, text out: encode sentences, decode them with `decoding`, detokenize.

The one place where strings meet the model at inference time; `translate.py` and the benchmarks
call it. Decoding itself stays in `decoding.py`, as pure functions over token ids.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from transformer.checkpoint import CheckpointError, LoadedModel
from transformer.config import Config, DecodeConfig
from transformer.inference.ctranslate2_engine import ENGINES, CTranslate2Search, exported_model
from transformer.inference.decoding import translate_ids
from transformer.inference.onednn_linear import pack_linear_layers
from transformer.inference.quantize import quantize_model
from transformer.tokenization.tokenizer import (
    LanguageError,
    TokenizerPair,
    language_tag,
    split_language_tag,
)


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


def target_languages(config: Config, tokenizers: TokenizerPair) -> list[str]:
    """The languages a model translates into: the languages of its >>xx<< tags when it has them
    (a multilingual run of ours, or an imported multi-target OPUS-MT model: the tags are what
    count), else the one target of its config's directions (data.tgt_lang, or the target that all
    of data.pairs share, e.g. [de-en, fr-en])."""
    tags = sorted(tokenizers.language_tags)
    return tags or sorted({target for _, target in config.data.directions()})


def describe_languages(config: Config, tokenizers: TokenizerPair) -> str:
    """The model's directions for people: "en -> de" for a bilingual model, "en -> de, fr; de ->
    en" for a multilingual run (its data.pairs), "src -> deu, fra" for a model whose tags say more
    than its config (an imported OPUS-MT model)."""
    targets = target_languages(config, tokenizers)
    directions = config.data.directions()
    if {target for _, target in directions} != set(targets):  # tags not from data.pairs
        return f"{config.data.src_lang} -> {', '.join(targets)}"
    by_source: dict[str, list[str]] = {}
    for source, target in directions:
        by_source.setdefault(source, []).append(target)
    return "; ".join(f"{source} -> {', '.join(ts)}" for source, ts in by_source.items())


def tag_sentences(sentences: list[str], tgt_lang: str | None) -> list[str]:
    """Each sentence with `tgt_lang`'s >>xx<< tag in front, unless it starts with its own tag
    (which it keeps) or tgt_lang is None. The server sends its requests' sentences to the batcher
    this way, so requests with different target languages share one batched decode."""
    if tgt_lang is None:
        return sentences
    tag = language_tag(tgt_lang)
    keep = [not s.strip() or split_language_tag(s)[0] is not None for s in sentences]
    return [s if kept else f"{tag} {s}" for s, kept in zip(sentences, keep, strict=True)]


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
        engine: str = "torch",
        threads: int | None = None,
    ) -> None:
        """quantize="int8" translates with dynamically quantized copies of the models (CPU only;
        see transformer/inference/quantize.py); None keeps the checkpoints' float weights (on a CPU, in
        float32, packed for oneDNN: transformer/inference/onednn_linear.py). `names` (e.g. the
        file names) say which checkpoints cannot be ensembled, if any. engine="ctranslate2"
        decodes with the model exported beside its checkpoint (ctranslate2_engine.py); it needs
        one checkpoint, named in `names`, and decodes with `threads` CPU threads (None: torch's
        count, after which torch keeps one; see device.reserve_search_threads)."""
        members = [loaded] if isinstance(loaded, LoadedModel) else list(loaded)
        check_ensemble(members, names or [f"checkpoint {i + 1}" for i in range(len(members))])
        self.tokenizers = members[0].tokenizers
        self.decode_config = decode_config
        self.device = device
        self.max_positions = min(member.config.model.max_positions for member in members)
        self.engine = self._engine(engine, members, names, quantize, threads)
        models = [member.model.to(device).eval() for member in members]
        if self.engine is None and quantize is not None:
            models = [quantize_model(model, quantize) for model in models]
        elif self.engine is None:  # float32 on a CPU: linear layers through oneDNN, packed once
            models = [pack_linear_layers(model) for model in models]
        self.models = models
        self.model = self.models[0]
        self.target_languages = target_languages(members[0].config, self.tokenizers)
        self.languages = describe_languages(members[0].config, self.tokenizers)

    def _engine(
        self,
        engine: str,
        members: list[LoadedModel],
        names: Sequence[str] | None,
        quantize: str | None,
        threads: int | None,
    ) -> CTranslate2Search | None:
        """None for the PyTorch search, else the other engine over the exported model."""
        if engine == "torch":
            return None
        if engine != "ctranslate2":
            raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINES)}")
        if len(members) > 1 or not names:
            raise CheckpointError(
                "--engine ctranslate2 decodes one checkpoint, not an ensemble; use the default "
                "engine (torch) for ensembles"
            )
        model_dir = exported_model(Path(names[0]), members[0])
        return CTranslate2Search(
            model_dir, self.tokenizers, self.max_positions, quantize, self.device, threads
        )

    @property
    def multilingual(self) -> bool:
        """True when the source says which language to translate into (>>xx<< tags)."""
        return bool(self.tokenizers.language_tags)

    def check_target_language(self, tgt_lang: str | None) -> str | None:
        """The target language to ask the tokenizers for, checked before any work is done:
        `tgt_lang` itself for a multilingual model (None: each line must carry its own tag), None
        for a bilingual model asked for its own language (there is nothing to choose). A
        language the model does not translate into is a LanguageError that lists those it does."""
        if tgt_lang is None:
            return None
        known = ", ".join(self.target_languages)
        if not self.multilingual:
            if tgt_lang == self.target_languages[0]:
                return None
            raise LanguageError(
                f"this model translates only into {known} ({self.languages}), not "
                f"{tgt_lang!r}; leave out the target language (--tgt-lang / tgt_lang)"
            )
        if tgt_lang not in self.target_languages:
            raise LanguageError(
                f"this model was not trained to translate into {tgt_lang!r}; it knows {known}"
            )
        return tgt_lang

    @classmethod
    def with_options(
        cls,
        loaded: LoadedModel | Sequence[LoadedModel],
        device: torch.device,
        quantize: str | None = None,
        names: Sequence[str] | None = None,
        engine: str = "torch",
        threads: int | None = None,
        **options: object,
    ) -> Translator:
        """The (first) checkpoint's decoding settings, with the non-None `options` replacing
        them."""
        first = loaded if isinstance(loaded, LoadedModel) else loaded[0]
        chosen = {key: value for key, value in options.items() if value is not None}
        decode_config = replace(first.config.decode, **chosen)
        return cls(loaded, decode_config, device, quantize, names, engine, threads)

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
        one per sentence) chooses the output language of a multilingual model (see
        `check_target_language`); a sentence that starts with its own >>xx<< tag keeps it
        (tokenizer.LanguageError for a language the model does not know, or none where one is
        needed)."""
        if prefixes is not None and len(prefixes) != len(sentences):
            raise ValueError(f"{len(prefixes)} prefixes for {len(sentences)} sentences")
        if tgt_lang is None or isinstance(tgt_lang, str):
            wanted: str | list[str | None] | None = self.check_target_language(tgt_lang)
        else:
            wanted = [self.check_target_language(language) for language in tgt_lang]
            wanted = None if not self.multilingual else wanted  # bilingual: all its own
        ids = self.tokenizers.encode_source(sentences, wanted)
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
        if self.engine is not None:
            hypotheses = self.engine.translate_ids(
                [x[: self.max_positions] for x in ids],
                decode_config or self.decode_config,
                prefix_ids,
            )
        else:
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
