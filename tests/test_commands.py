"""The installed command: the wheel holds the commands and the recipes, every subcommand answers
--help, and `transformer train --config tiny` then `transformer translate` work from an empty
directory with nothing of the repository in reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from transformer.commands.main import SUBCOMMANDS, main
from transformer.config import ConfigError, load_config
from transformer.recipes import find_recipe, recipe_names

ROOT = Path(__file__).parent.parent
RECIPES = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
OPTIONAL = {"serve": "fastapi", "convert": "transformers", "export": "ctranslate2"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources and installed (without dependencies) into a
    folder of its own: what `pip install .` puts in site-packages, and its `transformer` script."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("transformer", "configs"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = work / "dist"
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True,
        cwd=work,
    )
    target = work / "site"
    wheel = next(wheels.glob("transformer-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    return target


def test_the_wheel_holds_the_commands_and_the_recipes(installed: Path) -> None:
    wheel = next((installed.parent / "dist").glob("transformer-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for subcommand in SUBCOMMANDS:
        assert f"transformer/commands/{subcommand}.py" in names
    for recipe in RECIPES:
        assert f"transformer/configs/{recipe}.yaml" in names
    for split in ("train", "val", "test"):
        assert f"transformer/configs/data/numbers/{split}.en" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "transformer = transformer.commands.main:main" in text


def test_train_then_translate_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    """The installed package alone: PYTHONPATH puts it before the editable install, and the
    working directory holds nothing, so the recipe and its corpus must come from the wheel."""
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1"}
    command = installed / "bin" / "transformer"
    train = subprocess.run(
        [
            str(command),
            "train",
            "--config",
            "tiny",
            "train.max_steps=20",
            "train.validate_every=20",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    assert "Done at step 20" in train.stdout
    best = tmp_path / "runs" / "tiny" / "checkpoints" / "best.pt"
    assert best.is_file()
    translate = subprocess.run(
        [str(command), "translate", "-c", str(best), "twenty-one", "seven"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert translate.returncode == 0, translate.stderr[-2000:]
    assert len(translate.stdout.splitlines()) == 2
    where = subprocess.run(
        [sys.executable, "-c", "import transformer; print(transformer.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(installed))  # the wheel's code ran, not the checkout's


@pytest.mark.parametrize("subcommand", list(SUBCOMMANDS))
def test_every_subcommand_explains_itself(subcommand: str, capsys: pytest.CaptureFixture) -> None:
    if subcommand in OPTIONAL:
        pytest.importorskip(OPTIONAL[subcommand])
    with pytest.raises(SystemExit) as exit_info:
        main([subcommand, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: transformer {subcommand}")


def test_python_dash_m_lists_the_subcommands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "transformer", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m transformer <subcommand>")
    for subcommand in SUBCOMMANDS:
        assert f"\n  {subcommand} " in done.stdout


def test_a_mistyped_or_missing_subcommand_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'train'?" in err
    assert main([]) == 2
    assert "subcommands:" in capsys.readouterr().out


def test_recipes_by_name_and_by_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert recipe_names() == RECIPES
    assert find_recipe("tiny") == find_recipe("tiny.yaml") == (ROOT / "configs" / "tiny.yaml")
    by_name, by_path = load_config("tiny"), load_config(ROOT / "configs" / "tiny.yaml")
    assert by_name == by_path
    assert Path(by_name.data.dataset).resolve() == ROOT / "configs" / "data" / "numbers"
    with pytest.raises(
        ConfigError, match="neither a file nor the name of an installed recipe .*tiny"
    ):
        load_config("tinyy")
    assert main(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in RECIPES)
    assert main(["recipes", "--show", "tiny"]) == 0
    assert capsys.readouterr().out == (ROOT / "configs" / "tiny.yaml").read_text(encoding="utf-8")


def test_a_dataset_path_from_the_working_directory_still_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths in a recipe keep meaning what they meant: relative to where the command runs, and
    only when nothing is there, relative to the recipe's folder."""
    (tmp_path / "data" / "numbers").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny").data.dataset == "data/numbers"
