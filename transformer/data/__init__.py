"""The data pipeline, from text files or the hub to batches of ids.

`loading.py` (which files and splits, hub or local; checks and cleaning), `pairs.py` (sentence
pairs read in chunks: text files, TSV, Arrow, a hub stream), `corpora.py` (several corpora and
directions: training streams, per-direction validation), `mixture.py` (how often each corpus and
direction is drawn per epoch), `prepare.py` (the training split encoded once into memory-mapped
files, reused by runs; `prepared_files.py` reads and checks those files, `cache_lock.py` lets one
process prepare them while the others wait) and `batching.py` (the length-bucketed token-budget
sampler and collate).
"""
