"""Import of pretrained OPUS-MT / Marian models: `convert.py` (the import itself) reads them with
`hf.py` (a Hugging Face MarianMTModel) or `npz.py` (Marian's native .npz), maps the weights with
`weights.py` and the SentencePiece vocabularies with `tokenizer.py`. Needs the [convert] extra.
"""
