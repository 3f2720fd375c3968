"""The import graph of src/vaekit against docs/architecture.md: no import cycle, and no module
importing a module of a higher layer.

Every import of a vaekit module counts, wherever it is written: at module level or inside a
function or method (a lazy import is still a dependency), absolute (``vaekit.x``) or relative
(``.x``, ``..x``, ``from . import x``); only the body of ``if TYPE_CHECKING:`` is left out (it
never runs). The graph is read from the source with ``ast``: nothing is imported."""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import NamedTuple

PACKAGE = "vaekit"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

LAYER_NAMES = ("base", "math", "data", "config", "run + training", "view", "interfaces")

# module (dotted path below vaekit; "vaekit" is the package's own __init__) -> layer. A module
# may import its own layer (without cycles) and the layers below. An entry for a module that
# does not exist (yet) is harmless.
LAYERS = {
    # 0 base
    "errors": 0, "storage": 0, "distributed": 0, "version": 0,
    # 1 math: networks, distributions, bounds, evaluation, the model families
    "nets": 1, "posteriors": 1, "priors": 1, "flows": 1, "hierarchy": 1, "latents": 1,
    "likelihoods": 1, "grey_levels": 1,
    "tables": 1, "table_columns": 1, "table_encoding": 1,
    "objectives": 1, "evaluation": 1, "batched": 1, "importance": 1, "estimates": 1,
    "gradients": 1,
    "model": 1, "conditional": 1, "semisupervised": 1, "families": 1, "disentanglement": 1,
    "schedules": 1, "precision": 1,
    # 3 config
    "config": 3,
    # 4 run + training
    "run": 4,
    # 6 interfaces
    "cli": 6, "cli_options": 6, "sklearn": 6, "__main__": 6, PACKAGE: 6,
}

# prefixes of dotted paths -> layer, for whole packages and families of modules; an exact entry
# of LAYERS wins. "data" is the package's __init__, "data.files" one of its modules.
PREFIX_LAYERS = {
    "data": 2, "training": 4, "view": 5,
    "evaluation_": 1, "disentanglement_": 1, "config_": 3, "cli_": 6, "sklearn_": 6,
}


def layer_of(module: str) -> int | None:
    """The layer of ``module`` (a dotted path below vaekit), or None when the map misses it."""
    if module in LAYERS:
        return LAYERS[module]
    for prefix, layer in PREFIX_LAYERS.items():
        if prefix.endswith("_") and module.startswith(prefix):
            return layer
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


class Import(NamedTuple):
    source: str  # the importing module
    target: str  # the imported module
    line: int
    lazy: bool  # inside a function or method


def module_files(root: Path = SOURCE) -> dict[str, Path]:
    """dotted path below vaekit -> file; a package's __init__.py is the package's own name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts) or PACKAGE] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


# the fields of a statement that hold statements: imports are statements, so the walk never
# descends into expressions (most of a tree), which keeps the whole test well under a second
_BODIES = ("body", "orelse", "finalbody", "handlers", "cases")


def _import_nodes(tree: ast.Module):
    """(node, lazy) for every import statement that can run: ``if TYPE_CHECKING:`` bodies are
    skipped (their ``else`` branches are not)."""
    work = [(statement, False) for statement in reversed(tree.body)]
    while work:
        node, lazy = work.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, lazy
            continue
        lazy = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        skip = "body" if isinstance(node, ast.If) and _is_type_checking(node.test) else None
        for field in _BODIES:
            if field != skip:
                for child in reversed(getattr(node, field, None) or ()):
                    work.append((child, lazy))


def imports_of(module: str, source: str, modules) -> list[Import]:
    """The vaekit modules that ``module`` (whose text is ``source``) imports, resolved against
    the set of existing ``modules`` (dotted paths below vaekit)."""
    out = []

    def resolve(dotted: str) -> str | None:
        """An absolute name below vaekit ("" for the package) -> the module it names."""
        if dotted == "":
            return PACKAGE
        return dotted if dotted in modules else None

    # the package a relative import starts from
    own = [] if module == PACKAGE else module.split(".")
    package_parts = own if module == PACKAGE or _is_package(module, modules) else own[:-1]

    for node, lazy in _import_nodes(ast.parse(source)):
        targets = []
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    targets.append(resolve(alias.name[len(PACKAGE) + 1:]))
        else:
            if node.level:
                if node.level - 1 > len(package_parts):
                    continue  # above the package: not a vaekit module
                base = package_parts[: len(package_parts) - (node.level - 1)]
                dotted = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module and (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
                dotted = node.module[len(PACKAGE) + 1:]
            else:
                continue
            for alias in node.names:
                sub = f"{dotted}.{alias.name}" if dotted else alias.name
                # `from .pkg import mod` imports the module; `from .mod import name`, the module
                targets.append(sub if sub in modules else resolve(dotted))
        for target in dict.fromkeys(targets):  # one edge per statement and module
            if target is not None:
                out.append(Import(module, target, node.lineno, lazy))
    return out


def _is_package(module: str, modules) -> bool:
    return modules.get(module, Path()).name == "__init__.py"


@functools.cache
def import_graph() -> tuple[dict[str, Path], tuple[Import, ...]]:
    files = module_files()
    edges = []
    for module, path in files.items():
        edges += imports_of(module, path.read_text(encoding="utf-8"), files)
    return files, tuple(edges)


def strongly_connected(nodes, edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of the graph, iteratively."""
    index, low, on_stack, stack, components, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return components


