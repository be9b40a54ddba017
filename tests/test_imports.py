"""The package's import graph, read from the source with `ast` (no module is imported).

Every `import` / `from ... import` statement counts, at module level and inside functions (lazy) alike,
relative ones resolved, and so do cli.py's imports of the command modules by name: no two kws modules may import each other, through any chain. And the folder
layout shows what the base install runs: nothing outside kws/training/ imports kws/training/ except in
the two documented places (enginefile.load_model of an old .pt, KeywordSpotter(backend="torch")),
both inside a function.
"""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "kws"
# (importer, imported): the base side's only doors into the torch side (see their module docstrings)
TORCH_DOORS = {("kws.enginefile", "kws.training.ptfile"), ("kws.stream", "kws.training.torch_stream")}


def module_names(pkg: Path = PKG) -> dict[str, Path]:
    out = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """-> [(imported kws module, line, at module level)] for every import statement in the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top = {id(n) for n in tree.body}
    for node in tree.body:                         # `if TYPE_CHECKING:` / `try:` blocks at module level
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    found = []

    def add(target: str, node):
        # the deepest kws module the statement names (a `from pkg import name` may name a submodule)
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.append((target, node.lineno, id(node) in top))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "kws" or a.name.startswith("kws."):
                    add(a.name, node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not (mod == "kws" or mod.startswith("kws.")):
                continue
            for a in node.names:
                add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod, node)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """Module -> {imported module: line}. cli.py imports each command's module by name
    (importlib, from commands.COMMANDS): those count as imports too, so a command module that imports
    cli closes a cycle."""
    from kws.commands import COMMANDS
    mods = module_names()
    known = set(mods)
    graph = {m: {t: line for t, line, _ in imports_of(m, p, known)} for m, p in mods.items()}
    for target in COMMANDS.values():
        graph["kws.cli"].setdefault(target, 0)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """A cycle as [a, b, ..., a], or None (depth-first search, colours)."""
    state, stack = {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if state.get(t) is None:
                c = visit(t)
                if c:
                    return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if state.get(m) is None:
            c = visit(m)
            if c:
                return c
    return None


def test_no_import_cycles_in_kws():
    graph = import_graph()
    assert "kws.enginefile" in graph and "kws.training.modelfile" in graph      # the walk sees the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_walk_finds_a_lazy_cycle(tmp_path):
    """The checker itself: a function-level relative import that closes a loop is a cycle."""
    pkg = tmp_path / "kws"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub.b import x\n")
    (pkg / "sub" / "b.py").write_text("x = 1\ndef f():\n    from .. import a\n    return a\n")
    mods = module_names(pkg)
    graph = {m: {t: line for t, line, _ in imports_of(m, p, set(mods))} for m, p in mods.items()}
    assert graph["kws.sub.b"] == {"kws.a": 3}
    assert find_cycle(graph) in (["kws.a", "kws.sub.b", "kws.a"], ["kws.sub.b", "kws.a", "kws.sub.b"])


def test_base_side_reaches_the_torch_side_only_through_the_documented_doors():
    mods = module_names()
    known = set(mods)
    seen = set()
    for m, p in mods.items():
        if m.startswith("kws.training"):
            continue
        for target, line, at_top in imports_of(m, p, known):
            if target.startswith("kws.training"):
                assert (m, target) in TORCH_DOORS, f"{p.name}:{line} imports {target} (the base side must not)"
                assert not at_top, f"{p.name}:{line} imports {target} at module level (only inside a function)"
                seen.add((m, target))
    assert seen == TORCH_DOORS, f"doors no longer used: {TORCH_DOORS - seen} (update TORCH_DOORS and the docs)"


@pytest.mark.parametrize("module", ["kws.commands", "kws.errors", "kws.config"])
def test_leaf_modules_import_nothing_of_kws(module):
    assert import_graph()[module] == {}
