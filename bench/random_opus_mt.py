"""An OPUS-MT-shaped MarianMTModel with random weights, saved like a hub download, for trying the
import -> translate -> fine-tune path where the hub cannot be reached.

    pip install -e ".[convert]"
    python bench/random_opus_mt.py --data ../shared/data/multi30k --out runs/random-opus-mt-en-de
    transformer convert marian runs/random-opus-mt-en-de runs/random-opus-mt-en-de.pt
    python train.py --config configs/finetune_multi30k.yaml \\
        train.init_from=runs/random-opus-mt-en-de.pt train.lr=1e-3 train.max_steps=300 \\
        data.dataset=../shared/data/multi30k data.splits.validation=val \\
        data.splits.test=test_2016_flickr

What it writes is what `save_pretrained` writes for an OPUS-MT model: config.json and the weights,
source.spm / target.spm (SentencePiece unigram models trained here on the Multi30k training text,
English and German), vocab.json (one vocabulary shared by both sides, in Marian's id order:
</s> 0, <unk> 1, the pieces, <pad> last) and the tokenizer's config. The architecture is
opus-mt's (post-norm, swish, scaled and tied embeddings, final_logits_bias) at a size that trains
on a CPU; the weights are Hugging Face's random initialisation, so the fine-tuning run it feeds
shows that the loop works on a converted model, not what a pretrained model reaches.
Prints what it wrote; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import sentencepiece
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from random_marian import random_marian  # noqa: E402  (tools/ is not a package)


def train_spm(text_file: Path, prefix: Path, vocab_size: int) -> Path:
    sentencepiece.SentencePieceTrainer.train(
        input=str(text_file),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        bos_id=-1,
        eos_id=2,
        unk_id=1,
        pad_id=-1,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def pieces(model: Path) -> list[str]:
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model))
    return [
        processor.id_to_piece(i)
        for i in range(processor.get_piece_size())
        if not (processor.is_control(i) or processor.is_unknown(i))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/multi30k", help="Multi30k raw text")
    parser.add_argument("--out", default="runs/random-opus-mt-en-de", help="directory to write")
    parser.add_argument("--vocab-size", type=int, default=4000, help="pieces of each spm model")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        models = {}
        for lang in ("en", "de"):
            text = Path(scratch) / f"train.{lang}"
            with gzip.open(Path(args.data) / f"train.{lang}.gz", "rt", encoding="utf-8") as f:
                text.write_text(f.read(), encoding="utf-8")
            models[lang] = train_spm(text, Path(scratch) / lang, args.vocab_size)
        tokens = ["</s>", "<unk>"]
        seen = set(tokens)
        for piece in pieces(models["en"]) + pieces(models["de"]):
            if piece not in seen:
                seen.add(piece)
                tokens.append(piece)
        tokens.append("<pad>")
        (out / "vocab.json").write_text(
            json.dumps({token: i for i, token in enumerate(tokens)}, ensure_ascii=False),
            encoding="utf-8",
        )
        tokenizer = transformers.MarianTokenizer(
            str(models["en"]),
            str(models["de"]),
            str(out / "vocab.json"),
            source_lang="en",
            target_lang="de",
        )
        tokenizer.save_pretrained(out)

    model = random_marian(
        len(tokens),
        d_model=args.d_model,
        layers=args.layers,
        heads=args.heads,
        d_ff=args.d_ff,
        forced_eos_id=0,
        dropout=0.1,  # MarianConfig's defaults, which fine-tuning the saved model would use
        activation_dropout=0.0,
        seed=args.seed,
    )
    model.save_pretrained(out)
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"wrote {out}: vocabulary {len(tokens)}, d_model {args.d_model}, {args.layers}+{args.layers} layers, {parameters / 1e6:.1f}M parameters"
    )


if __name__ == "__main__":
    main()
