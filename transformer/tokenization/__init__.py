"""Subword tokenization: `tokenizer.py` (the source/target tokenizer pair: BPE, unigram or word
level, trained on the training split, language tags), `word_encoder.py` (byte-level BPE encoding
each distinct word once: the library's ids, faster) and `bpe_trainer.py` (byte-level BPE trained
from counted words: the same tokenizer, faster). It sits on the core's floor: checkpoint.py
imports it, because a checkpoint carries its tokenizers.
"""
