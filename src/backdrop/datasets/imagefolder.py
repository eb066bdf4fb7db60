"""Hugging Face ``imagefolder`` sets: images with a ``metadata.jsonl`` (or ``metadata.csv``).

::

    train/metadata.jsonl   {"file_name": "0001.png", "text": "a cell", "label": 3, ...}
    train/0001.png
    test/metadata.jsonl ...

or one ``metadata.jsonl`` at the root (its split is ``train``, as the ``datasets`` library names
it). ``file_name`` is relative to the metadata file's folder. Every column is carried to the
output, where ``file_name`` names the new image (relative, so the set can be moved or copied; an
absolute name in a split copied unchanged is made relative too) and the file is written in the
source's format (JSON lines or CSV with the same columns), rows in order of ``file_name``.

Bad input: a line that is not a JSON object, or a row without ``file_name``, is an item error at
``<metadata rel>#line=<n>``; a row whose image is missing, or a ``file_name`` listed twice, is an
error on that image; a CSV without a ``file_name`` column is an InputError for the set.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..errors import InputError
from ..outputs import atomic_copy, atomic_text
from .base import Dataset, Item, canonical_split, is_split_name, posix_rel

META_NAMES = ("metadata.jsonl", "metadata.csv")


def _find(root: Path) -> list[tuple[Path, str]]:
    """(metadata file, split) pairs."""
    for name in META_NAMES:
        if (root / name).is_file():
            return [(root / name, "train")]
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and is_split_name(p.name)):
        for name in META_NAMES:
            if (d / name).is_file():
                out.append((d / name, canonical_split(d.name)))
                break
    return out


def _rows(path: Path) -> tuple[list[tuple[int, dict | None, str | None]], list[str] | None]:
    """[(line number, row or None, error or None)], CSV header (None for JSON lines)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    out = []
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        if "file_name" not in header:
            raise InputError(f"{path}: no 'file_name' column (columns: {', '.join(header) or 'none'})")
        for row in reader:
            out.append((reader.line_num, dict(row), None))
        return out, list(header)
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            out.append((n, None, f"{path}:{n}: not JSON ({exc.msg}, column {exc.colno})"))
            continue
        if not isinstance(row, dict):
            out.append((n, None, f"{path}:{n}: expected a JSON object, got {type(row).__name__}"))
        elif not isinstance(row.get("file_name"), str):
            out.append((n, None, f"{path}:{n}: no 'file_name'"))
        else:
            out.append((n, row, None))
    return out, None


