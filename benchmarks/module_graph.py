"""The lab's module sizes and import graph, read from the source with `ast` (nothing imported).

    .venv/bin/python benchmarks/module_graph.py [ROOT] [--full]

ROOT is a checkout (default: this one); to compare with an older commit, unpack it first
(`git archive REV lab | tar -x -C /tmp/old && python benchmarks/module_graph.py /tmp/old`).
Every import counts, at any depth in the file (the lab imports much inside functions). Imports
under `if TYPE_CHECKING:` never run, so the layering rules leave them out, yet they are a module's
dependence on another's types all the same: `typed_graph` adds them, and the cycle rule reads that
graph (a type-only edge back is how two modules come to own one idea between them).
tests/unit/test_architecture.py checks the layering rules on these graphs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LARGE_LINES = 450  # the size past which a module's docstring should say why (issue #14)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def lab_modules(root: Path) -> dict[str, Path]:
    """Every module of the `lab` package under ROOT, by dotted name."""
    return {module_name(p, root): p for p in sorted((root / "lab").rglob("*.py"))}


def _type_checking_only(tree: ast.AST) -> set[int]:
    """Line numbers of the statements under `if TYPE_CHECKING:` (imports that never run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def imports_of(name: str, path: Path, known: set[str], typed: bool = False) -> set[str]:
    """The lab modules this one imports: `from a.b import c` is a.b.c when that is a module.
    `typed`: the imports under `if TYPE_CHECKING:` too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = set() if typed else _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", 0) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in known else base)
    return {_owner(m, known) for m in found if m == "lab" or m.startswith("lab.")} - {name}


def _owner(module: str, known: set[str]) -> str:
    """`lab.x.y` as imported, else its nearest known parent (an attribute imported as a name)."""
    while module not in known and "." in module:
        module = module.rpartition(".")[0]
    return module


def import_graph(root: Path, typed: bool = False) -> dict[str, set[str]]:
    """Every lab module's imports that run (`typed`: and those under `if TYPE_CHECKING:`)."""
    mods = lab_modules(root)
    known = set(mods)
    return {name: imports_of(name, path, known, typed) for name, path in mods.items()}


def module_lines(root: Path) -> dict[str, int]:
    return {n: len(p.read_text().splitlines()) for n, p in lab_modules(root).items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def report(root: Path, full: bool = False) -> str:
    graph = import_graph(root)
    sizes = module_lines(root)
    edges = sum(len(v) for v in graph.values())
    big = sorted((n for n, s in sizes.items() if s > LARGE_LINES), key=lambda n: -sizes[n])
    out = [
        f"{len(sizes)} modules, {sum(sizes.values())} lines, {edges} imports between them",
        f"over {LARGE_LINES} lines: "
        + (", ".join(f"{n} {sizes[n]}" for n in big) if big else "none"),
    ]
    found = cycles(import_graph(root, typed=True))
    out.append(f"import cycles (type-only imports counted): {len(found)}")
    out += [f"  {' <-> '.join(c)}" for c in found]
    if full:
        out.append("modules (lines: imports):")
        out += [
            f"  {n:36} {sizes[n]:5}: {', '.join(sorted(graph[n])) or '-'}" for n in sorted(graph)
        ]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--full"]
    root = Path(args[0]) if args else Path(__file__).resolve().parents[1]
    if not (root / "lab").is_dir():
        print(f"module_graph: no lab/ package under {root}", file=sys.stderr)
        return 2
    print(report(root, full="--full" in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
