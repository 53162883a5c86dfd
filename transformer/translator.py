"""Text in, text out: encode sentences, decode them with `decoding`, detokenize.

The one place where strings meet the model at inference time; `translate.py` and the benchmarks
call it. Decoding itself stays in `decoding.py`, as pure functions over token ids.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import torch

from transformer.checkpoint import LoadedModel
from transformer.config import DecodeConfig
from transformer.decoding import translate_ids
from transformer.quantize import quantize_model


@dataclass
class Translation:
    text: str
    score: float  # the model score used for ranking (length-penalised log-probability)
    tokens: list[int] = field(default_factory=list)  # output ids (no BOS/EOS), for attention plots


class Translator:
    """A model loaded from a checkpoint together with its tokenizers and decoding settings."""

    def __init__(
        self,
        loaded: LoadedModel,
        decode: DecodeConfig,
        device: torch.device,
        quantize: str | None = None,
    ) -> None:
        """quantize="int8" translates with a dynamically quantized copy of the model (CPU only;
        see transformer/quantize.py); None keeps the checkpoint's float weights."""
        model = loaded.model.to(device).eval()
        self.model = quantize_model(model, quantize) if quantize is not None else model
        self.tokenizers = loaded.tokenizers
        self.decode = decode
        self.device = device
        self.max_positions = loaded.config.model.max_positions

    @classmethod
    def with_options(
        cls,
        loaded: LoadedModel,
        device: torch.device,
        quantize: str | None = None,
        **options: object,
    ) -> Translator:
        """The checkpoint's decoding settings, with the non-None `options` replacing them."""
        chosen = {key: value for key, value in options.items() if value is not None}
        return cls(loaded, replace(loaded.config.decode, **chosen), device, quantize)

    def translate(
        self, sentences: list[str], decode: DecodeConfig | None = None
    ) -> list[list[Translation]]:
        """n-best translations of each sentence, best first. An empty or whitespace-only line gives
        one empty translation; a source longer than the model's maximum positions is truncated
        with a warning. `decode` replaces this translator's settings for this call only (the
        server decodes each batch with its requests' beam, n-best and length penalty)."""
        ids = self.tokenizers.encode_source(sentences)
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
        hypotheses = translate_ids(self.model, sources, decode or self.decode, self.device)
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
