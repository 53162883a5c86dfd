"""What the speed benchmarks share: their size and data arguments, the Multi30k preparation, and
the implementations they compare (this project's model and MarianMTModel), built at the same sizes."""

from __future__ import annotations

import argparse
import sys
import tempfile
from itertools import islice
from pathlib import Path

import torch

from transformer.config import Config, DataConfig, ModelConfig, SplitsConfig, load_config
from transformer.data.batching import Batch, TokenBatchSampler, make_loader
from transformer.data.loading import EncodedSplit
from transformer.data.prepare import prepare_data
from transformer.model import Transformer, build_transformer
from transformer.tokenization.tokenizer import BOS_ID, EOS_ID, PAD_ID, TokenizerPair
from transformer.training.start import fit_model_to_tokenizers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from random_marian import random_marian  # noqa: E402  (tools/ is not a package)

BENCH_CACHE = Path(tempfile.gettempdir()) / "transformer-bench-prepared"  # reused by later runs
RECIPE = Path(__file__).parent.parent / "configs" / "multi30k_en_de.yaml"
MULTI30K = [  # the recipe on the local copy of Multi30k
    f"data.dataset={Path(__file__).parent.parent.parent / 'shared' / 'data' / 'multi30k'}",
    "data.splits.validation=val",
    "data.splits.test=test_2016_flickr",
    "train.device=cpu",
]


def recipe_model_and_batches(
    count: int,
) -> tuple[Config, Transformer, EncodedSplit, list[Batch]]:
    """The default recipe on local Multi30k, fitted to its tokenizers; its model, initialised with
    the recipe's seed; its prepared training split (prepared once into BENCH_CACHE, as train.py
    would into its run directory); and the first `count` shuffled token batches of that split."""
    config = load_config(str(RECIPE), MULTI30K)
    prepared = prepare_data(config.data, config.model.max_positions, BENCH_CACHE)
    config = fit_model_to_tokenizers(config, prepared.tokenizers)
    torch.manual_seed(config.train.seed)
    model = build_transformer(config.model)
    train = prepared.splits["train"]
    sampler = TokenBatchSampler(
        train.src_lengths, train.tgt_lengths, config.data.max_tokens, shuffle=True, seed=1
    )
    return config, model, train, list(islice(make_loader(train, sampler), count))


def add_size_and_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --splits, --vocab-size and the model sizes, with the defaults of the default recipe."""
    parser.add_argument(
        "--data", default="../shared/data/multi30k", help="dataset path or hub name"
    )
    parser.add_argument("--splits", nargs=3, default=["train", "val", "test_2016_flickr"])
    parser.add_argument("--vocab-size", type=int, default=8000, help="joint BPE vocabulary")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3, help="encoder and decoder layers each")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=1024)
    parser.add_argument("--max-positions", type=int, default=256)


def prepare_corpus(args: argparse.Namespace) -> tuple[TokenizerPair, dict[str, EncodedSplit]]:
    """The encoded splits, with a joint BPE trained on the training split as train.py does."""
    config = DataConfig(dataset=args.data, splits=SplitsConfig(*args.splits), max_length=100)
    config.tokenizer.vocab_size = args.vocab_size
    prepared = prepare_data(config, args.max_positions, BENCH_CACHE)
    return prepared.tokenizers, prepared.splits


def project_model(args: argparse.Namespace, vocab_size: int, dropout: float = 0.1) -> Transformer:
    """This project's model at the sizes in `args`: pre-norm, ReLU, one shared vocabulary, tied
    output projection, no attention dropout."""
    config = ModelConfig(
        src_vocab_size=vocab_size,
        tgt_vocab_size=vocab_size,
        d_model=args.d_model,
        n_heads=args.heads,
        n_encoder_layers=args.layers,
        n_decoder_layers=args.layers,
        d_ff=args.d_ff,
        dropout=dropout,
        attention_dropout=0.0,
        activation="relu",
        norm_placement="pre",
        max_positions=args.max_positions,
        tie_output_embedding=True,
        share_embeddings=True,
    )
    return build_transformer(config)


def marian_model(
    args: argparse.Namespace, vocab_size: int, dropout: float = 0.1
) -> torch.nn.Module:
    """Hugging Face MarianMTModel, randomly initialised, with the sizes in `args` (d_model, layers,
    heads, d_ff, max_positions), one shared vocabulary and this project's special-token ids.
    `dropout` also covers the feed-forward hidden layer, as the project's does; no attention dropout."""
    return random_marian(
        vocab_size,
        d_model=args.d_model,
        layers=args.layers,
        heads=args.heads,
        d_ff=args.d_ff,
        max_positions=args.max_positions,
        activation="relu",
        pad_id=PAD_ID,
        decoder_start_id=BOS_ID,
        eos_id=EOS_ID,
        dropout=dropout,
    )
