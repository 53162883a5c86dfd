"""translate.py and checkpoint averaging through their main() functions, on a model trained here."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

import train
import translate
from transformer.commands import average as average_command

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")
NUMBERS = Path(__file__).parent.parent / "configs" / "data" / "numbers"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained for long enough that translations are varied and partly right."""
    directory = tmp_path_factory.mktemp("translate_run")
    status = train.main(
        [
            "--config",
            TINY,
            f"train.run_dir={directory}",
            f"data.dataset={NUMBERS}",
            "train.device=cpu",
            "train.max_steps=60",
            "train.validate_every=20",
            "train.keep_checkpoints=3",
            "model.d_model=48",
            "model.d_ff=96",
        ]
    )
    assert status == 0
    return directory


def test_sentences_as_arguments(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    best = str(run_dir / "checkpoints" / "best.pt")
    assert translate.main(["-c", best, "I see five birds .", "twenty-one"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(lines)


def test_file_output_keeps_line_alignment_with_empty_lines(run_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.en"
    source.write_text("I see five birds .\n\ntwenty-one\n   \nThe train leaves in six minutes .\n")
    output = tmp_path / "out.de"
    best = str(run_dir / "checkpoints" / "best.pt")
    assert translate.main(["-c", best, "-i", str(source), "-o", str(output), "--beam", "3"]) == 0
    lines = output.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""  # the file ends with a newline
    lines = lines[:-1]
    assert len(lines) == 5
    assert lines[1] == "" and lines[3] == ""
    assert lines[0] and lines[2] and lines[4]


def test_attention_writes_one_png_per_sentence(run_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.en"
    source.write_text("I see five birds .\n\ntwenty-one\n", encoding="utf-8")
    pictures = tmp_path / "attention"
    best = str(run_dir / "checkpoints" / "best.pt")
    status = translate.main(
        ["-c", best, "-i", str(source), "-o", str(tmp_path / "out"), "--attention", str(pictures)]
    )
    assert status == 0
    # One picture per non-empty line, named by its line number; the empty line 2 has none.
    assert sorted(p.name for p in pictures.iterdir()) == ["00001.png", "00003.png"]
    assert (pictures / "00001.png").read_bytes()[:4] == b"\x89PNG"


def test_stdin_and_reference_scoring(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    sources = (NUMBERS / "test.en").read_text(encoding="utf-8").splitlines()[:20]
    references = NUMBERS / "test.de"
    reference_lines = references.read_text(encoding="utf-8").splitlines()[:20]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(sources) + "\n"))
    last = str(run_dir / "checkpoints" / "last.pt")
    tmp_ref = tmp_path / "ref20.de"
    tmp_ref.write_text("\n".join(reference_lines) + "\n", encoding="utf-8")
    assert translate.main(["-c", last, "--ref", str(tmp_ref)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 20
    assert "BLEU" in captured.err and "nrefs:1|case:mixed" in captured.err
    assert "chrF" in captured.err
    assert "TER" in captured.err and "tok:tercom" in captured.err  # sacreBLEU's TER signature


def test_reference_with_wrong_line_count(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ref = tmp_path / "ref.de"
    ref.write_text("eins\nzwei\n")
    best = str(run_dir / "checkpoints" / "best.pt")
    assert translate.main(["-c", best, "--ref", str(ref), "one"]) == 2
    assert "2 lines but the input had 1" in capsys.readouterr().err


def test_nbest_is_ordered(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    best = str(run_dir / "checkpoints" / "best.pt")
    assert translate.main(["-c", best, "--beam", "4", "--nbest", "3", "forty-two", "seven"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    for index in (0, 1):
        rows = [line.split(" ||| ") for line in lines if line.startswith(f"{index} |||")]
        scores = [float(row[2]) for row in rows]
        assert len(rows) == 3 and scores == sorted(scores, reverse=True)


def test_bad_checkpoints_give_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert translate.main(["-c", str(tmp_path / "missing.pt"), "hello"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    assert translate.main(["-c", str(corrupt), "hello"]) == 2
    assert "cannot be read as a checkpoint" in capsys.readouterr().err
    assert translate.main(["-c", str(tmp_path), "hello"]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_truncated_checkpoint(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = (run_dir / "checkpoints" / "best.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    assert translate.main(["-c", str(truncated), "hello"]) == 2
    assert "truncated" in capsys.readouterr().err


def test_bad_arguments_exit_with_usage(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        translate.main(["-c", "x.pt", "-i", str(tmp_path / "missing.txt")])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        translate.main(["-c", "x.pt", "--beam", "0", "hi"])


def test_averaged_checkpoint_translates(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    averaged = tmp_path / "avg.pt"
    directory = str(run_dir / "checkpoints")
    assert average_command.main([directory, "--last", "3", "-o", str(averaged)]) == 0
    assert "averaged 3 checkpoints" in capsys.readouterr().out
    assert translate.main(["-c", str(averaged), "thirty-three"]) == 0
    assert capsys.readouterr().out.strip()
    assert average_command.main([directory, "--last", "9", "-o", str(averaged)]) == 2
    assert "holds 3" in capsys.readouterr().err


def test_average_command_explains_its_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        average_command.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Average the weights of the last N step_*.pt checkpoints" in out
    assert "--last N" in out and "--output OUT.pt" in out and "not for --resume" in out
    with pytest.raises(SystemExit) as exit_info:
        average_command.main(["runs/x/checkpoints", "--last", "0", "-o", "avg.pt"])
    assert exit_info.value.code == 2
    assert "--last must be at least 1" in capsys.readouterr().err


# --- sampling, ensembles and prefixes -----------------------------------------------------------


def test_sampling_is_reproducible_with_a_seed(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    best = str(run_dir / "checkpoints" / "best.pt")
    argv = ["-c", best, "--sample", "--nbest", "3", "--temperature", "1.5", "--top-p", "0.95"]
    assert translate.main([*argv, "--seed", "1", "seventy-seven", "five"]) == 0
    first = capsys.readouterr().out.splitlines()
    assert len(first) == 6 and all(line.split(" ||| ")[0] in "01" for line in first)
    assert translate.main([*argv, "--seed", "1", "seventy-seven", "five"]) == 0
    assert capsys.readouterr().out.splitlines() == first
    outputs = set()
    for seed in ("2", "3", "4"):
        assert translate.main([*argv, "--seed", seed, "seventy-seven", "five"]) == 0
        outputs.add(capsys.readouterr().out)
    assert len(outputs | {"\n".join(first) + "\n"}) > 1


def test_ensemble_of_a_checkpoint_with_itself_translates_like_it(
    run_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    best = str(run_dir / "checkpoints" / "best.pt")
    sentences = ["I see five birds .", "twenty-one"]
    assert translate.main(["-c", best, "--beam", "3", *sentences]) == 0
    alone = capsys.readouterr().out
    assert translate.main(["-c", best, best, "--beam", "3", *sentences]) == 0
    assert capsys.readouterr().out == alone
    last = str(run_dir / "checkpoints" / "last.pt")
    assert translate.main(["-c", best, last, "twenty-one"]) == 0  # two different checkpoints
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_ensemble_of_different_tokenizers_is_refused(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import torch

    from transformer.tokenization.tokenizer import TokenizerPair

    best = run_dir / "checkpoints" / "best.pt"
    payload = torch.load(best, weights_only=True)
    tokenizers = TokenizerPair.from_json(payload["tokenizers"])
    vocabulary = tokenizers.target.get_vocab()
    changed = json.loads(tokenizers.target.to_str())
    # Swap two ordinary tokens: same size, different vocabulary.
    first, second = sorted(vocabulary, key=vocabulary.get)[10:12]
    table = changed["model"]["vocab"]
    table[first], table[second] = table[second], table[first]
    payload["tokenizers"] = {"source": tokenizers.source.to_str(), "target": json.dumps(changed)}
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    assert translate.main(["-c", str(best), str(other), "twenty-one"]) == 2
    error = capsys.readouterr().err
    assert "cannot ensemble" in error and "target tokenizers" in error
    assert len(error.strip().splitlines()) == 1


def test_prefix_file_forces_the_beginning(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    best = str(run_dir / "checkpoints" / "best.pt")
    source = tmp_path / "in.en"
    source.write_text("I see five birds .\n\ntwenty-one\nforty-two\n", encoding="utf-8")
    assert translate.main(["-c", best, "-i", str(source), "--beam", "3"]) == 0
    plain = capsys.readouterr().out.splitlines()
    prefixes = tmp_path / "prefixes.de"
    prefixes.write_text("Ich sehe zwanzig\n\nsieben\n\n", encoding="utf-8")
    assert translate.main(["-c", best, "-i", str(source), "--beam", "3",
                           "--prefix-file", str(prefixes)]) == 0  # fmt: skip
    forced = capsys.readouterr().out.splitlines()
    assert forced[0].startswith("Ich sehe zwanzig") and forced[2].startswith("sieben")
    assert forced[1] == "" and forced[3] == plain[3]  # no prefix: as without the option
    prefixes.write_text("eins\n", encoding="utf-8")
    assert translate.main(["-c", best, "-i", str(source), "--prefix-file", str(prefixes)]) == 2
    assert "1 lines but the input has 4" in capsys.readouterr().err


def test_sampling_options_need_sample(run_dir: Path) -> None:
    best = str(run_dir / "checkpoints" / "best.pt")
    for argv in (["--top-k", "5"], ["--sample", "--top-p", "1.5"], ["--sample", "--beam", "4"]):
        with pytest.raises(SystemExit) as exit_info:
            translate.main(["-c", best, *argv, "hello"])
        assert exit_info.value.code == 2
