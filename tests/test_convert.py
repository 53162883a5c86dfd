"""Importing OPUS-MT (Marian) models: tiny random MarianMTModels, built and saved here, converted and
compared with Hugging Face's own model and tokenizer (offline; skipped without the convert extra)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

from transformer.checkpoint import load_model  # noqa: E402
from transformer.commands.convert import main  # noqa: E402
from transformer.config import DecodeConfig, load_config  # noqa: E402
from transformer.inference.decoding import translate_ids  # noqa: E402
from transformer.inference.translator import Translator  # noqa: E402
from transformer.marian.convert import ConversionError, convert_hf, convert_npz  # noqa: E402
from transformer.tokenization.tokenizer import EOS_ID, PAD_ID  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent.parent / "tools"))
from random_marian import random_marian  # noqa: E402  (tools/ is not a package)

NUMBERS = Path(__file__).parent.parent / "configs" / "data" / "numbers"
# The fake OPUS-MT model is a multi-target one (its vocabulary has >>de<< and >>fr<<): like every
# model with language tags, it is told the target language at the start of each source.
SENTENCES = [
    f"{('>>de<<', '>>fr<<')[k % 2]} {line}"
    for k, line in enumerate((NUMBERS / "test.en").read_text(encoding="utf-8").splitlines()[:40])
]
TARGETS = (NUMBERS / "test.de").read_text(encoding="utf-8").splitlines()[:40]
EDGE_STRINGS = [
    ">>de<< twenty  one",  # several spaces
    ">>fr<<   seven hundred ",  # leading and trailing spaces
    ">>de<< ｔｗｅｎｔｙ ﬁve",  # NFKC: full-width letters, a ligature
    ">>de<< nine ☃ quark",  # characters no spm has seen
    ">>de<<forty two",  # no space after the tag
    "",  # nothing to translate: needs no tag
]
# Targets are German: with a vocabulary shared by both sides, English text through the German
# tokenizer is where this tokenizer and MarianTokenizer may differ (see marian_tokenizer.py).
TARGET_EDGE_STRINGS = ["ein  und zwanzig", "  sieben hundert ", "ｚｗｅｉ ﬁ", "neun ☃ quark"]
LENGTH = 8  # output tokens before the EOS in the greedy comparisons


@dataclass
class Converted:
    directory: Path  # the save_pretrained directory
    checkpoint: Path
    hf: object  # MarianMTModel, eval mode
    tokenizer: object  # MarianTokenizer


def train_spm(prefix: Path, text: Path) -> Path:
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(prefix),
        vocab_size=60,
        model_type="unigram",
        hard_vocab_limit=False,
        bos_id=-1,
        eos_id=2,
        unk_id=1,
        pad_id=-1,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def normal_pieces(model: Path) -> list[str]:
    processor = spm.SentencePieceProcessor(model_file=str(model))
    return [
        processor.id_to_piece(i)
        for i in range(processor.get_piece_size())
        if not (processor.is_control(i) or processor.is_unknown(i))
    ]


def marian_vocab(*pieces: list[str]) -> dict[str, int]:
    """Marian's order: </s> 0, <unk> 1, the pieces, language tokens, <pad> last."""
    tokens = ["</s>", "<unk>"]
    for piece in [p for side in pieces for p in side] + [">>de<<", ">>fr<<"]:
        if piece not in tokens:
            tokens.append(piece)
    return {token: i for i, token in enumerate([*tokens, "<pad>"])}


