"""Translation metrics: sacreBLEU's BLEU, chrF and TER on detokenized text, and perplexity.

Scores are computed on detokenized output against raw references with sacreBLEU's own tokenizer,
so they are comparable across toolkits; the signature printed with each says exactly how. BLEU and
chrF count what the output gets right (higher is better); TER counts the edits it needs to become
the reference, per reference word (lower is better), as WMT-style reports give it beside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF, TER


@dataclass
class TranslationScores:
    bleu: float  # cased sacreBLEU, 13a tokenization
    chrf: float
    ter: float  # translation edit rate in %: lower is better
    bleu_lowercase: float  # for comparison with papers that report lowercased BLEU
    bleu_signature: str
    chrf_signature: str
    ter_signature: str
    n_sentences: int

    def summary(self) -> str:
        return (
            f"BLEU {self.bleu:.2f}  chrF {self.chrf:.2f}  TER {self.ter:.2f}  (lowercased BLEU "
            f"{self.bleu_lowercase:.2f}, {self.n_sentences} sentences)"
        )


def score_translations(hypotheses: list[str], references: list[str]) -> TranslationScores:
    """Corpus-level BLEU, chrF and TER of detokenized hypotheses against one reference each."""
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} translations but {len(references)} references: "
            "the two must have one line per sentence"
        )
    bleu, chrf, ter, bleu_lowercase = BLEU(), CHRF(), TER(), BLEU(lowercase=True)

    def corpus_score(metric: BLEU | CHRF | TER) -> float:
        return metric.corpus_score(hypotheses, [references]).score

    return TranslationScores(
        bleu=corpus_score(bleu),
        chrf=corpus_score(chrf),
        ter=corpus_score(ter),
        bleu_lowercase=corpus_score(bleu_lowercase),
        # A signature is known once its metric has scored (TER's counts the references).
        bleu_signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
        ter_signature=str(ter.get_signature()),
        n_sentences=len(hypotheses),
    )


def perplexity(mean_token_loss: float) -> float:
    """exp of the mean per-token cross entropy (in nats), capped to stay finite in logs."""
    return math.exp(min(mean_token_loss, 50.0))
