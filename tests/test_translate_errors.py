"""translate.py on hostile input: bad bytes, bad paths, bad devices, bad checkpoints. Each ends in
one clear line (or, with --errors replace, a translation), never a traceback, and the output keeps
one line per input line."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import threading
from pathlib import Path
from unittest import mock

import pytest
import torch
from helpers import tiny_model_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformer.checkpoint import LoadedModel, load_model, save_checkpoint
from transformer.commands import translate
from transformer.config import Config, TokenizerConfig, config_to_dict
from transformer.model import build_transformer
from transformer.tokenization.tokenizer import PAD_ID, train_tokenizers

NUMBERS = Path(__file__).parent.parent / "configs" / "data" / "numbers"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model with real tokenizers: what it says does not matter here, only
    that every input line gets one output line."""
    source = (NUMBERS / "train.en").read_text(encoding="utf-8").splitlines()
    target = (NUMBERS / "train.de").read_text(encoding="utf-8").splitlines()
    tokenizers = train_tokenizers(source, target, TokenizerConfig(vocab_size=260))
    model_config = tiny_model_config(
        src_vocab_size=tokenizers.src_vocab_size,
        tgt_vocab_size=tokenizers.tgt_vocab_size,
        pad_id=PAD_ID,
    )
    config = Config(model=model_config)
    torch.manual_seed(0)
    payload = {
        "config": config_to_dict(config),
        "tokenizers": tokenizers.to_json(),
        "model": build_transformer(model_config).state_dict(),
        "step": 0,
    }
    path = tmp_path_factory.mktemp("model") / "best.pt"
    save_checkpoint(payload, path)
    return path


def the_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_invalid_utf8_input_file_names_the_file_and_line(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = tmp_path / "in.en"
    source.write_bytes(b"one\ntwo\nthr\xffee\nfour\n")
    output = tmp_path / "out.de"
    argv = ["-c", str(model_path), "-i", str(source), "-o", str(output)]
    assert translate.main(argv) == 2
    line = the_error_line(capsys.readouterr().err)
    assert f"{source} line 3 is not valid UTF-8 (byte 0xff" in line and "--errors replace" in line
    assert not output.exists()  # stopped before any work

    assert translate.main([*argv, "--errors", "replace"]) == 0
    assert output.read_text(encoding="utf-8").count("\n") == 4


def test_invalid_utf8_on_stdin_names_the_line(
    model_path: Path, capsys: pytest.CaptureFixture
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"one\n\xc3\x28two\n"))
    with mock.patch.object(sys, "stdin", stdin):
        assert translate.main(["-c", str(model_path)]) == 2
    assert "<stdin> line 2 is not valid UTF-8" in the_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("where", ["missing_dir/out.txt", "a_directory", "in.en"])
def test_output_path_is_checked_before_any_work(
    where: str, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "a_directory").mkdir()
    source = tmp_path / "in.en"
    source.write_text("one\n", encoding="utf-8")
    argv = ["-c", str(model_path), "-i", str(source), "-o", str(tmp_path / where)]
    with pytest.raises(SystemExit) as exit_info:
        translate.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert {
        "missing_dir/out.txt": "does not exist; create it first",
        "a_directory": "is a directory",
        "in.en": "is the input file",
    }[where] in err
    assert source.read_text(encoding="utf-8") == "one\n"


