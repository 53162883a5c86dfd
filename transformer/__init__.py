"""A readable, fast encoder-decoder Transformer for neural machine translation.

The modules, in the order data flows through them: `config` (one object per run), `data` and
`tokenizer` (corpus to batches), `model` (the paper's Transformer), `training` (the loop),
`decoding` (greedy and beam search), `checkpoint` (self-contained save/load) and `metrics`.
"""
