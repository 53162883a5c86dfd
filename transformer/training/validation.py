"""Validation: loss and perplexity over the whole validation set, then real decoding of every
validation sentence scored with sacreBLEU, sample translations and labelled cross-attention heatmaps
(transformer.attention_plot).

Under torchrun every rank takes a share of the batches and the results are combined (the loss
summed, the translations gathered in order), so the scores equal a single process's."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from transformer.attention_plot import attention_figure, last_layer_cross_attention, token_labels
from transformer.batching import TokenBatchSampler, make_loader
from transformer.config import Config
from transformer.data import EncodedSplit
from transformer.decoding import translate_ids
from transformer.metrics import TranslationScores, perplexity, score_translations
from transformer.model import Transformer
from transformer.tokenizer import TokenizerPair
from transformer.training import distributed
from transformer.training.loss import batch_loss_sum


@dataclass
class ValidationResult:
    loss: float  # mean per-token cross entropy (no label smoothing)
    perplexity: float
    scores: TranslationScores
    hypotheses: list[str]


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
        total += batch_loss_sum(model.token_logits, batch.src, batch.tgt_in, batch.labels, 0.0)
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
) -> ValidationResult:
    """Loss, perplexity, BLEU and chrF over the whole validation set; logged when a writer is given."""
    model.eval()
    loss = validation_loss(model, split, config.data.max_tokens, device)
    sources = [split[i][0] for i in range(len(split))]
    shard = (distributed.rank(), distributed.world_size())
    hypotheses_ids = distributed.gather_in_order(
        translate_ids(model, sources, config.decode, device, shard=shard)
    )
    best = [nbest[0].tokens for nbest in hypotheses_ids]
    hypotheses = tokenizers.decode_target(best)
    scores = score_translations(hypotheses, references)
    result = ValidationResult(loss, perplexity(loss), scores, hypotheses)
    samples = [
        f"source: {tokenizers.decode_source([sources[i].tolist()])[0]}\n"
        f"reference: {references[i]}\n"
        f"output: {hypotheses[i]}"
        for i in range(min(config.train.num_samples, len(hypotheses)))
    ]
    for sample in samples:
        tqdm.write(sample.replace("\n", "\n  ") + "\n")
    if writer is not None:
        writer.add_scalar("valid/loss", loss, step)
        writer.add_scalar("valid/perplexity", result.perplexity, step)
        writer.add_scalar("valid/bleu", scores.bleu, step)
        writer.add_scalar("valid/chrf", scores.chrf, step)
        writer.add_text(
            "valid/samples", "\n\n".join(s.replace("\n", "  \n") for s in samples), step
        )
        writer.add_text("valid/bleu_signature", scores.bleu_signature, step)
        shown = min(config.train.num_samples, len(split))
        log_attention_figures(
            writer, model, sources[:shown], best[:shown], tokenizers, step, device
        )
        writer.flush()
    return result
