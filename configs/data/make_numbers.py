"""Write the tiny English-German corpus in configs/data/numbers/: numbers spelled out in words.

A real language pair small enough to train on in seconds: the model must learn German's
reordered tens ("twenty-one" -> "einundzwanzig") and a few sentence frames. Deterministic, so the
shipped files can be regenerated exactly:  python configs/data/make_numbers.py
"""

from __future__ import annotations

import random
from pathlib import Path

EN_UNITS = "zero one two three four five six seven eight nine".split()
EN_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
DE_UNITS = "null eins zwei drei vier fünf sechs sieben acht neun".split()
DE_TEENS = "zehn elf zwölf dreizehn vierzehn fünfzehn sechzehn siebzehn achtzehn neunzehn".split()
DE_TENS = "_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig".split()
FRAMES = [
    ("{n}", "{n}"),
    ("I see {n} birds .", "Ich sehe {n} Vögel ."),
    ("There are {n} people in the park .", "Im Park sind {n} Menschen ."),
    ("The train leaves in {n} minutes .", "Der Zug fährt in {n} Minuten ab ."),
]


def english(n: int) -> str:
    if n < 10:
        return EN_UNITS[n]
    if n < 20:
        return EN_TEENS[n - 10]
    if n < 100:
        tens, unit = divmod(n, 10)
        return EN_TENS[tens] + (f"-{EN_UNITS[unit]}" if unit else "")
    hundreds, rest = divmod(n, 100)
    return f"{EN_UNITS[hundreds]} hundred" + (f" and {english(rest)}" if rest else "")


def german(n: int) -> str:
    if n < 10:
        return DE_UNITS[n]
    if n < 20:
        return DE_TEENS[n - 10]
    if n < 100:
        tens, unit = divmod(n, 10)
        if not unit:
            return DE_TENS[tens]
        return ("ein" if unit == 1 else DE_UNITS[unit]) + "und" + DE_TENS[tens]
    hundreds, rest = divmod(n, 100)
    prefix = "ein" if hundreds == 1 else DE_UNITS[hundreds]
    return prefix + "hundert" + (german(rest) if rest else "")


def main() -> None:
    rng = random.Random(0)
    pairs = []
    for n in range(1000):
        en_frame, de_frame = rng.choice(FRAMES)
        pairs.append((en_frame.format(n=english(n)), de_frame.format(n=german(n))))
    rng.shuffle(pairs)
    splits = {"val": pairs[:60], "test": pairs[60:120], "train": pairs[120:]}
    directory = Path(__file__).parent / "numbers"
    directory.mkdir(exist_ok=True)
    for split, split_pairs in splits.items():
        for index, lang in enumerate(("en", "de")):
            lines = [pair[index] for pair in split_pairs]
            (directory / f"{split}.{lang}").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
