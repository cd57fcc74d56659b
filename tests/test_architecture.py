"""The architecture as rules the code must keep: the import graph of the package has no cycle, the
layers import only downwards, a backend never imports another, and every error nirbridge raises on
purpose is a NirBridgeError.

The import graph is read from the source (every ``import`` statement, also inside functions), so a
lazy import that closes a cycle counts as one."""

from __future__ import annotations

import ast
from pathlib import Path

import nirbridge

PKG = Path(nirbridge.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The nirbridge modules ``name`` imports (``from . import x`` resolved to ``x``'s module)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "nirbridge")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "nirbridge":
                continue
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in known else mod)
    return {m for m in out if m in known and m != name}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {m: _imports(m, p, known) for m, p in mods.items()}
    # a module's package __init__ runs first: that is not an import the module makes
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_import_graph_has_no_cycle():
    graph = _graph()
    assert len(graph) > 20  # the walk found the package
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_check_finds_a_cycle():
    # the check itself, on a graph with a known cycle (a lazy import closing a loop counts)
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_layers_import_downwards():
    graph = _graph()
    core = {m for m in graph if not m.startswith(("nirbridge.backends", "nirbridge.nirtorch"))
            and m not in ("nirbridge", "nirbridge.cli", "nirbridge.compare", "nirbridge.simulate",
                          "nirbridge.stream", "nirbridge.parallel", "nirbridge.testing")}
    for m in sorted(core):  # the core (graph, kernels, program, presets, io, ...) knows no backend
        bad = {d for d in graph[m] if d.startswith("nirbridge.backends.")}
        assert not bad, f"{m} imports the backends {sorted(bad)}"
    kernels = {m for m in graph if m.startswith("nirbridge.kernels")}
    for m in sorted(kernels):  # kernels know only the node specs and errors
        assert graph[m] <= kernels | {"nirbridge.nodes", "nirbridge.errors"}, (m, sorted(graph[m]))


def test_a_backend_never_imports_another():
    graph = _graph()
    families = {"reference": {"nirbridge.backends.reference"},
                "jax": {"nirbridge.backends.jax", "nirbridge.backends.flax", "nirbridge.backends.equinox"},
                "torch": {"nirbridge.backends.torch", "nirbridge.backends.torch_fx"}}
    for fam, members in families.items():
        others = set().union(*(v for k, v in families.items() if k != fam))
        for m in members:
            bad = graph.get(m, set()) & others
            assert not bad, f"{m} ({fam}) imports {sorted(bad)}"


_BUILTIN_ERRORS = {"ValueError", "TypeError", "KeyError", "IndexError", "RuntimeError", "NotImplementedError",
                   "ImportError", "AssertionError", "Exception", "OverflowError", "ZeroDivisionError"}


def test_every_raised_error_is_a_nirbridge_error():
    """No ``raise ValueError(...)`` and the like in the package: every error raised on purpose is one of
    nirbridge.errors (each also derives from the fitting builtin). Allowed: a bare ``raise``
    (re-raise), ``AttributeError`` in a module ``__getattr__`` (the import protocol)."""
    found = []
    for name, path in _modules().items():
        if name == "nirbridge.testing":  # assert_equivalent raises AssertionError: that is its job
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id in _BUILTIN_ERRORS:
                    found.append(f"{name}:{node.lineno} raises {exc.id}")
    assert not found, "builtin errors raised instead of nirbridge errors:\n" + "\n".join(found)


def test_the_jax_backend_imports_nothing_from_the_reference():
    graph = _graph()
    for m in ("nirbridge.backends.jax", "nirbridge.backends.flax", "nirbridge.backends.equinox",
              "nirbridge.backends.torch", "nirbridge.backends.torch_fx"):
        assert "nirbridge.backends.reference" not in graph[m], m
