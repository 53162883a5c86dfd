"""Import pretrained OPUS-MT / Marian translation models as checkpoints of this project.

    pip install "transformer[convert]"      # or, in a clone: pip install -e ".[convert]"
    transformer convert marian Helsinki-NLP/opus-mt-en-de opus-mt-en-de.pt   # commands/convert.py

The output is an ordinary checkpoint (config, tokenizers as JSON, weights; step 0): translate.py,
serve.py, `--quantize int8`, the CTranslate2 export, averaging and `train.init_from` take it as
they take one written by train.py. What is read, and from where:
- a Hugging Face `MarianMTModel` (hub name, downloaded into the huggingface_hub cache, or a local
  `save_pretrained` directory): config.json, the weights, source.spm / target.spm and vocab.json
  (target_vocab.json too for models with separate vocabularies);
- a native Marian model: the .npz (its weights and its `special:model.yml` options), the
  vocabulary (.yml or .json; one, or source and target) and the two .spm models.
The readers (`hf.py`, `npz.py`) give the same Hugging Face-named weights to
`weights.py`, which maps them onto this model, and the vocabularies to
`tokenizer.py`. What cannot be converted faithfully is refused in one line (exit status 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformer.checkpoint import save_checkpoint
from transformer.config import Config, DataConfig, TokenizerConfig, config_to_dict
from transformer.marian.hf import model_directory, read_hf_model
from transformer.marian.npz import read_npz_model
from transformer.marian.tokenizer import ConversionError, marian_tokenizer
from transformer.marian.weights import MarianModel, marian_state_dict
from transformer.model import build_transformer
from transformer.tokenization.tokenizer import TokenizerPair

__all__ = ["ConversionError", "convert_hf", "convert_npz", "converted_checkpoint"]


def converted_checkpoint(
    marian: MarianModel,
    source_spm: Path,
    target_spm: Path,
    source_lang: str = "src",
    target_lang: str = "tgt",
    origin: str = "",
) -> dict[str, Any]:
    """The checkpoint payload: config, tokenizers, weights (checked by loading them)."""
    model_config = marian.model_config()
    source = marian_tokenizer(source_spm, marian.source_vocabulary)
    target = marian_tokenizer(target_spm, marian.target_vocabulary)
    try:
        state = marian_state_dict(marian)
    except KeyError as error:
        raise ConversionError(f"the model lacks the weight {error}") from None
    joint = marian.source_vocabulary is marian.target_vocabulary
    config = Config(
        model=model_config,
        data=DataConfig(
            src_lang=source_lang,
            tgt_lang=target_lang,
            tokenizer=TokenizerConfig(
                kind="unigram", vocab_size=model_config.src_vocab_size, joint=joint
            ),
        ),
    )
    model = build_transformer(model_config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ConversionError(f"the weights do not fit the model ({first_line})") from None
    tokenizers = TokenizerPair(source, target, source_eos=True)
    return {
        "config": config_to_dict(config),
        "tokenizers": tokenizers.to_json(),
        "model": model.state_dict(),
        "step": 0,
        "converted_from": origin,
    }


def convert_hf(source: str, output: str | Path) -> dict[str, Any]:
    """`transformer convert marian SOURCE OUT.pt`."""
    directory = model_directory(source)
    marian, tokenizer_config = read_hf_model(directory)
    payload = converted_checkpoint(
        marian,
        directory / "source.spm",
        directory / "target.spm",
        tokenizer_config.get("source_lang") or "src",
        tokenizer_config.get("target_lang") or "tgt",
        origin=source,
    )
    save_checkpoint(payload, output)
    return payload


def convert_npz(
    npz: str | Path,
    output: str | Path,
    vocab: list[str],
    spm: list[str],
    max_positions: int = 512,
) -> dict[str, Any]:
    """`transformer convert marian-npz MODEL.npz OUT.pt --vocab ... --spm ...`."""
    marian = read_npz_model(Path(npz), [Path(v) for v in vocab], max_positions)
    payload = converted_checkpoint(marian, Path(spm[0]), Path(spm[-1]), origin=str(npz))
    save_checkpoint(payload, output)
    return payload