def test_missing_gpu_names_the_device_flag(
    model_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert translate.main(["-c", str(model_path), "--device", "cuda", "one"]) == 2
    line = the_error_line(capsys.readouterr().err)
    assert "--device asks for cuda" in line and "use --device cpu" in line
    assert "train.device" not in line


def test_a_run_directory_as_checkpoint_suggests_its_best_pt(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "checkpoints").mkdir()
    assert translate.main(["-c", str(tmp_path), "one"]) == 2
    assert str(tmp_path / "checkpoints" / "best.pt") in the_error_line(capsys.readouterr().err)


def test_a_checkpoint_with_pickled_code_gets_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": functools.partial(print, "pwned")}, path)
    assert translate.main(["-c", str(path), "one"]) == 2
    line = the_error_line(capsys.readouterr().err)
    assert "holds pickled Python objects" in line and "pwned" not in line


# --- property: any bytes on stdin -------------------------------------------------------------------


@functools.cache
def load_once(path: str, device: object) -> LoadedModel:
    return load_model(path, device)


def translate_stdin(model_path: Path, data: bytes, *flags: str) -> tuple[int, str, str]:
    stdin = io.TextIOWrapper(io.BytesIO(data))
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.object(sys, "stdin", stdin), contextlib.redirect_stdout(out):
        with contextlib.redirect_stderr(err), mock.patch.object(translate, "load_model", load_once):
            status = translate.main(["-c", str(model_path), *flags])
    return status, out.getvalue(), err.getvalue()


def count_lines(data: bytes) -> int:
    """Lines as `wc -l` counts them, plus a last line without its newline."""
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


STDIN_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(st.text(max_size=30), max_size=8).map(lambda lines: "\n".join(lines).encode()),
    st.lists(st.sampled_from([b"one", b"\r", b"\n", b"\xff", b"\xe2\x80\xa8", b"\x85", b" "])).map(
        b"".join
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STDIN_BYTES)
def test_any_bytes_on_stdin_give_one_line_per_line_or_one_clear_error(
    model_path: Path, data: bytes
) -> None:
    status, out, err = translate_stdin(model_path, data, "--errors", "replace")
    assert status == 0, err
    assert out.count("\n") == count_lines(data)
    assert len(out.splitlines()) == count_lines(data)  # no line break of any kind inside a line

    status, out, err = translate_stdin(model_path, data)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        assert status == 2 and "is not valid UTF-8" in err and "Traceback" not in err
    else:
        assert status == 0 and out.count("\n") == count_lines(data)


# --- inputs that are not regular files ---------------------------------------------------------


def fifo_with(path: Path, text: str) -> threading.Thread:
    """A named pipe at `path` that a thread fills with `text` once a reader opens it, as
    `translate.py -i <(zcat test.en.gz)` gives the script a pipe, not a file."""
    os.mkfifo(path)

    def write() -> None:
        with open(path, "w", encoding="utf-8") as pipe:
            pipe.write(text)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def test_input_prefix_and_reference_may_be_pipes(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    writers = [
        fifo_with(tmp_path / "in.en", "one\n\nthree\n"),
        fifo_with(tmp_path / "prefixes.de", "ein\n\n\n"),
        fifo_with(tmp_path / "ref.de", "eins\n\ndrei\n"),
    ]
    argv = ["-c", str(model_path), "-i", str(tmp_path / "in.en")]
    argv += ["--prefix-file", str(tmp_path / "prefixes.de"), "--ref", str(tmp_path / "ref.de")]
    assert translate.main(argv) == 0
    for writer in writers:
        writer.join(timeout=10)
        assert not writer.is_alive()
    captured = capsys.readouterr()
    lines = captured.out.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == "" and lines[0].startswith("ein")
    assert "BLEU" in captured.err and "chrF" in captured.err


def test_a_directory_or_unreadable_file_as_input_is_refused(
    model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for flag in ("-i", "--ref", "--prefix-file"):
        with pytest.raises(SystemExit) as exit_info:
            translate.main(
                ["-c", str(model_path), flag, str(tmp_path), *(["x"] if flag != "-i" else [])]
            )
        assert exit_info.value.code == 2
        assert "is a directory; give a file" in capsys.readouterr().err


def test_threads_and_batch_token_options(
    model_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--threads sets the search's torch threads (the model loads on one); --max-batch-tokens
    (serve.py's name) and the earlier --max-tokens both set the decoding batch."""
    chosen: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    built: list[int] = []
    real_build = translate.build_translator

    def build(args: object) -> object:
        translator = real_build(args)
        built.append(translator.decode_config.batch_tokens)
        return translator

    monkeypatch.setattr(translate, "build_translator", build)
    for flag in ("--max-batch-tokens", "--max-tokens"):
        assert translate.main(["-c", str(model_path), "--threads", "3", flag, "77", "one"]) == 0
    assert chosen == [1, 3, 1, 3] and built == [77, 77]
    with pytest.raises(SystemExit) as exit_info:
        translate.main(["-c", str(model_path), "--threads", "0", "one"])
    assert exit_info.value.code == 2
