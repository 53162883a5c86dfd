"""Validation: loss and perplexity over the whole validation set, then real decoding of every
validation sentence scored with sacreBLEU, sample translations and labelled cross-attention heatmaps
(transformer.inference.attention_plot).

Under torchrun every rank takes a share of the batches and the results are combined (the loss
summed, the translations gathered in order), so the scores equal a single process's.

A multilingual run validates every direction: loss, BLEU and chrF per direction (the validation
sentences of all directions are decoded together, in mixed batches, then scored direction by
direction, exactly as scoring each direction alone), logged as valid/en-de/bleu, ..., and their
averages as valid/bleu, ..., which choose best.pt and drive early stopping. TensorBoard's Custom
Scalars tab shows one chart per metric with a line per direction."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from transformer.config import Config
from transformer.data.batching import TokenBatchSampler, make_loader
from transformer.data.loading import EncodedSplit
from transformer.inference.attention_plot import (
    attention_figure,
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


@dataclass
class ValidationResult:
    loss: float  # mean per-token cross entropy (no label smoothing); several directions: the mean
    perplexity: float
    scores: TranslationScores  # several directions: BLEU and chrF are the directions' means
    hypotheses: list[str]
    per_direction: dict[str, ValidationResult] = field(default_factory=dict)  # when several


@dataclass
class Directions:
    """The direction of each validation sentence, for a run with several."""

    names: list[str]  # "en-de", ...
    of_sentence: torch.Tensor  # (n,) index into names

    def sentences(self, k: int) -> list[int]:
        return torch.nonzero(self.of_sentence == k).flatten().tolist()


METRICS = ("loss", "perplexity", "bleu", "chrf")


def log_direction_charts(writer: SummaryWriter, directions: list[str]) -> None:
    """Custom Scalars layout: one chart per metric, one line per direction."""
    charts = {
        metric: ["Multiline", [f"valid/{direction}/{metric}" for direction in directions]]
        for metric in METRICS
    }
    writer.add_custom_scalars({"validation by direction": charts})


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


def log_attention_figures(
    writer: SummaryWriter,
    model: Transformer,
    sources: list[torch.Tensor],
    outputs: list[list[int]],
    tokenizers: TokenizerPair,
    step: int,
    device: torch.device,
) -> None:
    """One labelled cross-attention heatmap per sentence, under valid/attention/sentence_N."""
    maps = last_layer_cross_attention(model, sources, outputs, device)
    for number, (weights, source, output) in enumerate(
        zip(maps, sources, outputs, strict=True), start=1
    ):
        source_labels = token_labels(tokenizers.source, source.tolist())
        output_labels = token_labels(tokenizers.target, output)
        caption = tokenizers.decode_source([source.tolist()])[0]
        figure = attention_figure(weights, source_labels, output_labels, caption)
        # close=False: the figure never joined pyplot, so there is nothing for pyplot to close.
        writer.add_figure(f"valid/attention/sentence_{number}", figure, step, close=False)


def validate(
    model: Transformer,
    split: EncodedSplit,
    references: list[str],
    tokenizers: TokenizerPair,
    config: Config,
    device: torch.device,
    writer: SummaryWriter | None = None,
    step: int = 0,
    directions: Directions | None = None,
) -> ValidationResult:
    """Loss, perplexity, BLEU and chrF over the whole validation set; logged when a writer is
    given. With `directions` (of several), per direction too, and the means."""
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
    samples = [
        f"source: {tokenizers.decode_source([sources[i].tolist()])[0]}\n"
        f"reference: {references[i]}\n"
        f"output: {hypotheses[i]}"
        for i in range(min(config.train.num_samples, len(hypotheses)))
    ]
    for sample in samples:
        tqdm.write(sample.replace("\n", "\n  ") + "\n")
    if writer is not None:
        for name, measured in [
            ("", result),
            *((f"{d}/", r) for d, r in result.per_direction.items()),
        ]:
            writer.add_scalar(f"valid/{name}loss", measured.loss, step)
            writer.add_scalar(f"valid/{name}perplexity", measured.perplexity, step)
            writer.add_scalar(f"valid/{name}bleu", measured.scores.bleu, step)
            writer.add_scalar(f"valid/{name}chrf", measured.scores.chrf, step)
        writer.add_text(
            "valid/samples", "\n\n".join(s.replace("\n", "  \n") for s in samples), step
        )
        writer.add_text("valid/bleu_signature", result.scores.bleu_signature, step)
        shown = min(config.train.num_samples, len(split))
        log_attention_figures(
            writer, model, sources[:shown], best[:shown], tokenizers, step, device
        )
        writer.flush()
    return result


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
