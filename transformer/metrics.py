"""Translation metrics: sacreBLEU's BLEU and chrF on detokenized text, and perplexity.

Scores are computed on detokenized output against raw references with sacreBLEU's own tokenizer,
so they are comparable across toolkits; the signature printed with them says exactly how.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF


@dataclass
class TranslationScores:
    bleu: float  # cased sacreBLEU, 13a tokenization
    chrf: float
    bleu_lowercase: float  # for comparison with papers that report lowercased BLEU
    bleu_signature: str
    chrf_signature: str
    n_sentences: int

    def summary(self) -> str:
        return (
            f"BLEU {self.bleu:.2f}  chrF {self.chrf:.2f}  (lowercased BLEU {self.bleu_lowercase:.2f}, "
            f"{self.n_sentences} sentences)"
        )


def score_translations(hypotheses: list[str], references: list[str]) -> TranslationScores:
    """Corpus-level BLEU and chrF of detokenized hypotheses against one reference each."""
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} translations but {len(references)} references: "
            "the two must have one line per sentence"
        )
    bleu, chrf, bleu_lowercase = BLEU(), CHRF(), BLEU(lowercase=True)
    return TranslationScores(
        bleu=bleu.corpus_score(hypotheses, [references]).score,
        chrf=chrf.corpus_score(hypotheses, [references]).score,
        bleu_lowercase=bleu_lowercase.corpus_score(hypotheses, [references]).score,
        bleu_signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
        n_sentences=len(hypotheses),
    )


def perplexity(mean_token_loss: float) -> float:
    """exp of the mean per-token cross entropy (in nats), capped to stay finite in logs."""
    return math.exp(min(mean_token_loss, 50.0))
