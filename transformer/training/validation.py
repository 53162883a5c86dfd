"""Validation: loss and perplexity over the whole validation set, then real decoding of every
validation sentence scored with sacreBLEU (BLEU, chrF, TER), sample translations and labelled
cross-attention heatmaps (transformer.inference.attention_plot), all sent to the run's trackers
(TensorBoard, W&B, MLflow: trackers.py).

Under torchrun every rank takes a share of the batches and the results are combined (the loss
summed, the translations gathered in order), so the scores equal a single process's.

A multilingual run validates every direction: loss, BLEU, chrF and TER per direction (the
validation sentences of all directions are decoded together, in mixed batches, then scored
direction by direction, exactly as scoring each direction alone), logged as valid/en-de/bleu, ...,
and their averages as valid/bleu, ...; the mean BLEU chooses best.pt and drives early stopping.
TensorBoard's Custom Scalars tab shows one chart per metric with a line per direction."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from transformer.config import Config
from transformer.data.batching import TokenBatchSampler, make_loader
from transformer.data.loading import EncodedSplit
from transformer.inference.attention_plot import (
    attention_figure,
    figure_pixels,
    last_layer_cross_attention,
    token_labels,
)
from transformer.inference.decoding import translate_ids
from transformer.inference.onednn_linear import pack_linear_layers
from transformer.metrics import TranslationScores, perplexity, score_translations
from transformer.model import Transformer
from transformer.tokenization.tokenizer import TokenizerPair
from transformer.training import distributed
from transformer.training.loss import batch_loss_sum
from transformer.training.tracker import Sample
from transformer.training.trackers import Trackers


@dataclass
class ValidationResult:
    loss: float  # mean per-token cross entropy (no label smoothing); several directions: the mean
    perplexity: float
    scores: TranslationScores  # several directions: BLEU, chrF and TER are the directions' means
    hypotheses: list[str]
    per_direction: dict[str, ValidationResult] = field(default_factory=dict)  # when several

    def metrics(self) -> dict[str, float]:
        """The numbers logged for it (as valid/<name>, or valid/<direction>/<name>)."""
        scores = self.scores
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "bleu": scores.bleu,
            "chrf": scores.chrf,
            "ter": scores.ter,
        }


@dataclass
class Directions:
    """The direction of each validation sentence, for a run with several."""

    names: list[str]  # "en-de", ...
    of_sentence: torch.Tensor  # (n,) index into names

    def sentences(self, k: int) -> list[int]:
        return torch.nonzero(self.of_sentence == k).flatten().tolist()


@torch.inference_mode()
def validation_loss(
    model: Transformer, split: EncodedSplit, max_tokens: int, device: torch.device
) -> float:
    """Mean per-token cross entropy over every validation sentence, batched by length; under
    torchrun each rank takes every world_size-th batch (no repeats: each counts once)."""
    model.eval()
    sampler = TokenBatchSampler(split.src_lengths, split.tgt_lengths, max_tokens, shuffle=False)
    my_batches = list(sampler)[distributed.rank() :: distributed.world_size()]
    total, tokens = torch.zeros((), device=device), 0
    for batch in make_loader(split, my_batches):
        batch = batch.to(device)
        total += batch_loss_sum(
            model.token_states, model.projection.linear, batch.src, batch.tgt_in, batch.labels, 0.0
        )
        tokens += batch.n_tgt_tokens
    sums = distributed.sum_across_ranks(torch.stack([total, total.new_tensor(tokens)]))
    total_loss, total_tokens = sums.tolist()
    return total_loss / max(1, total_tokens)


def attention_images(
    model: Transformer,
    sources: list[torch.Tensor],
    outputs: list[list[int]],
    tokenizers: TokenizerPair,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """One labelled cross-attention heatmap per sentence, as pixels (drawn once, whatever number
    of trackers show it), under valid/attention/sentence_N."""
    maps = last_layer_cross_attention(model, sources, outputs, device)
    images = {}
    for number, (weights, source, output) in enumerate(
        zip(maps, sources, outputs, strict=True), start=1
    ):
        source_labels = token_labels(tokenizers.source, source.tolist())
        output_labels = token_labels(tokenizers.target, output)
        caption = tokenizers.decode_source([source.tolist()])[0]
        figure = attention_figure(weights, source_labels, output_labels, caption)
        images[f"valid/attention/sentence_{number}"] = figure_pixels(figure)
    return images


def validate(
    model: Transformer,
    split: EncodedSplit,
    references: list[str],
    tokenizers: TokenizerPair,
    config: Config,
    device: torch.device,
    trackers: Trackers | None = None,
    step: int = 0,
    directions: Directions | None = None,
) -> ValidationResult:
    """Loss, perplexity, BLEU, chrF and TER over the whole validation set; logged when trackers
    are given. With `directions` (of several), per direction too, and the means."""
    model.eval()
    sources = [split[i][0] for i in range(len(split))]
    shard = (distributed.rank(), distributed.world_size())
    hypotheses_ids = distributed.gather_in_order(
        translate_ids(
            pack_linear_layers(model),  # float32 on a CPU: a packed copy decodes faster
            sources,
            config.decode,
            device,
            shard=shard,
            never_ids=tokenizers.language_tag_ids,
        )
    )
    best = [nbest[0].tokens for nbest in hypotheses_ids]
    hypotheses = tokenizers.decode_target(best)
    if directions is None or len(directions.names) < 2:
        loss = validation_loss(model, split, config.data.max_tokens, device)
        result = ValidationResult(
            loss, perplexity(loss), score_translations(hypotheses, references), hypotheses
        )
    else:
        result = _per_direction(model, split, references, hypotheses, directions, config, device)
    shown = min(config.train.num_samples, len(hypotheses))
    samples = [
        Sample(tokenizers.decode_source([sources[i].tolist()])[0], references[i], hypotheses[i])
        for i in range(shown)
    ]
    for sample in samples:
        tqdm.write(
            f"source: {sample.source}\n  reference: {sample.reference}\n  output: {sample.output}\n"
        )
    if trackers:
        log_validation(trackers, result, samples, step)
        images = attention_images(model, sources[:shown], best[:shown], tokenizers, device)
        for tag, image in images.items():
            trackers.image(tag, image, step)
        trackers.flush()
    return result


def log_validation(
    trackers: Trackers, result: ValidationResult, samples: list[Sample], step: int
) -> None:
    """The scores (the means and each direction's), the samples and sacreBLEU's signatures."""
    scalars = {f"valid/{name}": value for name, value in result.metrics().items()}
    for direction, measured in result.per_direction.items():
        scalars |= {
            f"valid/{direction}/{name}": value for name, value in measured.metrics().items()
        }
    trackers.scalars(scalars, step)
    trackers.samples(samples, step)
    scores = result.scores
    for metric, signature in (
        ("bleu", scores.bleu_signature),
        ("chrf", scores.chrf_signature),
        ("ter", scores.ter_signature),
    ):
        trackers.text(f"valid/{metric}_signature", signature, step)


def _per_direction(
    model: Transformer,
    split: EncodedSplit,
    references: list[str],
    hypotheses: list[str],
    directions: Directions,
    config: Config,
    device: torch.device,
) -> ValidationResult:
    """Each direction's loss and scores from its own sentences, and their means."""
    per_direction = {}
    for k, name in enumerate(directions.names):
        chosen = directions.sentences(k)
        part = EncodedSplit(
            [split[i][0].tolist() for i in chosen], [split[i][1].tolist() for i in chosen]
        )
        loss = validation_loss(model, part, config.data.max_tokens, device)
        scores = score_translations(
            [hypotheses[i] for i in chosen], [references[i] for i in chosen]
        )
        per_direction[name] = ValidationResult(
            loss, perplexity(loss), scores, [hypotheses[i] for i in chosen]
        )
    results = list(per_direction.values())
    mean_loss = sum(r.loss for r in results) / len(results)
    mean_scores = TranslationScores(
        bleu=sum(r.scores.bleu for r in results) / len(results),
        chrf=sum(r.scores.chrf for r in results) / len(results),
        ter=sum(r.scores.ter for r in results) / len(results),
        bleu_lowercase=sum(r.scores.bleu_lowercase for r in results) / len(results),
        bleu_signature=results[0].scores.bleu_signature,
        chrf_signature=results[0].scores.chrf_signature,
        ter_signature=results[0].scores.ter_signature,
        n_sentences=sum(r.scores.n_sentences for r in results),
    )
    table = "\n".join(
        f"  {name:<8} loss {r.loss:6.3f}  BLEU {r.scores.bleu:6.2f}  chrF {r.scores.chrf:6.2f}  "
        f"TER {r.scores.ter:6.2f}"
        for name, r in per_direction.items()
    )
    tqdm.write(
        f"validation by direction:\n{table}\n  {'mean':<8} loss {mean_loss:6.3f}  "
        f"BLEU {mean_scores.bleu:6.2f}  chrF {mean_scores.chrf:6.2f}  TER {mean_scores.ter:6.2f}"
    )
    return ValidationResult(
        mean_loss, perplexity(mean_loss), mean_scores, hypotheses, per_direction
    )
