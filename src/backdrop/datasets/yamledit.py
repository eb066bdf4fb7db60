"""Change a few top-level keys of a YAML mapping and keep every other byte of the file.

A data set's ``data.yaml`` is a file people write by hand: comments explain the classes, keys
come in the order they chose, values are quoted as they like. Writing a new set's index from a
parsed dict loses all of that. :func:`set_keys` edits the text instead: the lines of the keys
that change are replaced (a value on the key's own line keeps its trailing comment), deleted
keys' lines go, and nothing else is touched. It handles the block-mapping layout that data set
files use; anything it cannot be sure of (documents, flow mappings, anchors at the top level,
duplicate keys) makes it return None, and the result is always parsed back and compared with
the wanted mapping, so a wrong edit cannot be written.

Why not a round-trip YAML library: ruamel.yaml keeps comments too, but it re-indents what it
writes back (a Roboflow ``data.yaml`` with four-space blocks comes out with two), and it would
be a new dependency for one file per run; PyYAML, already used to read the file, checks the
result.

>>> text = "# cells\\npath: /data/cells  # root\\ntrain: images/train # 8 images\\nnames: [a, b]\\n"
>>> print(set_keys(text, {"path": DELETE, "train": "images/train2"}), end="")
# cells
train: images/train2 # 8 images
names: [a, b]
"""

from __future__ import annotations

import re
from typing import Any

DELETE = object()  # the value that removes a key

# a top-level "key:" at column 0: a plain key, or a quoted one
_KEY = re.compile(r"""^(?P<key>[A-Za-z0-9_][\w.\-/]*|"(?:[^"\\]|\\.)*"|'(?:[^']|'')*')[ \t]*:(?=[ \t]|$)""")


def set_keys(text: str, changes: dict[str, Any]) -> str | None:
    """``text`` with each key of ``changes`` set to its value (``DELETE`` removes the key);
    every other line kept as it was. None when the file's layout is not one this can edit
    safely, or when the result would not parse to the wanted mapping."""
    import yaml

    try:
        before = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(before, dict):
        return None
    lines = text.splitlines(keepends=True)
    blocks = _blocks(lines)
    if blocks is None:
        return None
    by_key = {key: (start, end) for key, start, end in blocks}
    if len(by_key) != len(blocks) or set(by_key) != {str(k) for k in before}:
        return None  # duplicate keys, or keys this scan did not see (a complex key): do not guess
    new_line: dict[int, list[str]] = {}
    dropped: set[int] = set()
    for key, value in changes.items():
        if key not in by_key:
            if value is DELETE:
                continue
            return None  # adding keys is not needed by any caller; keep the edit simple
        start, end = by_key[key]
        dropped.update(range(start, end))
        if value is not DELETE:
            new_line[start] = _render(key, value, lines[start])
    out = []
    for i, line in enumerate(lines):
        if i in new_line:
            out.extend(new_line[i])
        elif i not in dropped:
            out.append(line)
    result = "".join(out)
    want = {k: v for k, v in before.items() if changes.get(str(k), None) is not DELETE}
    for key, value in changes.items():
        if value is not DELETE and key in want:
            want[key] = value
    try:
        if yaml.safe_load(result) != want:
            return None
    except yaml.YAMLError:
        return None
    return result


def _blocks(lines: list[str]) -> list[tuple[str, int, int]] | None:
    """(key, first line, end line) for every top-level key; None for layouts not handled."""
    starts: list[tuple[str, int]] = []
    for i, line in enumerate(lines):
        s = line.rstrip("\r\n")
        if not s or s[0] in " \t#":
            continue
        if starts and (s == "-" or s.startswith("- ")):
            continue  # a sequence item at column 0 ("train:\n- a\n- b"): still the key above's value
        if s.startswith(("---", "...", "%")):
            return None  # document markers and directives
        m = _KEY.match(s)
        if m is None:
            return None  # a flow mapping, a list, a complex or anchored key at the top level
        starts.append((_key_text(m.group("key")), i))
    blocks = []
    for n, (key, start) in enumerate(starts):
        end = starts[n + 1][1] if n + 1 < len(starts) else len(lines)
        # blank lines and column-0 comments just above the next key are that key's header
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
            end -= 1
        blocks.append((key, start, end))
    return blocks


def _key_text(raw: str) -> str:
    if raw[0] in "\"'":
        import yaml

        return str(yaml.safe_load(raw))
    return raw


def _render(key: str, value: Any, old_line: str) -> list[str]:
    """The new lines for ``key: value``; a one-line value keeps the old line's trailing comment."""
    import yaml

    text = yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True, default_flow_style=False,
                          width=1 << 20)
    new = text.splitlines(keepends=True)
    eol = "\r\n" if old_line.endswith("\r\n") else "\n"
    new = [ln.rstrip("\r\n") + eol for ln in new]
    comment = _comment(old_line.rstrip("\r\n"))
    if comment and len(new) == 1:
        new[0] = new[0].rstrip("\r\n") + comment + eol
    return new


def _comment(line: str) -> str:
    """The trailing ``  # comment`` of a ``key: value`` line (with the spaces before it), or ''."""
    colon = _KEY.match(line)
    if colon is None:
        return ""
    quote = None
    prev = ":"
    for j in range(colon.end(), len(line)):
        c = line[j]
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'" and prev in " \t:[,{":
            quote = c  # a quote opens a scalar only at the start of a token
        elif c == "#" and prev in " \t":
            k = j
            while k > colon.end() and line[k - 1] in " \t":
                k -= 1
            return line[k:]
        prev = c
    return ""