def build(tmp: Path, shared: bool) -> Converted:
    """A tiny opus-style MarianMTModel with random weights (LayerNorms and the final bias too:
    their initial values, ones and zeros, would hide mistakes), saved and converted."""
    source_spm = train_spm(tmp / "source", NUMBERS / "train.en")
    target_spm = train_spm(tmp / "target", NUMBERS / "train.de")
    directory = tmp / "hf"
    directory.mkdir()
    if shared:
        vocab = marian_vocab(normal_pieces(source_spm), normal_pieces(target_spm))
        target_vocab = vocab
        (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    else:
        vocab = marian_vocab(normal_pieces(source_spm))
        target_vocab = marian_vocab(normal_pieces(target_spm))
        (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (directory / "target_vocab.json").write_text(json.dumps(target_vocab), encoding="utf-8")
    tokenizer = transformers.MarianTokenizer(
        str(source_spm),
        str(target_spm),
        str(directory / "vocab.json"),
        target_vocab_file=None if shared else str(directory / "target_vocab.json"),
        separate_vocabs=not shared,
        source_lang="en",
        target_lang="de",
    )
    tokenizer.save_pretrained(directory)
    hf = random_marian(
        len(vocab),
        target_vocab_size=None if shared else len(target_vocab),
        d_model=16,
        layers=2,
        heads=2,
        d_ff=32,
        max_positions=64,
        init_std=0.4,  # large enough that outputs depend on the source, not only on the bias
        seed=0,
    ).eval()
    config = hf.config
    with torch.no_grad():
        for module in hf.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
        hf.final_logits_bias.normal_(0.0, 0.5)
        # What Hugging Face's own Marian converter writes: <pad> is a zero row with no bias.
        hf.final_logits_bias[0, config.decoder_start_token_id] = 0.0
        hf.model.decoder.embed_tokens.weight[config.decoder_start_token_id] = 0.0
        hf.model.encoder.embed_tokens.weight[config.pad_token_id] = 0.0
        hf.lm_head.weight[config.decoder_start_token_id] = 0.0
    hf.save_pretrained(directory)
    checkpoint = tmp / "converted.pt"
    convert_hf(str(directory), checkpoint)
    return Converted(directory, checkpoint, hf, tokenizer)


@pytest.fixture(scope="module", params=["shared", "separate"])
def converted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Converted:
    return build(tmp_path_factory.mktemp(request.param), shared=request.param == "shared")


def to_ours(ids: list[int], side: str, loaded: object, converted: Converted) -> list[int]:
    """Marian ids -> ours, through the token strings (independent of the importer's mapping)."""
    hf = converted.tokenizer
    vocab = hf.target_encoder if side == "target" and hf.separate_vocabs else hf.encoder
    token_of = {i: token for token, i in vocab.items()}
    tokenizer = getattr(loaded.tokenizers, side)
    return [tokenizer.token_to_id(token_of[i]) for i in ids]


def test_tokenizers_match_marian_tokenizer(converted: Converted) -> None:
    loaded = load_model(converted.checkpoint)
    hf_tok = converted.tokenizer
    texts = SENTENCES + EDGE_STRINGS
    ours = loaded.tokenizers.encode_source(texts)
    agree = 0
    for text, our_ids in zip(texts, ours, strict=True):
        hf_ids = hf_tok(text)["input_ids"]
        agree += our_ids == to_ours(hf_ids, "source", loaded, converted)
        assert our_ids[-1] == EOS_ID  # model.source_eos
    assert agree == len(texts)  # every sentence, edge strings included
    targets = TARGETS + TARGET_EDGE_STRINGS
    our_targets = loaded.tokenizers.encode_target(targets)
    for text, our_ids in zip(targets, our_targets, strict=True):
        hf_ids = hf_tok(text_target=text)["input_ids"]
        assert our_ids + [EOS_ID] == to_ours(hf_ids, "target", loaded, converted), text
        decoded = hf_tok.decode(hf_ids, skip_special_tokens=True)
        assert loaded.tokenizers.decode_target([our_ids])[0] == decoded, text


def marian_batch(converted: Converted) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A padded batch for HF, and the same batch in our ids."""
    loaded = load_model(converted.checkpoint)
    texts, targets = SENTENCES[:6], TARGETS[:6]
    batch = converted.tokenizer(texts, text_target=targets, padding=True, return_tensors="pt")
    src = loaded.tokenizers.encode_source(texts)
    tgt = loaded.tokenizers.encode_target(targets)
    src = torch.nn.utils.rnn.pad_sequence([torch.tensor(s) for s in src], True, PAD_ID)
    tgt_in = torch.nn.utils.rnn.pad_sequence([torch.tensor([2, *t]) for t in tgt], True, PAD_ID)
    return batch, src, tgt_in


def test_teacher_forced_logits_match(converted: Converted) -> None:
    loaded = load_model(converted.checkpoint)
    batch, src, tgt_in = marian_batch(converted)
    labels = batch["labels"]
    pad = converted.hf.config.pad_token_id
    labels = labels.masked_fill(labels == -100, pad)
    decoder_input = converted.hf.prepare_decoder_input_ids_from_labels(labels=labels)
    with torch.no_grad():
        hf_logits = converted.hf(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_input,
        ).logits  # (B, T, V_marian)
        our_logits = loaded.model(src, tgt_in)  # (B, T, V_marian + 1)
    rows = torch.tensor(loaded_rows(converted))  # our id -> Marian id
    real = tgt_in != PAD_ID  # (B, T)
    ours_in_marian_order = torch.empty_like(hf_logits)
    ours_in_marian_order[..., rows[4:]] = our_logits[..., 4:]
    for our_id, marian_id in enumerate(rows[:4].tolist()):
        if our_id != 2:  # our <s> copies Marian's <pad> column
            ours_in_marian_order[..., marian_id] = our_logits[..., our_id]
    difference = (ours_in_marian_order - hf_logits)[real].abs().max().item()
    assert difference <= 1e-4, difference


def loaded_rows(converted: Converted) -> list[int]:
    from transformer.marian.hf import read_hf_model

    marian, _ = read_hf_model(converted.directory)
    return marian.target_vocabulary.our_rows


def hf_greedy(converted: Converted, texts: list[str]) -> list[list[int]]:
    batch = converted.tokenizer(texts, padding=True, return_tensors="pt")
    pad = converted.hf.config.pad_token_id
    with torch.no_grad():
        out = converted.hf.generate(
            **batch,
            num_beams=1,
            do_sample=False,
            max_new_tokens=LENGTH + 1,
            min_new_tokens=0,
            bad_words_ids=[[pad]],
            forced_eos_token_id=None,
        )
    outputs = []
    for row in out[:, 1:].tolist():
        tokens = []
        for token in row:
            if token in (0, pad):  # </s> (or padding after it)
                break
            tokens.append(token)
        outputs.append(tokens[:LENGTH])
    return outputs


def test_greedy_decoding_equals_generate_and_the_cache_equals_full_forward(
    converted: Converted,
) -> None:
    loaded = load_model(converted.checkpoint)
    texts = SENTENCES[:5]
    expected = [to_ours(ids, "target", loaded, converted) for ids in hf_greedy(converted, texts)]
    sources = [torch.tensor(ids) for ids in loaded.tokenizers.encode_source(texts)]
    decode = DecodeConfig(beam_size=1, max_len_a=0.0, max_len_b=LENGTH)
    got = [nbest[0].tokens for nbest in translate_ids(loaded.model, sources, decode, "cpu")]
    assert got == expected
    assert len({tuple(tokens) for tokens in got}) > 1  # outputs that depend on the source
    # The incremental (KV-cached) logits of that output equal one full forward pass.
    src = sources[0][None]
    tgt = torch.tensor([[2, *got[0]]])
    with torch.no_grad():
        full = loaded.model(src, tgt)
        memory, src_mask = loaded.model.encode(src)
        cache = loaded.model.new_cache()
        steps = [
            loaded.model.project(loaded.model.decode(tgt[:, t : t + 1], memory, src_mask, cache)[0])
            for t in range(tgt.size(1))
        ]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_translate_py_and_ctranslate2_export_agree_with_hf(
    converted: Converted, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import translate

    texts = SENTENCES[:4]
    hf_texts = converted.tokenizer.batch_decode(
        [ids for ids in hf_greedy(converted, texts)], skip_special_tokens=True
    )
    loaded = load_model(converted.checkpoint)
    translator = Translator(loaded, DecodeConfig(max_len_a=0.0, max_len_b=LENGTH), "cpu")
    # The ids are equal (the greedy test); the strings up to spaces at their ends: a random model
    # outputs runs of lone "▁" pieces, which MarianTokenizer's decode strips and ours keeps after
    # the first (spm never encodes such runs, so trained models hardly ever output them).
    ours = [nbest[0].text for nbest in translator.translate(texts)]
    assert [text.strip() for text in ours] == hf_texts
    assert any(hf_texts)
    # The CLI on the converted file (its own length limit): the same as the library call.
    assert translate.main(["-c", str(converted.checkpoint), *texts]) == 0
    cli = capsys.readouterr().out.splitlines()
    expected = [
        nbest[0].text for nbest in Translator(loaded, loaded.config.decode, "cpu").translate(texts)
    ]
    assert cli == expected

    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformer.inference.export import export_ctranslate2

    exported = export_ctranslate2(converted.checkpoint, tmp_path / "ct2")
    engine = ctranslate2.Translator(str(exported), device="cpu")
    tokens = [
        loaded.tokenizers.source.encode(text, add_special_tokens=False).tokens for text in texts
    ]
    results = engine.translate_batch(
        tokens, beam_size=1, max_decoding_length=LENGTH, suppress_sequences=[["<pad>"], ["<s>"]]
    )
    target = loaded.tokenizers.target
    ct2_texts = [
        loaded.tokenizers.decode_target([[target.token_to_id(t) for t in r.hypotheses[0]]])[0]
        for r in results
    ]
    assert ct2_texts == ours


def test_the_server_int8_and_averaging_take_the_converted_checkpoint(converted: Converted) -> None:
    if not converted.hf.config.share_encoder_decoder_embeddings:
        pytest.skip("one vocabulary layout is enough for the server")
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from transformer.checkpoint import average_checkpoints
    from transformer.serving.app import ServeSettings, create_app

    texts = SENTENCES[:3]
    hf_texts = converted.tokenizer.batch_decode(
        hf_greedy(converted, texts), skip_special_tokens=True
    )
    loaded = load_model(converted.checkpoint)
    translator = Translator(loaded, DecodeConfig(max_len_a=0.0, max_len_b=LENGTH), "cpu")
    with TestClient(create_app(loaded, translator, ServeSettings(name="opus"))) as client:
        served = client.post("/translate", json={"text": texts}).json()["translations"]
    assert [text.strip() for text in served] == hf_texts  # the server appends </s> too
    int8 = Translator(loaded, translator.decode_config, "cpu", quantize="int8")
    assert len(int8.translate(texts)) == len(texts)
    averaged = average_checkpoints([converted.checkpoint, converted.checkpoint])
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(averaged["model"][name], tensor), name


def write_npz(converted: Converted, path: Path) -> tuple[list[str], list[str]]:
    """The HF model's weights under native Marian names (what HF's converter reads), and Marian
    vocabularies (no <pad>: the importer adds it, as HF's converter does)."""
    state = {k: v.detach().numpy() for k, v in converted.hf.state_dict().items()}
    config = converted.hf.config
    shared = config.share_encoder_decoder_embeddings
    arrays: dict[str, np.ndarray] = {}
    if shared:
        arrays["Wemb"] = state["model.shared.weight"][:-1]
    else:
        arrays["encoder_Wemb"] = state["model.encoder.embed_tokens.weight"][:-1]
        arrays["decoder_Wemb"] = state["model.decoder.embed_tokens.weight"][:-1]
    if not config.tie_word_embeddings:
        arrays["decoder_ff_logit_out_W"] = state["lm_head.weight"][:-1].T
    arrays["decoder_ff_logit_out_b"] = state["final_logits_bias"][:, :-1]
    letters = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "out_proj": "o"}
    for side, depth in (("encoder", 2), ("decoder", 2)):
        for i in range(depth):
            hf, marian = f"model.{side}.layers.{i}", f"{side}_l{i + 1}"
            blocks = [("self_attn", "self", "self_attn_layer_norm")]
            if side == "decoder":
                blocks.append(("encoder_attn", "context", "encoder_attn_layer_norm"))
            for hf_block, block, norm in blocks:
                for projection, letter in letters.items():
                    arrays[f"{marian}_{block}_W{letter}"] = state[
                        f"{hf}.{hf_block}.{projection}.weight"
                    ].T
                    arrays[f"{marian}_{block}_b{letter}"] = state[
                        f"{hf}.{hf_block}.{projection}.bias"
                    ][None]
                arrays[f"{marian}_{block}_Wo_ln_scale"] = state[f"{hf}.{norm}.weight"][None]
                arrays[f"{marian}_{block}_Wo_ln_bias"] = state[f"{hf}.{norm}.bias"][None]
            for n in ("1", "2"):
                arrays[f"{marian}_ffn_W{n}"] = state[f"{hf}.fc{n}.weight"].T
                arrays[f"{marian}_ffn_b{n}"] = state[f"{hf}.fc{n}.bias"][None]
            arrays[f"{marian}_ffn_ffn_ln_scale"] = state[f"{hf}.final_layer_norm.weight"][None]
            arrays[f"{marian}_ffn_ffn_ln_bias"] = state[f"{hf}.final_layer_norm.bias"][None]
    options = {
        "type": "transformer",
        "dim-emb": 16,
        "enc-depth": 2,
        "dec-depth": 2,
        "transformer-heads": 2,
        "transformer-dim-ffn": 32,
        "transformer-ffn-activation": "swish",
        "transformer-preprocess": "",
        "transformer-postprocess": "dan",
        "transformer-postprocess-emb": "d",
    }
    text = yaml.safe_dump(options).encode() + b"\0"
    arrays["special:model.yml"] = np.frombuffer(text, dtype=np.int8)
    np.savez(path, **arrays)
    vocab_files = ["vocab.json"] if shared else ["vocab.json", "target_vocab.json"]
    written = []
    for name in vocab_files:
        vocab = json.loads((converted.directory / name).read_text(encoding="utf-8"))
        vocab.pop("<pad>")
        yml = path.parent / name.replace(".json", ".yml")
        yml.write_text(yaml.safe_dump(vocab, allow_unicode=True), encoding="utf-8")
        written.append(str(yml))
    return written, [
        str(converted.directory / "source.spm"),
        str(converted.directory / "target.spm"),
    ]


def test_npz_imports_to_the_same_weights_as_the_hf_path(
    converted: Converted, tmp_path: Path
) -> None:
    vocab, spms = write_npz(converted, tmp_path / "model.npz")
    payload = convert_npz(
        tmp_path / "model.npz", tmp_path / "npz.pt", vocab, spms, max_positions=64
    )
    reference = torch.load(converted.checkpoint, weights_only=True)
    assert payload["model"].keys() == reference["model"].keys()
    for name, tensor in reference["model"].items():
        assert torch.equal(payload["model"][name], tensor), name
    assert payload["tokenizers"] == reference["tokenizers"]


def test_a_hub_name_is_read_from_the_huggingface_hub_cache(
    converted: Converted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real hub path (snapshot_download), offline, on a cache laid out as huggingface_hub
    lays it out; and one line when the model is not there."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--opus-mt-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in converted.directory.iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    payload = convert_hf("tiny-org/opus-mt-tiny", tmp_path / "hub.pt")
    reference = torch.load(converted.checkpoint, weights_only=True)
    for name, tensor in reference["model"].items():
        assert torch.equal(payload["model"][name], tensor), name
    with pytest.raises(ConversionError, match="HF_HUB_OFFLINE=1 is set"):
        convert_hf("tiny-org/not-downloaded", tmp_path / "missing.pt")


def test_unsupported_models_are_refused_in_one_line(
    converted: Converted, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = json.loads((converted.directory / "config.json").read_text())
    broken = tmp_path / "no_scale"
    broken.mkdir()
    for path in converted.directory.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "config.json").write_text(json.dumps({**config, "scale_embedding": False}))
    assert main(["marian", str(broken), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err
    assert "scale_embedding=False" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.pt").exists()
    assert main(["marian", str(tmp_path / "missing" / "dir"), str(tmp_path / "out.pt")]) == 2
    with pytest.raises(ConversionError, match="right-to-left"):
        from transformer.marian.npz import check_npz_options

        check_npz_options({"type": "transformer", "right-left": True})


def test_init_from_starts_at_hf_loss_learns_and_resumes_exactly(
    converted: Converted, tmp_path: Path
) -> None:
    if converted.hf.config.share_encoder_decoder_embeddings is False:
        pytest.skip("one vocabulary layout is enough for the training path")
    from transformer.training.loop import train
    from transformer.training.loss import batch_loss_sum
    from transformer.training.start import start_run

    recipe = tmp_path / "finetune.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model": {"dropout": 0.0},
                "data": {
                    "dataset": str(NUMBERS),
                    "splits": {"validation": "val"},
                    "max_tokens": 512,
                },
                "train": {
                    "init_from": str(converted.checkpoint),
                    "label_smoothing": 0.0,
                    "lr": 3e-3,
                    "warmup_steps": 1,
                    "device": "cpu",
                    "threads": 1,
                    "precision": "fp32",
                    "validate_every": 6,
                    "log_every": 1,
                    "num_samples": 0,
                },
                "decode": {"max_len_a": 0.0, "max_len_b": 6},
            }
        )
    )
    config = load_config(recipe, [f"train.run_dir={tmp_path / 'first'}"])
    run = start_run(config)
    assert run.config.model.activation == "swish" and run.config.model.source_eos
    batch = next(iter(run.loader))
    last_real = (batch.src != PAD_ID).sum(dim=1) - 1  # (B,): collate pads after the </s>
    assert (batch.src[torch.arange(batch.src.size(0)), last_real] == EOS_ID).all()
    with torch.no_grad():
        ours = batch_loss_sum(
            run.model.token_states,
            run.model.projection.linear,
            batch.src,
            batch.tgt_in,
            batch.labels,
            0.0,
        )
    ours = ours.item() / batch.n_tgt_tokens
    # The same batch in Marian's ids, through Hugging Face's own loss.
    marian_ids = {i: mid for i, mid in enumerate(loaded_rows(converted))}
    pad = converted.hf.config.pad_token_id
    src = batch.src.clone().apply_(lambda i: marian_ids[i])
    labels = batch.labels.clone().apply_(lambda i: marian_ids[i])
    labels[batch.labels == PAD_ID] = -100
    with torch.no_grad():
        hf_loss = converted.hf(input_ids=src, attention_mask=src != pad, labels=labels).loss.item()
    assert abs(ours - hf_loss) <= 1e-4, (ours, hf_loss)

    def last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
        return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]

    straight = train(load_config(recipe, [f"train.run_dir={tmp_path / 's'}", "train.max_steps=12"]))
    first = load_config(recipe, [f"train.run_dir={tmp_path / 'r'}", "train.max_steps=6"])
    train(first)
    train(
        load_config(recipe, [f"train.run_dir={tmp_path / 'r'}", "train.max_steps=12"]), resume=True
    )
    split, whole = last_weights(tmp_path / "r"), last_weights(tmp_path / "s")
    for name in whole:
        assert torch.equal(split[name], whole[name]), name
    assert straight.last_validation.loss < hf_loss  # it learned (validation vs the start)


