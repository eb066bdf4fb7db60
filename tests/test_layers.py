"""The house's rules, checked on the source with ast (no import needed): one home for atomic
writes and the umask, no import circles, no private names imported across modules."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "backdrop"


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return out


def calls(tree: ast.AST, owner: str, attr: str) -> list[int]:
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == attr
            and isinstance(n.func.value, ast.Name) and n.func.value.id == owner]


def test_umask_read_only_in_outputs():
    """Setting the umask to read it races with every thread creating a file: outputs.py reads it
    once, at import; no other module may touch it."""
    found = {name: calls(tree, "os", "umask") for name, tree in modules().items()}
    assert {k: v for k, v in found.items() if v and k != "backdrop.outputs"} == {}
    assert found["backdrop.outputs"]


def test_atomic_replace_only_in_outputs():
    """os.replace / os.link (the atomic and no-replace writes) live in outputs.py only."""
    found = {name: calls(tree, "os", "replace") + calls(tree, "os", "link") for name, tree in modules().items()}
    assert {k: v for k, v in found.items() if v and k != "backdrop.outputs"} == {}


def imports(name: str, tree: ast.Module) -> set[str]:
    """The backdrop modules ``name`` imports (anywhere in it, lazy imports included)."""
    pkg = name if (SRC.parent / (name.replace(".", "/") + "/__init__.py")).exists() else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("backdrop"):
                subs = {f"{mod}.{a.name}" for a in node.names}
                known = {m for m in subs if (SRC.parent / m.replace(".", "/")).with_suffix(".py").exists()
                         or (SRC.parent / m.replace(".", "/") / "__init__.py").exists()}
                out |= known  # "from . import models": that module
                if known != subs:  # a name defined in ``mod`` itself
                    out.add(mod)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("backdrop"))
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports(name, tree) if m in mods and m != name} for name, tree in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    """Layers only look down: no module imports (even lazily) one that imports it back."""
    assert cycles(graph()) == []


def test_pipeline_knows_no_engine_and_metadata_no_images():
    g = graph()
    above = {m for m in g if m.startswith(("backdrop.engine", "backdrop.items", "backdrop.job", "backdrop.cli",
                                            "backdrop.studio"))}
    assert g["backdrop.pipeline"] & above == set()
    assert "backdrop.images" not in g["backdrop.metadata"]
    assert not {m for m in g["backdrop.items"] if m.startswith("backdrop.engine")}  # items never schedule


def test_no_private_name_imported_from_another_module():
    """``from x import _name`` couples a module to another's insides: make the name public or move it."""
    found = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                found += [f"{name}: from {'.' * node.level}{node.module or ''} import {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


def test_no_backend_name_tests_outside_the_registries():
    """What a backend can do is declared on its class (backdrop.stages), never guessed from its name."""
    found = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith"
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "sd-"):
                found.append(f"{name}:{node.lineno}")
    assert found == []


def test_no_module_over_700_lines():
    """A module a newcomer can read: split what grows past 700 lines."""
    sizes = {p.relative_to(SRC.parent).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
             for p in SRC.rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v >= 700} == {}
