"""From a trained model to translations: `decoding.py` (greedy search, sampling and beam search
over ids; batched, KV cache), `next_token.py` (one search step's scores from a model or an
ensemble, and the search rules), `translator.py` (text in, text out over loaded checkpoints),
`quantize.py` (int8 linear layers for CPU inference), `onednn_linear.py` (float32 linear layers
through oneDNN, weights packed once), `export.py` (export to CTranslate2),
`ctranslate2_engine.py` (decoding with the exported model: `--engine ctranslate2`) and
`attention_plot.py` (labelled cross-attention heatmaps).
"""
