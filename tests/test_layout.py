"""The package's map stays true: the layering of the imports, the module lists of
transformer/__init__.py and of docs/architecture.md (the reading path a newcomer follows), the
folder-level import picture on that page, and README.md's short layout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

import transformer
from transformer.checkpoint import load_model
from transformer.tokenization.tokenizer import BOS_ID, PAD_ID

ROOT = Path(__file__).parent.parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"
FOLDERS = ("commands", "data", "tokenization", "inference", "marian", "training", "serving")
sys.path.insert(0, str(ROOT / "tools"))
import import_graph  # noqa: E402  (tools/ is not a package)

MODULES = sorted(
    p.relative_to(ROOT / "transformer")
    for p in (ROOT / "transformer").rglob("*.py")
    if p.name != "__init__.py"
)


def test_no_upward_import_and_no_circle() -> None:
    graph = import_graph.import_graph()
    assert "model" in graph and "training.loop" in graph and "serving.app" in graph
    assert import_graph.upward_imports(graph) == []
    assert import_graph.cycles(graph) == []


def test_upward_imports_and_circles_are_found() -> None:
    """The checks themselves on a made-up graph, so that an empty answer above means something."""
    graph = {
        "model": {"training.loop"},
        "training.loop": {"training.log"},
        "training.log": {"training.loop"},
    }
    assert import_graph.upward_imports(graph) == ["model -> training.loop"]
    assert import_graph.cycles(graph) == [["training.loop", "training.log", "training.loop"]]
    assert import_graph.upward_imports({"serving.app": {"training.loss"}}) == [
        "serving.app -> training.loss"
    ]


def test_folder_graph_counts_the_imports_between_folders() -> None:
    graph = {
        "training.loop": {"training.log", "model", "config", "data.batching"},
        "training.log": {"config"},
        "model": {"config"},
    }
    folded = import_graph.folder_graph(graph)
    assert folded["training"] == {"core": 3, "data": 1}  # training.log -> training.loop: inside
    assert folded["core"] == {} and folded["serving"] == {}
    picture = import_graph.folder_mermaid(graph)
    assert "  training -->|3| core" in picture and "  training -->|1| data" in picture
    assert 'training["training/<br/>2 modules"]' in picture


def test_every_module_is_on_both_maps() -> None:
    package_map = transformer.__doc__ or ""
    layout = ARCHITECTURE.read_text(encoding="utf-8").split("## The layout, file by file", 1)[1]
    for module in MODULES:
        top = module.parts[0] + "/" if len(module.parts) > 1 else module.name
        assert top in package_map, f"transformer/__init__.py does not list {top}"
        assert f" {module.name} " in layout, f"docs/architecture.md's layout does not list {module}"
    for folder in FOLDERS:
        listed = (ROOT / "transformer" / folder / "__init__.py").read_text(encoding="utf-8")
        for module in MODULES:
            if module.parts[0] == folder:
                assert f"`{module.name}`" in listed, f"{folder}/__init__.py does not list {module}"


def test_the_bench_index_lists_every_script() -> None:
    """bench/README.md opens with one table row per script, experiments/ included."""
    readme = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    index = readme[readme.index("| script |") :].split("\n\n", 1)[0]
    for script in sorted((ROOT / "bench").rglob("*.py")):
        name = script.relative_to(ROOT / "bench").as_posix()
        assert f"| `{name}` |" in index, f"bench/README.md's index does not list {name}"


def test_the_architecture_page_shows_the_current_import_picture() -> None:
    page = ARCHITECTURE.read_text(encoding="utf-8")
    assert import_graph.folder_mermaid(import_graph.import_graph()) in page, (
        "docs/architecture.md's import picture is stale: paste the output of "
        "python tools/import_graph.py --folders"
    )


def test_readme_layout_names_every_folder() -> None:
    layout = (ROOT / "README.md").read_text(encoding="utf-8").split("## Layout", 1)[1]
    for folder in FOLDERS:
        assert f"{folder}/" in layout, f"README.md's Layout does not name transformer/{folder}/"
    for path in ("configs/", "tests/", "bench/", "tools/", "docs/"):
        assert path in layout, f"README.md's Layout does not name {path}"


def test_a_checkpoint_written_before_the_move_loads_and_computes_the_same(
    capsys: pytest.CaptureFixture,
) -> None:
    """tests/data/pre_layout.pt was trained (tiny recipe, 60 steps) by commit a0daec7, before the
    modules moved into training/ and serving/; pre_layout_logits.pt holds the logits that code
    computed with it on four test pairs. Checkpoints hold no class paths, so the move must not
    matter: the same logits (to float tolerance, whatever the CPU), and translate.py runs on it."""
    import translate

    path = ROOT / "tests" / "data" / "pre_layout.pt"
    reference = torch.load(ROOT / "tests" / "data" / "pre_layout_logits.pt", weights_only=True)
    loaded = load_model(path)
    tokenizers = loaded.tokenizers
    src = pad_sequence(
        [torch.tensor(ids) for ids in tokenizers.encode_source(reference["sources"])],
        batch_first=True,
        padding_value=PAD_ID,
    )  # (B, S)
    tgt_in = pad_sequence(
        [torch.tensor([BOS_ID, *ids]) for ids in tokenizers.encode_target(reference["targets"])],
        batch_first=True,
        padding_value=PAD_ID,
    )  # (B, T)
    with torch.no_grad():
        logits = loaded.model.eval()(src, tgt_in)  # (B, T, V)
    torch.testing.assert_close(logits, reference["logits"], atol=1e-4, rtol=1e-4)
    assert translate.main(["-c", str(path), "--beam", "2", "twenty-one"]) == 0
    assert capsys.readouterr().out.strip()
