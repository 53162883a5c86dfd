"""How often a converted checkpoint's tokenizers agree with Hugging Face's `MarianTokenizer`.

    pip install -e ".[convert]"
    python bench/experiments/marian_tokenizer_agreement.py --model runs/random-opus-mt-en-de \\
        -c runs/random-opus-mt-en-de.pt --data ../shared/data/multi30k

For each file (source side: English val / test; target side: German val / test; and, as the hard
case, German text through the *source* tokenizer, whose shared vocabulary holds German pieces the
English spm lacks): the share of sentences whose ids are identical (</s> included on the source
side), and the share of target sentences whose decoded text is identical.
Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import transformers

from transformer.checkpoint import load_model


def lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the save_pretrained directory")
    parser.add_argument("-c", "--checkpoint", required=True, help="its converted checkpoint")
    parser.add_argument("--data", default="../shared/data/multi30k")
    args = parser.parse_args()

    hf = transformers.MarianTokenizer.from_pretrained(args.model)
    token_of = {i: token for token, i in hf.encoder.items()}
    pair = load_model(args.checkpoint).tokenizers
    data = Path(args.data)
    print("| text | tokenizer | sentences | ids equal | decoded text equal |")
    print("|---|---|---|---|---|")
    for side, files in (
        ("source", ["val.en.gz", "test_2016_flickr.en.gz", "val.de.gz"]),
        ("target", ["val.de.gz", "test_2016_flickr.de.gz"]),
    ):
        tokenizer = getattr(pair, side)
        for name in files:
            texts = lines(data / name)
            if side == "source":
                ours = pair.encode_source(texts)
                theirs = [hf(text)["input_ids"] for text in texts]
            else:
                ours = pair.encode_target(texts)
                theirs = [hf(text_target=text)["input_ids"][:-1] for text in texts]
            theirs_in_our_ids = [[tokenizer.token_to_id(token_of[i]) for i in s] for s in theirs]
            same_ids = sum(a == b for a, b in zip(ours, theirs_in_our_ids, strict=True))
            decoded = "-"
            if side == "target":
                our_text = pair.decode_target(ours)
                hf_text = hf.batch_decode(theirs, skip_special_tokens=True)
                same = sum(a == b for a, b in zip(our_text, hf_text, strict=True))
                decoded = f"{same / len(texts):.2%}"
            print(f"| {name} | {side} | {len(texts)} | {same_ids / len(texts):.2%} | {decoded} |")


if __name__ == "__main__":
    main()
