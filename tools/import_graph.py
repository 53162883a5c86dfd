"""The picture of the package's imports: which module imports which, floor by floor.

    python tools/import_graph.py --folders  # one box per folder: the picture that
                                            # docs/architecture.md shows
    python tools/import_graph.py            # every module and each of its imports (large)
    python tools/import_graph.py --check    # exit 1 (and say which) if an import runs upward
                                            # or two modules import each other, even indirectly

The rule it shows: imports run down the floors of FLOORS, never up, and two folders on one floor
never import each other (training/ and serving/; inference/ and marian/). The ground floor is the
flat core with tokenization/: a checkpoint carries its tokenizers, so checkpoint.py imports the
tokenizer, which imports only config.py from the rest of the core. Every import counts, also those
inside functions and under TYPE_CHECKING: a circle for the type checker is still a circle for the
reader.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "transformer"
# Bottom to top; "core" is the flat transformer/*.py. A module may import its own folder, any lower
# floor, and (on the ground floor only) the other folder of its floor.
FLOORS = (
    ("core", "tokenization"),
    ("data",),
    ("inference", "marian"),
    ("training", "serving"),
    ("commands",),
)
LAYERS = tuple(name for floor in FLOORS for name in floor)
FOLDERS = LAYERS[1:]


def module_name(path: Path) -> str:
    """transformer/training/loop.py -> training.loop; transformer/model.py -> model."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def layer(module: str) -> str:
    first = module.split(".")[0]
    if module == "__main__":  # python -m transformer: the command line's front door
        return "commands"
    return first if first in FOLDERS else "core"


def floor(layer_name: str) -> int:
    return next(i for i, names in enumerate(FLOORS) if layer_name in names)


def allowed(importer: str, imported: str) -> bool:
    """May a module of layer `importer` import one of layer `imported`?"""
    if importer == imported or floor(imported) < floor(importer):
        return True
    return floor(importer) == floor(imported) == 0


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package's modules that `path` imports (`from transformer.x import y` counts y when y
    is itself a module, as in `from transformer.training import distributed`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.startswith("transformer."):
                inner = name.removeprefix("transformer.")
                if inner in known:
                    found.add(inner)
    return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    """Every module of the package (folders' __init__ files left out) -> the modules it imports."""
    paths = [p for p in sorted(PACKAGE.rglob("*.py")) if p.name != "__init__.py"]
    folders = set(FOLDERS)
    known = {module_name(p) for p in paths} | folders
    return {module_name(p): imports_of(p, known) - folders for p in paths}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports that break the layering, as 'a -> b' lines."""
    return [
        f"{a} -> {b}"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if not allowed(layer(a), layer(b))
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles (each once, as the path around it), by depth-first search."""
    found, state = [], {}  # state: 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                found.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def mermaid(graph: dict[str, set[str]]) -> str:
    """The graph as a Mermaid flowchart (GitHub draws it), one box per layer."""
    lines = ["```mermaid", "flowchart TB"]
    for name in reversed(LAYERS):
        members = sorted(m for m in graph if layer(m) == name)
        if not members:
            continue
        title = "transformer/ (core)" if name == "core" else f"transformer/{name}/"
        lines.append(f'  subgraph {name}_layer["{title}"]')
        lines += [f'    {m.replace(".", "_")}["{m.split(".")[-1]}"]' for m in members]
        lines.append("  end")
    for a, targets in sorted(graph.items()):
        lines += [f"  {a.replace('.', '_')} --> {b.replace('.', '_')}" for b in sorted(targets)]
    lines.append("```")
    return "\n".join(lines) + "\n"


def folder_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, int]]:
    """The module graph folded into layers: layer -> {imported layer: how many module imports}."""
    folded: dict[str, dict[str, int]] = {name: {} for name in LAYERS}
    for a, targets in graph.items():
        for b in targets:
            if layer(a) != layer(b):
                counts = folded[layer(a)]
                counts[layer(b)] = counts.get(layer(b), 0) + 1
    return folded


def folder_mermaid(graph: dict[str, set[str]]) -> str:
    """The folders as a Mermaid flowchart, one row per floor, top floor first; an arrow from a
    folder to one it imports, labelled with the number of module imports it stands for."""
    folded = folder_graph(graph)
    lines = ["```mermaid", "flowchart TB"]
    for level in reversed(range(len(FLOORS))):
        lines.append(f'  subgraph floor{level}[" "]')
        for name in FLOORS[level]:
            modules = sum(1 for m in graph if layer(m) == name)
            title = "transformer/*.py (core)" if name == "core" else f"{name}/"
            lines.append(f'    {name}["{title}<br/>{modules} modules"]')
        lines.append("  end")
    for a in LAYERS:
        for b, count in sorted(folded[a].items(), key=lambda item: LAYERS.index(item[0])):
            lines.append(f"  {a} -->|{count}| {b}")
    lines.append("```")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check the layering and circles")
    parser.add_argument(
        "--folders", action="store_true", help="draw one box per folder instead of per module"
    )
    args = parser.parse_args(argv)
    graph = import_graph()
    if not args.check:
        print((folder_mermaid if args.folders else mermaid)(graph), end="")
        return 0
    problems = [f"upward import: {line}" for line in upward_imports(graph)]
    problems += ["import circle: " + " -> ".join(cycle) for cycle in cycles(graph)]
    print("\n".join(problems) or f"{len(graph)} modules: no upward import, no circle")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
