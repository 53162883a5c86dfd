"""Cross-attention you can read: a labelled heatmap of where each output token looked in the source.

    maps = last_layer_cross_attention(model, sources, outputs, device)  # one (T, S) map per sentence
    figure = attention_figure(maps[0], source_labels, output_labels)
    figure.savefig("attention.png")  # or figure_pixels(figure): (H, W, 3) RGB for a tracker
    write_attention_pngs(model, tokenizers, sentences, outputs, "attention/", 1, device)  # files

One picture per sentence: source subword tokens along the top, output tokens down the side (each
row is the step that produced that token, so the last row is the one that chose </s>), a colour scale
from 0 to the largest weight, and a title that says what is shown: the last decoder layer's
cross-attention, averaged over its heads. Validation logs a few of these to the run's trackers
(TensorBoard, W&B, MLflow) and `translate.py --attention DIR` writes one PNG per sentence; both
come through this module.

Figures are built with matplotlib's object-oriented API on the Agg canvas (no pyplot, no window, no
global backend switch), so they render the same on a headless server as on a laptop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tokenizers import Tokenizer, decoders

from transformer.data.batching import collate_batch
from transformer.model import Transformer
from transformer.tokenization.tokenizer import EOS, TokenizerPair

TITLE = "Cross-attention: last decoder layer, heads averaged"
INCHES_PER_TOKEN = 0.32  # room for one row or column of the heatmap, labels included
MAX_INCHES = 40.0  # a 120-token sentence still gives a picture a viewer can open
PNG_BATCH = 32  # sentences whose attention is computed together by write_attention_pngs
SPACE_MARK = "\u2581"  # "▁" marks a word's leading space in labels, as SentencePiece does


@torch.inference_mode()
def last_layer_cross_attention(
    model: Transformer,
    sources: list[torch.Tensor],
    outputs: list[list[int]],
    device: torch.device,
) -> list[torch.Tensor]:
    """The last decoder layer's cross-attention, averaged over heads, for each sentence.

    `sources` are source ids (no BOS/EOS), `outputs` the translations' ids (no BOS/EOS). The
    decoder reads BOS + output in one teacher-forced pass (one batch for all sentences), so row t
    is the step that predicted output token t, and the extra last row predicted EOS. Returns one
    float tensor (len(output) + 1, len(source)) per sentence, on the CPU; each row sums to 1.
    """
    if not sources:
        return []
    model.eval()
    examples = [
        (src, torch.tensor(out, dtype=torch.long))
        for src, out in zip(sources, outputs, strict=True)
    ]
    batch = collate_batch(examples).to(device)
    memory, src_mask = model.encode(batch.src)  # (B, S, D), (B, 1, 1, S)
    _, weights = model.decode(batch.tgt_in, memory, src_mask, need_weights=True)
    last = weights[-1].float().mean(dim=1).cpu()  # (B, T, S): heads averaged
    return [
        last[i, : len(out) + 1, : len(src)]  # (T_i, S_i): this sentence without padding
        for i, (src, out) in enumerate(zip(sources, outputs, strict=True))
    ]


def token_labels(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """One readable label per subword id: byte-level BPE tokens are turned back into text
    ("Ġdog" -> "▁dog", "Ã¼" -> "ü"), and a word's leading space shows as "▁" for every kind."""
    byte_level = isinstance(tokenizer.decoder, decoders.ByteLevel)
    labels = []
    for token_id in ids:
        token = tokenizer.id_to_token(token_id) or f"<{token_id}>"
        if byte_level:
            token = tokenizer.decoder.decode([token])
        if token.startswith(" "):
            token = SPACE_MARK + token[1:]
        labels.append(token)
    return labels


def attention_figure(
    weights: torch.Tensor,
    source_labels: list[str],
    output_labels: list[str],
    caption: str | None = None,
) -> Figure:
    """A heatmap of `weights` (T, S): source tokens along the top, output tokens down the side.

    `output_labels` are the T - 1 output tokens; "</s>" is added for the last row. `caption` (for
    example the source sentence) goes under the title.
    """
    rows, columns = weights.shape
    row_labels = [*output_labels, EOS]
    if (rows, columns) != (len(row_labels), len(source_labels)):
        raise ValueError(
            f"attention of shape {(rows, columns)} needs {rows - 1} output labels and {columns} "
            f"source labels, got {len(output_labels)} and {len(source_labels)}"
        )
    width = min(MAX_INCHES, 2.5 + INCHES_PER_TOKEN * columns)
    height = min(MAX_INCHES, 2.0 + INCHES_PER_TOKEN * rows)
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg canvas: renders without a display
    axes = figure.add_subplot()
    image = axes.imshow(weights.numpy(), cmap="viridis", vmin=0.0, aspect="auto")
    axes.set_xticks(range(columns), source_labels, rotation=90, fontsize=9)
    axes.set_yticks(range(rows), row_labels, fontsize=9)
    axes.xaxis.tick_top()
    axes.xaxis.set_label_position("top")
    axes.set_xlabel("source tokens")
    axes.set_ylabel("output tokens")
    figure.colorbar(image, ax=axes, label="attention weight", shrink=0.9)
    title = TITLE if caption is None else f"{TITLE}\n{_shorten(caption)}"
    figure.suptitle(title, fontsize=10)
    return figure


def figure_pixels(figure: Figure) -> np.ndarray:
    """The figure drawn on its Agg canvas, as (height, width, 3) uint8 RGB: drawn once, the same
    pixels go to every tracker of a run."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def write_attention_pngs(
    model: Transformer,
    tokenizers: TokenizerPair,
    sentences: list[str],
    outputs: list[list[int]],
    directory: str | Path,
    first_number: int,
    device: torch.device,
    tgt_lang: str | None = None,
) -> list[Path]:
    """One PNG per non-empty sentence, named by its line number: DIR/00001.png, DIR/00002.png, ...

    `outputs` are the translations' ids (the best of each n-best list). `tgt_lang`: the target
    language of a multilingual model, as given to the translator (its >>xx<< tag is then the
    first source token in the picture). Sentences are drawn in
    groups of PNG_BATCH so that a long input file never builds one huge attention tensor.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    max_positions = model.config.max_positions
    numbered = [
        (first_number + i, ids[:max_positions], output)
        for i, (ids, output) in enumerate(
            zip(tokenizers.encode_source(sentences, tgt_lang), outputs, strict=True)
        )
        if ids  # an empty line has nothing to attend to, so it gets no picture
    ]
    written = []
    for start in range(0, len(numbered), PNG_BATCH):
        group = numbered[start : start + PNG_BATCH]
        sources = [torch.tensor(ids, dtype=torch.long) for _, ids, _ in group]
        maps = last_layer_cross_attention(model, sources, [out for *_, out in group], device)
        for (number, ids, output), weights in zip(group, maps, strict=True):
            figure = attention_figure(
                weights,
                token_labels(tokenizers.source, ids),
                token_labels(tokenizers.target, output),
                caption=sentences[number - first_number],
            )
            path = directory / f"{number:05d}.png"
            figure.savefig(path, format="png")
            written.append(path)
    return written


def _shorten(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
