"""A readable, fast encoder-decoder Transformer for neural machine translation.

The map of the package, in the order data flows through it. The core (this folder) is what every
use of a model needs; `training/` and `serving/` are the two outer layers. The core never imports
them, and they never import each other (tests/test_layout.py checks it).

    config.py          one object per run: model, data, training and decoding settings; YAML
    data.py            corpora from the hub or local files: which files and splits, checks, cleaning
    pairs.py           sentence pairs read in chunks (text files, TSV, Arrow, a hub stream)
    corpora.py         several corpora and directions: training streams, per-direction validation
    prepare.py         the training split encoded once into memory-mapped files, reused by runs
    tokenizer.py       subword tokenizers (BPE, unigram, word level) trained on the training split
    word_encoder.py    byte-level BPE encoding a distinct word once: the library's ids, faster
    bpe_trainer.py     byte-level BPE trained from counted words: the same tokenizer, faster
    batching.py        the length-bucketed token-budget sampler and collate (no fixed padding)
    mixture.py         how often each corpus and direction is drawn per epoch (weights, temperature)
    model.py           the paper's Transformer: InputEmbeddings ... ProjectionLayer, the KV cache
    packing.py         position-wise layers on real tokens only
    dropout.py         dropout with masks from random bits (fast on CPUs)
    device.py          device and precision choice, autocast
    checkpoint.py      self-contained checkpoints: atomic save, safe load, averaging
    metrics.py         sacreBLEU BLEU and chrF, perplexity
    decoding.py        greedy search, sampling and beam search over ids (batched, KV cache)
    next_token.py      one search step's scores from a model or an ensemble, and the search rules
    translator.py      text in, text out over loaded checkpoints
    quantize.py        int8 linear layers for CPU inference
    onednn_linear.py   float32 linear layers through oneDNN, weights packed once (CPU inference)
    export.py          export to CTranslate2 (python -m transformer.export)
    attention_plot.py  labelled cross-attention heatmaps
    convert.py         import OPUS-MT / Marian models (python -m transformer.convert), reading them
                       with marian_hf.py (Hugging Face) or marian_npz.py (native .npz), mapping
                       weights with marian_weights.py and tokenizers with marian_tokenizer.py
    cli.py             what the command lines share: exit codes, decoding options, input checks
    training/          the loop and what only training needs (see training/__init__.py)
    serving/           the HTTP app and what only the server needs (see serving/__init__.py)
"""