class ImageFolderDataset(Dataset):
    format = "imagefolder"

    def __init__(self, root, metas: list[tuple[Path, str]]):
        splits = []
        for _, s in metas:
            if s not in splits:
                splits.append(s)
        super().__init__(root, splits, {"metadata": [posix_rel(m, root) for m, _ in metas],
                                        "description": "Hugging Face imagefolder"})
        self._metas = {posix_rel(m, root): (m, s) for m, s in metas}

    def _entries(self, chosen):
        out = []
        for mrel, (mpath, split) in self._metas.items():
            if not self._wants(chosen, split):
                continue
            rows, header = _rows(mpath)
            lines: dict[str, list[int]] = {}
            for n, row, err in rows:
                if err:
                    out.append((f"{mrel}#line={n}", split, mpath, {"error": err}))
                    continue
                p = Path(os.path.normpath(mpath.parent / row["file_name"]))
                rel = posix_rel(p, self.root)
                lines.setdefault(rel, []).append(n)
                if len(lines[rel]) > 1:
                    continue
                out.append((rel, split, p, {"row": row, "metadata": mrel, "line": n, "columns": header,
                                            "_lines": lines[rel], "_mpath": mpath}))
        return out

    def _item(self, rel, split, path, meta):
        if meta.get("error"):
            return Item(path, rel, split, None, meta, error=meta["error"])
        lines, mpath = meta.pop("_lines"), meta.pop("_mpath")
        if len(lines) > 1:
            return Item(path, rel, split, None, meta,
                        error=f"{mpath}:{lines[1]}: file_name {meta['row']['file_name']!r} listed again "
                              f"(first on line {lines[0]})")
        if not path.is_file():
            return Item(path, rel, split, None, meta,
                        error=f"{mpath}:{meta['line']}: {meta['row']['file_name']!r}: no such image")
        return Item(path, rel, split, None, meta)

    def record(self, item: Item, image_rel: str, size: tuple[int, int]) -> dict:
        mdir = PurePosixPath(item.meta["metadata"]).parent.as_posix()
        fname = image_rel if mdir in ("", ".") else PurePosixPath(os.path.relpath(image_rel, mdir)).as_posix()
        return {"metadata": item.meta["metadata"], "row": {**item.meta["row"], "file_name": fname}}

    def finalize(self, dst: Path, records: Iterable[dict], *, copied: Iterable[str] = ()) -> list[str]:
        dst = Path(dst)
        by_split = {s: mrel for mrel, (_, s) in self._metas.items()}
        written = []
        with tempfile.TemporaryDirectory(prefix=".backdrop-meta-") as tmp:
            spools: dict[str, tuple] = {}
            try:
                for r in records:
                    mrel = r.get("metadata") or by_split.get(r.get("split", ""))
                    if mrel is None or "row" not in r:
                        continue
                    if mrel not in spools:
                        spools[mrel] = (open(Path(tmp) / f"{len(spools)}.jsonl", "w+b"), [])
                    fh, index = spools[mrel]
                    line = json.dumps(r["row"], ensure_ascii=False).encode("utf-8")
                    index.append((r["rel"], fh.tell(), len(line)))
                    fh.write(line + b"\n")
                for mrel, (fh, index) in spools.items():
                    index.sort(key=lambda e: e[0])
                    mpath = self._metas[mrel][0]
                    with atomic_text(dst / mrel, newline="" if mpath.suffix == ".csv" else None) as out:
                        writer = None
                        if mpath.suffix == ".csv":
                            _, header = _rows(mpath)
                            writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore")
                            writer.writeheader()
                        for _, off, ln in index:
                            fh.seek(off)
                            row = json.loads(fh.read(ln).decode("utf-8"))
                            if writer is not None:
                                writer.writerow(row)
                            else:
                                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    written.append(mrel)
            finally:
                for fh, _ in spools.values():
                    fh.close()
        for split in copied:
            mrel = by_split.get(canonical_split(split) if split else split)
            if mrel is not None and mrel not in written:
                self._copy_metadata(mrel, dst / mrel)
                written.append(mrel)
        return sorted(written)

    def _copy_metadata(self, mrel: str, final: Path) -> None:
        """A split copied unchanged keeps its metadata file byte for byte, unless a ``file_name``
        is an absolute path (the ``datasets`` library would load the source's image): those rows
        get the name relative to the metadata file, and the file is written again."""
        mpath = self._metas[mrel][0]
        rows, header = _rows(mpath)
        if not any(row is not None and os.path.isabs(row["file_name"]) for _, row, _ in rows):
            atomic_copy(mpath, final)
            return
        def relative(row: dict) -> dict:
            name = row["file_name"]
            if not os.path.isabs(name):
                return row
            target = Path(os.path.normpath(name))
            if posix_rel(target, self.root).startswith("../"):  # outside the set: reported, not copied
                return row
            return {**row, "file_name": posix_rel(target, mpath.parent)}

        csv_out = mpath.suffix == ".csv"
        with atomic_text(final, newline="" if csv_out else None) as out:
            writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore") if csv_out else None
            if writer is not None:
                writer.writeheader()
            for _, row, _ in rows:
                if row is None:
                    continue  # a broken line was reported; it is not carried over
                if writer is not None:
                    writer.writerow(relative(row))
                else:
                    out.write(json.dumps(relative(row), ensure_ascii=False) + "\n")


class ImageFolderFormat:
    name = "imagefolder"
    looks_for = "metadata.jsonl/.csv"
    fallback = False

    def detect(self, root: Path) -> str | None:
        root = Path(root)
        if not root.is_dir():
            return None
        found = _find(root)
        if not found:
            return None
        parts = ", ".join(f"{posix_rel(m, root)} ({s})" for m, s in found)
        return f"Hugging Face imagefolder ({parts})"

    def open(self, root: Path) -> ImageFolderDataset:
        root = Path(root)
        found = _find(root) if root.is_dir() else []
        if not found:
            raise InputError(f"{root}: no metadata.jsonl or metadata.csv (at the root or in split folders)")
        for m, _ in found:
            if m.suffix == ".csv":
                _rows(m)  # a CSV without file_name fails here, for the whole set
        return ImageFolderDataset(root, found)


FORMAT = ImageFolderFormat()
