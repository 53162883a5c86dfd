"""Data pipeline statistics: load, tokenizer training and encoding time, token counts, batch padding.

    python bench/experiments/data_stats.py --data ../shared/data/multi30k  # Multi30k en->de on disk

Padding efficiency counts tokens the way TokenBatchSampler budgets them: real = source tokens +
target tokens + 1 (BOS/EOS) per pair; padded = B * longest source + B * (longest target + 1) per batch.
"""

from __future__ import annotations

import argparse
import time

from transformer.config import DataConfig, SplitsConfig, TokenizerConfig
from transformer.data.batching import TokenBatchSampler
from transformer.data.loading import ROLES, encode_split, load_corpus
from transformer.tokenization.tokenizer import train_tokenizers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default="../shared/data/multi30k", help="dataset path or hub name"
    )
    parser.add_argument("--src", default="en")
    parser.add_argument("--tgt", default="de")
    parser.add_argument("--splits", nargs=3, default=["train", "val", "test_2016_flickr"])
    parser.add_argument("--kind", default="bpe", choices=["bpe", "wordlevel"])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--separate", action="store_true", help="separate vocabularies")
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--max-positions", type=int, default=256)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = DataConfig(
        dataset=args.data,
        src_lang=args.src,
        tgt_lang=args.tgt,
        splits=SplitsConfig(*args.splits),
        max_tokens=args.max_tokens,
        max_length=args.max_length,
        tokenizer=TokenizerConfig(
            kind=args.kind, vocab_size=args.vocab_size, joint=not args.separate
        ),
    )
    start = time.perf_counter()
    texts = load_corpus(config)
    load_s = time.perf_counter() - start

    start = time.perf_counter()
    tokenizers = train_tokenizers(texts["train"].source, texts["train"].target, config.tokenizer)
    train_s = time.perf_counter() - start

    start = time.perf_counter()
    splits = {
        role: encode_split(
            texts[role],
            tokenizers,
            max_length=config.max_length if role == "train" else None,
            max_positions=args.max_positions,
            drop=role == "train",
            name=role,
        )
        for role in ROLES
    }
    encode_s = time.perf_counter() - start

    vocab = (
        f"{tokenizers.src_vocab_size} joint"
        if tokenizers.joint
        else f"{tokenizers.src_vocab_size} src / {tokenizers.tgt_vocab_size} tgt"
    )
    rows = [
        ("dataset", f"{args.data} ({args.src}->{args.tgt})"),
        ("pairs train / validation / test", " / ".join(str(len(splits[r])) for r in ROLES)),
        ("load corpus", f"{load_s:.2f} s"),
        (f"train tokenizer ({args.kind})", f"{train_s:.2f} s"),
        ("encode 3 splits", f"{encode_s:.2f} s"),
        ("vocabulary", vocab),
    ]
    for role in ROLES:
        split = splits[role]
        src_mean = split.src_lengths.float().mean().item()
        tgt_mean = split.tgt_lengths.float().mean().item()
        rows.append(
            (f"mean tokens/sentence {role} (src / tgt)", f"{src_mean:.2f} / {tgt_mean:.2f}")
        )

    train = splits["train"]
    for shuffle in (True, False):
        sampler = TokenBatchSampler(
            train.src_lengths, train.tgt_lengths, args.max_tokens, shuffle=shuffle
        )
        real = padded = 0
        sizes = []
        for batch in sampler:
            src, tgt = train.src_lengths[batch], train.tgt_lengths[batch] + 1  # (B,), (B,)
            real += int(src.sum() + tgt.sum())
            padded += len(batch) * int(src.max() + tgt.max())
            sizes.append(len(batch))
        label = "shuffled" if shuffle else "length order"
        rows.append(
            (f"train batches/epoch @ {args.max_tokens} tokens ({label})", f"{len(sampler)}")
        )
        rows.append((f"padding efficiency ({label})", f"{real / padded:.3f}"))
        rows.append((f"mean sentences/batch ({label})", f"{sum(sizes) / len(sizes):.1f}"))

    width = max(len(name) for name, _ in rows)
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  {'-' * 30}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
