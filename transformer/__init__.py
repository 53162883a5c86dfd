"""A readable, fast encoder-decoder Transformer for neural machine translation.

The map of the package, in the order data flows through it. The flat modules are the core that every
use of a model needs; each folder is one stage. Imports run down this list of floors, never up:
commands/ -> training/, serving/ -> inference/, marian/ -> data/ -> the core with tokenization/
(tools/import_graph.py --check and tests/test_layout.py hold it).

    config.py          one object per run: model, data, training and decoding settings; YAML
    recipes.py         the recipes that come with the package, found by name (--config tiny)
    tokenization/      subword tokenizers trained on the training split, and their fast encoders
    data/              corpora from the hub or local files, several corpora and their mixture,
                       preparation into memory-mapped files, the token-budget batch sampler
    model.py           the paper's Transformer: InputEmbeddings ... ProjectionLayer, the KV cache
    packing.py         position-wise layers on real tokens only
    dropout.py         dropout with masks from random bits (fast on CPUs)
    device.py          device and precision choice, autocast, the C library's memory settings
    checkpoint.py      self-contained checkpoints: atomic save, safe load, averaging
    metrics.py         sacreBLEU BLEU, chrF and TER, perplexity
    inference/         search (greedy, sampling, beam; KV cache), the translator, int8 and packed
                       linear layers, CTranslate2 export, attention heatmaps
    marian/            import of pretrained OPUS-MT / Marian models
    commands/          the command lines: `transformer train|translate|serve|...` (see commands/)
    __main__.py        python -m transformer <subcommand>
    training/          the loop and what only training needs (see training/__init__.py)
    serving/           the HTTP app and what only the server needs (see serving/__init__.py)
"""
