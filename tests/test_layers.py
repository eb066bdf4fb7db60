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