def a_cycle(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One cycle through the first module of a strongly connected component (a shortest one,
    by breadth-first search inside the component)."""
    start, members = component[0], set(component)
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges.get(node, ())):
                if child == start:  # back at the start: walk the path back from node
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if child in members and child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return component


def _where(edge: Import, files: dict[str, Path]) -> str:
    path = files[edge.source].relative_to(SOURCE.parent)
    return f"{path}:{edge.line}{' (lazy)' if edge.lazy else ''}"


def _name(module: str) -> str:
    return module if module == PACKAGE else f"{PACKAGE}.{module}"


def test_every_module_is_placed_in_the_layer_map():
    files, _ = import_graph()
    missing = [_name(m) for m in files if layer_of(m) is None]
    assert not missing, ("add it to the layer map (LAYERS or PREFIX_LAYERS in "
                         f"tests/test_architecture.py): {', '.join(missing)}")


def test_no_import_cycles():
    files, imports = import_graph()
    edges: dict[str, set[str]] = {}
    for edge in imports:
        edges.setdefault(edge.source, set()).add(edge.target)
    where = {(e.source, e.target): e for e in reversed(imports)}  # the first line of each
    problems = []
    for component in strongly_connected(files, edges):
        if len(component) == 1 and component[0] not in edges.get(component[0], ()):
            continue
        cycle = a_cycle(component, edges)
        steps = "\n".join(f"    {_name(a)} -> {_name(b)}  ({_where(where[a, b], files)})"
                          for a, b in zip(cycle, cycle[1:]))
        inside = "\n".join(f"    {_name(e.source)} -> {_name(e.target)}  ({_where(e, files)})"
                           for e in imports if {e.source, e.target} <= set(component))
        problems.append(f"cycle among {', '.join(map(_name, component))}, e.g.\n{steps}\n"
                        f"  every import inside it:\n{inside}")
    assert not problems, "import cycles:\n" + "\n".join(problems)


def test_no_module_imports_a_higher_layer():
    files, imports = import_graph()
    problems = []
    for edge in imports:
        low, high = layer_of(edge.source), layer_of(edge.target)
        if low is not None and high is not None and high > low:
            problems.append(f"{_name(edge.source)} ({LAYER_NAMES[low]}) imports "
                            f"{_name(edge.target)} ({LAYER_NAMES[high]})  "
                            f"at {_where(edge, files)}")
    assert not problems, "imports of a higher layer:\n" + "\n".join(sorted(set(problems)))


# -- the reader itself, on made-up modules -------------------------------------------------------

def test_the_reader_finds_lazy_relative_and_absolute_imports_but_not_type_checking_ones():
    modules = {PACKAGE: Path("__init__.py"), "a": Path("a.py"), "b": Path("b.py"),
               "c": Path("c.py"), "d": Path("d.py"), "pkg": Path("pkg/__init__.py"),
               "pkg.m": Path("pkg/m.py"), "pkg.n": Path("pkg/n.py")}
    source = """
from typing import TYPE_CHECKING
import torch
from .a import thing
from . import b
import vaekit.c
if TYPE_CHECKING:
    from .d import Hidden
else:
    from .d import Shown
def later():
    from vaekit.pkg import m
    class Inner:
        def method(self):
            from .pkg.n import name
"""
    found = {(e.target, e.lazy) for e in imports_of("x", source, modules)}
    assert found == {("a", False), ("b", False), ("c", False), ("d", False),
                     ("pkg.m", True), ("pkg.n", True)}
    # inside a package: `..` is vaekit, `.` the package; `from .. import x` the module x;
    # `import vaekit.pkg` and `from vaekit import pkg` the package's __init__
    source = "from ..a import f\nfrom .. import b\nfrom . import n\nfrom .n import g\n" \
             "import vaekit.pkg\nfrom vaekit import pkg\nimport vaekit\n"
    found = [e.target for e in imports_of("pkg.m", source, modules)]
    assert found == ["a", "b", "pkg.n", "pkg.n", "pkg", "pkg", PACKAGE]
    found = [e.target for e in imports_of("pkg", "from .m import f\nfrom ..a import g\n",
                                          modules)]
    assert found == ["pkg.m", "a"]


def test_cycles_and_their_paths():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    components = strongly_connected("abcde", edges)
    assert sorted(components) == [["a", "b", "c"], ["d"], ["e"]]
    assert a_cycle(["a", "b", "c"], edges) == ["a", "b", "c", "a"]
    assert a_cycle(["d"], edges) == ["d", "d"]
    assert layer_of("data.files") == 2 and layer_of("data") == 2 and layer_of("dataset") is None
    assert layer_of("cli_train") == 6 and layer_of("training.loop") == 4
    assert layer_of("config_sections") == 3 and layer_of("vaekit") == 6