def test_init_from_refuses_a_different_architecture(converted: Converted, tmp_path: Path) -> None:
    from transformer.config import ConfigError
    from transformer.training.init_from import initial_model_config

    config = load_config(
        None, [f"train.init_from={converted.checkpoint}", "model.d_model=32", "model.dropout=0.3"]
    )
    payload = torch.load(converted.checkpoint, weights_only=True)
    with pytest.raises(ConfigError, match="model.d_model is 32 here but 16"):
        initial_model_config(config, payload)
    config = load_config(None, [f"train.init_from={converted.checkpoint}", "model.dropout=0.3"])
    merged = initial_model_config(config, payload).model
    assert (merged.d_model, merged.dropout, merged.activation) == (16, 0.3, "swish")


@pytest.mark.skipif(
    not os.environ.get("OPUS_MT_DIR"), reason="set OPUS_MT_DIR to a downloaded opus-mt-en-de"
)
def test_a_real_opus_mt_model(tmp_path: Path) -> None:
    """Opt-in: OPUS_MT_DIR=path/to/opus-mt-en-de (save_pretrained or hub snapshot directory)."""
    directory = Path(os.environ["OPUS_MT_DIR"])
    convert_hf(str(directory), tmp_path / "opus.pt")
    loaded = load_model(tmp_path / "opus.pt")
    translator = Translator(loaded, DecodeConfig(beam_size=1), "cpu")
    ours = translator.translate(["I am a small frog."])[0][0].text
    tokenizer = transformers.MarianTokenizer.from_pretrained(directory)
    hf = transformers.MarianMTModel.from_pretrained(directory).eval()
    out = hf.generate(**tokenizer(["I am a small frog."], return_tensors="pt"), num_beams=1)
    assert ours == tokenizer.decode(out[0], skip_special_tokens=True)
