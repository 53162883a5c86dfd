"""The picture of the package's imports: which module imports which, in three layers.

    python tools/import_graph.py            # the Mermaid diagram that README.md shows
    python tools/import_graph.py --check    # exit 1 (and say which) if an import runs upward
                                            # or two modules import each other, even indirectly

The rule it shows: the core (`transformer/*.py`) never imports `training/` or `serving/`, and
those two never import each other. Every import counts, also those inside functions and under
TYPE_CHECKING: a circle for the type checker is still a circle for the reader.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "transformer"
LAYERS = ("core", "training", "serving")


def module_name(path: Path) -> str:
    """transformer/training/loop.py -> training.loop; transformer/model.py -> model."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def layer(module: str) -> str:
    first = module.split(".")[0]
    return first if first in LAYERS[1:] else "core"


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
    known = {module_name(p) for p in paths} | {"training", "serving"}
    return {module_name(p): imports_of(p, known) - {"training", "serving"} for p in paths}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports that break the layering, as 'a -> b' lines."""
    allowed = {"core": {"core"}, "training": {"core", "training"}, "serving": {"core", "serving"}}
    return [
        f"{a} -> {b}"
        for a, targets in sorted(graph.items())
        for b in sorted(targets)
        if layer(b) not in allowed[layer(a)]
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
    for name in LAYERS[1:] + LAYERS[:1]:
        members = sorted(m for m in graph if layer(m) == name)
        title = "transformer/ (core)" if name == "core" else f"transformer/{name}/"
        lines.append(f'  subgraph {name}_layer["{title}"]')
        lines += [f'    {m.replace(".", "_")}["{m.split(".")[-1]}"]' for m in members]
        lines.append("  end")
    for a, targets in sorted(graph.items()):
        lines += [f"  {a.replace('.', '_')} --> {b.replace('.', '_')}" for b in sorted(targets)]
    lines.append("```")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="check the layering and circles")
    args = parser.parse_args(argv)
    graph = import_graph()
    if not args.check:
        print(mermaid(graph), end="")
        return 0
    problems = [f"upward import: {line}" for line in upward_imports(graph)]
    problems += ["import circle: " + " -> ".join(cycle) for cycle in cycles(graph)]
    print("\n".join(problems) or f"{len(graph)} modules: no upward import, no circle")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
