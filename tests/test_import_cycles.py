"""No import cycle among the project's own modules (the core ``vidcore`` and each plugin package).

The modules are read with `ast`, never imported. Every import counts: at module
level and inside functions (a lazy import that closes a cycle is still a cycle,
only one that is harder to see). Only the body of an ``if TYPE_CHECKING:``
block is skipped (it never runs).

What an import statement is an edge to, for a module ``m``:

- ``import a.b.c``: to ``a.b.c`` (or, when that is not a module, its longest
  prefix that is). The parent packages' ``__init__`` that Python runs on the
  way are *not* edges: counting them would make every package that re-exports
  its submodules look cyclic with each of them.
- ``from a.b import c``: to ``a.b.c`` when that is a module (a submodule is
  imported), else to ``a.b`` (a name from that module or package ``__init__``).
- relative imports resolve against ``m``'s package (a package's ``__init__`` is
  its own package): ``from . import x`` in ``p.y`` is an edge to the sibling
  ``p.x``, or to ``p`` (``p/__init__.py``) when ``x`` is a name defined there;
  ``from .. import z`` likewise one level up.

So a package ``__init__`` that imports its submodules is fine, and a submodule
that imports a sibling is fine; a submodule that takes a name from its own
package's ``__init__`` while that ``__init__`` imports the submodule is a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "vidcore",
            *sorted(p for p in (ROOT / "plugins").glob("*/vidcore_*") if (p / "__init__.py").is_file())]


def module_files(package_dirs: Iterable[Path]) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of each package (``__init__`` -> the package)."""
    out: dict[str, Path] = {}
    for pkg in package_dirs:
        for path in sorted(pkg.rglob("*.py")):
            rel = path.relative_to(pkg.parent).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, at any depth, except inside ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is a project module."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: project modules it imports}`` by the rules of this file's docstring."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for stmt in _statements(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(stmt, ast.Import):
                targets = [_known(alias.name, modules) for alias in stmt.names]
            else:
                if stmt.level:
                    base_parts = package.split(".")
                    base_parts = base_parts[: len(base_parts) - (stmt.level - 1)]
                    base = ".".join(base_parts + ([stmt.module] if stmt.module else []))
                else:
                    base = stmt.module or ""
                targets = []
                for alias in stmt.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else _known(base, modules))
            edges.update(t for t in targets if t is not None and t != name)
        graph[name] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):  # iterative Tarjan (no recursion limit on deep graphs)
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    members.append(top)
                    if top == node:
                        break
                if len(members) > 1:
                    components.append(sorted(members))
    return [_cycle_in(graph, set(members)) for members in components]


def _cycle_in(graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """A shortest cycle through the first member, staying inside its component (breadth first)."""
    start = min(members)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, node, start]
                if child not in parents:
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle found in component {sorted(members)}")


def test_project_has_no_import_cycle():
    modules = module_files(PACKAGES)
    assert "vidcore.backend" in modules and any(m.startswith("vidcore_latte.") for m in modules)
    cycles = find_cycles(import_graph(modules))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_cycles_lazy_relative_and_through_a_package(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from .a import A\n",
        "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nA = 1\n",
        "pkg/b.py": "def f():\n    from pkg.c import C\n",  # lazy, absolute
        "pkg/c.py": "from . import b\nC = 1\n",  # b is a sibling module: an edge to pkg.b
        "pkg/sub/__init__.py": "",
        "pkg/sub/d.py": "from .. import A\n",  # a name from pkg/__init__: an edge to pkg
        "pkg/e.py": "import pkg.sub.d\n",
    })
    graph = import_graph(module_files([tmp_path / "pkg"]))
    assert graph["pkg"] == {"pkg.a"} and graph["pkg.a"] == set()  # the TYPE_CHECKING import is not an edge
    assert graph["pkg.c"] == {"pkg.b"} and graph["pkg.sub.d"] == {"pkg"} and graph["pkg.e"] == {"pkg.sub.d"}
    assert find_cycles(graph) == [["pkg.b", "pkg.c", "pkg.b"]]

    _write(tmp_path, {"pkg/a.py": "import pkg.e\nA = 1\n"})  # pkg -> a -> e -> sub.d -> pkg
    cycles = find_cycles(import_graph(module_files([tmp_path / "pkg"])))
    assert ["pkg", "pkg.a", "pkg.e", "pkg.sub.d", "pkg"] in cycles and len(cycles) == 2
