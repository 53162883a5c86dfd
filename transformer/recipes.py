"""The recipes that come with the package, found by name: `--config tiny` as well as a path.

The YAML files live once, in the repository's configs/ folder. A wheel carries them as
transformer/configs/ (pyproject.toml maps the folder in at build time); a source checkout or an
editable install reads configs/ itself. Paths inside a recipe (data.dataset) are relative to the
working directory, as always, or else to the recipe's own folder: that is how the tiny recipe finds
its corpus (configs/data/numbers) from any directory.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
RECIPE_DIRS = (_PACKAGE / "configs", _PACKAGE.parent / "configs")  # installed wheel, source tree


def recipe_dir() -> Path | None:
    """Where the installed recipes are, or None if neither place holds any."""
    return next((d for d in RECIPE_DIRS if any(d.glob("*.yaml"))), None)


def recipe_names() -> list[str]:
    directory = recipe_dir()
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory else []


def find_recipe(name_or_path: str | Path) -> Path:
    """The file to read for `--config X`: X itself when it is a file, else the installed recipe
    named X (with or without .yaml). A missing one is returned as given, for the caller to refuse
    with the list of names."""
    path = Path(name_or_path)
    if path.is_file() or len(path.parts) != 1:
        return path
    directory = recipe_dir()
    if directory is not None:
        for candidate in (directory / path.name, directory / f"{path.name}.yaml"):
            if candidate.is_file():
                return candidate
    return path


def recipe_summary(path: Path) -> str:
    """A recipe's first comment line: what it trains (tiny.yaml: 'A seconds-long smoke test ...')."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""
