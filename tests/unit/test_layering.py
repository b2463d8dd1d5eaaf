"""The import layers of docs/architecture.md, checked on the code.

The page's Layers diagram lists the package's folders and top-level modules from the top (cli/)
down to stats.py and errors.py, and says imports only point down that list, never up, and that
there is no import circle. Here every ``import`` in src/characterlab is parsed with ``ast``,
those inside functions included (a lazy import is still a dependency), and checked against the
order read from the page itself: the page and this test cannot drift apart, and a new folder has
to be placed on the page before its imports pass. Imports by name at run time
(``importlib.import_module``, entry points) are not seen.

No model, no import of the package: seconds.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "characterlab"
ARCHITECTURE = REPO / "docs" / "architecture.md"
ROOT = "characterlab"

# (importing module, imported module) -> why the import may point up. None today; an entry here is a
# debt to pay by moving code down, not a permission.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def layer_ranks(page: Path = ARCHITECTURE) -> dict[str, int]:
    """Each layer the page's Layers diagram names (a folder or a top-level module, without `/` or
    `.py`) and its rank, 0 at the top. An entry line starts with one space and a name; names on one
    line (stats.py, errors.py) share its rank; continuation lines are indented further."""
    block = page.read_text(encoding="utf-8").split("## Layers", 1)[1].split("```", 2)[1]
    ranks: dict[str, int] = {}
    for line in block.splitlines():
        if re.match(r" [a-z_]", line):
            rank = len(set(ranks.values()))
            for name in re.findall(r"(?:^ |\s{2,})([a-z_]+)(?:/|\.py)(?=\s|$)", line):
                ranks[name] = rank
    return ranks


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py")) if "__pycache__" not in p.parts}


def imports(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported module) for every import of the package in the file, at any depth.
    ``from a.b import c`` is an import of the module a.b.c where that exists, else of a.b."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package, up level - 1
                here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in known else base) for a in node.names]
    return [(line, name) for line, name in found if name == ROOT or name.startswith(ROOT + ".")]


def layer_of(module: str) -> str:
    """characterlab.study.plan -> study; characterlab.stats -> stats; the package itself -> itself."""
    return module.split(".")[1] if "." in module else ROOT


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """importing module -> {imported module: its first line}, over the package's own modules."""
    modules = package_modules(package)
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for line, target in imports(path, name, set(modules)):
            while target not in modules and "." in target:  # an attribute of a module: that module
                target = target.rsplit(".", 1)[0]
            if target != name:
                edges[target] = min(line, edges.get(target, line))
    return graph


def unplaced(package: Path, ranks: dict[str, int]) -> list[str]:
    """Layers with code that the page does not name. A package of data only (studies/: YAML beside an
    empty __init__.py) imports nothing and needs no place."""
    code = {layer_of(m) for m, path in package_modules(package).items() if path.read_text(encoding="utf-8").strip()}
    return sorted(code - set(ranks) - {ROOT})


def upward_imports(graph: dict[str, dict[str, int]], ranks: dict[str, int]) -> list[str]:
    """One line per import that points up the list (layers the page does not name are left to
    :func:`unplaced`). The package's own __init__ holds only __version__ and sits at the bottom:
    anything may read it."""
    ranks = {**ranks, ROOT: max(ranks.values())}
    problems = []
    for importer, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            below, above = ranks.get(layer_of(importer)), ranks.get(layer_of(target))
            if below is not None and above is not None and above < below and (importer, target) not in EXCEPTIONS:
                problems.append(f"{importer} (line {line}) imports {target}: imports point down the list of "
                                f"docs/architecture.md, never up, and {layer_of(target)} is above {layer_of(importer)}")
    return problems


def import_circles(graph: dict[str, dict[str, int]]) -> list[str]:
    """One line per import circle: a shortest circle through the first module of each strongly
    connected set (Tarjan's algorithm finds the sets, a breadth-first search the circle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = set()
            while v not in members:
                members.add(stack.pop())
            if len(members) > 1:
                circles.append(members)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    lines = []
    for members in circles:
        start = min(members)
        came_from: dict[str, str] = {}
        queue = deque([start])
        while start not in came_from:  # the set is strongly connected: the search comes back to start
            v = queue.popleft()
            for w in sorted(graph[v]):
                if w in members and w not in came_from:
                    came_from[w] = v
                    queue.append(w)
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(came_from[path[-1]])
        path.reverse()
        steps = " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:]))
        lines.append(f"{steps} -> {start}: there is no import circle (docs/architecture.md)")
    return lines


def test_the_page_names_the_layers_in_order():
    ranks = layer_ranks()
    assert ranks["cli"] == 0 and ranks["stats"] == ranks["errors"]  # one line, one rank
    assert ranks["study"] < ranks["evals"] < ranks["train"] < ranks["judge"] < ranks["models"] < ranks["data"] < ranks["stats"]
    missing = [name for name in ranks if not ((PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file())]
    assert not missing, f"docs/architecture.md names layers that are not in src/characterlab: {missing}"


def test_every_module_belongs_to_a_layer_of_the_page():
    assert not unplaced(PACKAGE, layer_ranks()), "place these on the Layers list of docs/architecture.md"


def test_imports_point_down_the_layers():
    problems = upward_imports(import_graph(), layer_ranks())
    assert not problems, "\n".join(problems)


def test_there_is_no_import_circle():
    problems = import_circles(import_graph())
    assert not problems, "\n".join(problems)


def test_the_exceptions_are_still_imports():
    """A named exception whose import is gone is removed, so the list says what is left to fix."""
    graph = import_graph()
    assert not [pair for pair in EXCEPTIONS if pair[1] not in graph.get(pair[0], {})]


def test_the_checks_see_imports_inside_functions_and_name_both_modules(tmp_path):
    """The checker on a package of its own: an upward import inside a function, a relative one, and a circle."""
    page = tmp_path / "architecture.md"
    page.write_text("## Layers\n\n```\n top/        the top\n             more.py: prose\n   |\n"
                    " low/        below\n base.py     bottom      util.py  also bottom\n```\n")
    package = tmp_path / ROOT
    for folder, files in {"top": {"a.py": "x = 1\n"},
                          "low": {"b.py": "def f():\n    from characterlab.top.a import x\n",
                                  "c.py": "from . import b\nfrom .d import y\n",
                                  "d.py": "import characterlab.low.c\n"}}.items():
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
        for name, text in files.items():
            (package / folder / name).write_text(text)
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("from characterlab import __version__\n")
    (package / "stray.py").write_text("x = 1\n")
    (package / "data_only").mkdir()
    (package / "data_only" / "__init__.py").write_text("")

    ranks = layer_ranks(page)
    assert ranks == {"top": 0, "low": 1, "base": 2, "util": 2}
    graph = import_graph(package)
    assert graph["characterlab.low.c"] == {"characterlab.low.b": 1, "characterlab.low.d": 2}
    assert unplaced(package, ranks) == ["stray"]
    [up] = upward_imports(graph, ranks)
    assert up.startswith("characterlab.low.b (line 2) imports characterlab.top.a: ") and "top is above low" in up
    assert import_circles(graph) == ["characterlab.low.c (line 2) -> characterlab.low.d (line 1) -> characterlab.low.c: "
                                     "there is no import circle (docs/architecture.md)"]
