"""The configuration reference (docs/configuration.md) is generated from the dataclasses and cannot
go stale."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

from transformer import config
from transformer.commands import config as config_command
from transformer.config import Config, config_markdown

PAGE = Path(__file__).parent.parent / "docs" / "configuration.md"


def leaf_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            keys += leaf_keys(hints[field.name], f"{prefix}{field.name}.")
        else:
            keys.append(prefix + field.name)
            for inner in config._listed_dataclasses(hints[field.name]):  # data.dataset[] entries
                keys += leaf_keys(inner, f"{prefix}{field.name}[].")
    return keys


def test_the_reference_table_matches_the_dataclasses() -> None:
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(r"<!-- config-table -->\n(.*?)<!-- /config-table -->", text, re.DOTALL)
    assert match, "docs/configuration.md lost its <!-- config-table --> markers"
    assert match.group(1) == config_markdown(), (
        "docs/configuration.md's table is stale: paste the output of "
        "`transformer config --markdown` between the markers"
    )


def test_every_key_has_a_row_with_its_default_and_a_meaning() -> None:
    table = config_markdown()
    rows = {
        row.split("|")[1].strip(" `"): row for row in table.splitlines() if row.startswith("| `")
    }
    assert sorted(rows) == sorted(leaf_keys(Config))
    for key, row in rows.items():
        meaning = row.rstrip(" |").rsplit(" | ", 1)[-1]
        assert meaning and not meaning.startswith("`"), f"{key} has no comment in config.py"
    assert "| `train.accumulate` | int | `1` |" in rows["train.accumulate"]
    assert "| `train.compile` | bool | `false` |" in rows["train.compile"]
    assert "`[0.9, 0.98]`" in rows["train.betas"] and "`null`" in rows["data.subset"]


def test_markdown_command_prints_the_table(capsys) -> None:
    assert config_command.main(["--markdown"]) == 0
    assert capsys.readouterr().out == config_markdown()
