"""The data-sets page's logic, Streamlit-free (tested directly): which folders may be opened, what
``--format auto`` finds in one, and a few of its images with their labels drawn.

Server folders are opened only inside the roots given with ``backdrop studio --allow-root DIR``
(resolved first, so ``..`` and symlinks cannot lead out), the same rule as ``backdrop serve``.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import InputError

MAX_CANDIDATES = 200  # folders offered in the list; others can still be typed in


def check_path(path: str | Path, roots: Iterable[Path], what: str = "data set") -> Path:
    """``path`` resolved, if it lies inside one of ``roots`` and exists; InputError otherwise.

    A relative path is taken from the first root."""
    roots = tuple(Path(r).resolve() for r in roots)
    raw = str(path).strip()
    if not roots:
        raise InputError("no server folders are allowed: start the studio with --allow-root DIR")
    if not raw or "\x00" in raw:
        raise InputError(f"{what}: expected a folder")
    p = Path(raw).expanduser()
    resolved = (p if p.is_absolute() else roots[0] / p).resolve()  # symlinks followed: a link out ends outside
    if not any(resolved == r or r in resolved.parents for r in roots):
        raise InputError(f"{what}: {raw} is outside the allowed folders ({', '.join(map(str, roots))})")
    if not resolved.is_dir():
        raise InputError(f"{what}: {raw}: no such folder")
    return resolved


def candidates(roots: Iterable[Path], depth: int = 2) -> list[Path]:
    """Folders under ``roots`` (themselves included, ``depth`` levels down, hidden ones skipped)
    that ``--format auto`` recognises as a data set; a set's own subfolders are not listed."""
    from ..datasets import detect

    found: list[Path] = []
    loose = ("folders", "plain")  # any folder of folders of images is one: look below first

    def fmt(folder: Path) -> str | None:
        try:
            return detect(folder)[0]
        except Exception:  # noqa: BLE001 - not a set (or unreadable)
            return None

    def walk(folder: Path, level: int) -> bool:
        """True when ``folder`` or something below it was listed."""
        if len(found) >= MAX_CANDIDATES:
            return True
        here = fmt(folder)
        if here is not None and here not in loose:
            found.append(folder)
            return True
        below = False
        if level < depth:
            try:
                subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                subs = []
            mark = len(found)
            for sub in subs:
                walk(sub, level + 1)
            below = len(found) > mark
        if here is not None and not below:
            found.append(folder)  # class folders or plain images, with no more specific set inside
            return True
        return below

    for root in roots:
        if Path(root).is_dir():
            walk(Path(root), 0)
    return found


@dataclass
class SetSummary:
    root: Path
    format: str
    found: str  # the one-line description --format auto gives
    images: int = 0
    splits: dict[str, int] = field(default_factory=dict)  # split -> images
    classes: dict[str, int] = field(default_factory=dict)  # class name -> labelled objects (or images)
    errors: list[str] = field(default_factory=list)  # the first few items the reader could not use
    n_errors: int = 0
    samples: list = field(default_factory=list)  # a few Items, the first of each split first
    names: dict[int, str] = field(default_factory=dict)
    is_output: bool = False  # a set that backdrop wrote (it has a manifest)


def summarise(root: str | Path, *, samples: int = 6, max_errors: int = 5) -> SetSummary:
    """What ``--format auto`` finds in ``root``: one pass over its items (labels parsed)."""
    from ..datasets import detect, open_dataset
    from ..outputs import is_output_set
    from ..preview import class_names

    root = Path(root)
    fmt, found = detect(root)
    ds = open_dataset(root, fmt)
    names = class_names(ds)
    s = SetSummary(root=root, format=fmt, found=found, names=names, is_output=is_output_set(root))
    splits: Counter = Counter()
    classes: Counter = Counter()
    per_split: dict[str, list] = {}
    for item in ds.items():
        s.images += 1
        splits[item.split] += 1
        if item.error:
            s.n_errors += 1
            if len(s.errors) < max_errors:
                s.errors.append(item.error)
            continue
        if item.labels is not None:
            for o in item.labels.objects:
                classes[names.get(o.category, str(o.category) if o.category >= 0 else "object")] += 1
        cls = item.meta.get("class") if isinstance(item.meta, dict) else None
        if isinstance(cls, str):
            classes[cls] += 1
        bucket = per_split.setdefault(item.split, [])
        if len(bucket) < samples:
            bucket.append(item)
    s.splits = {k: splits[k] for k in ds.splits if k in splits} | {k: v for k, v in splits.items() if k not in ds.splits}
    s.classes = dict(sorted(classes.items(), key=lambda kv: (-kv[1], kv[0])))
    order = [it for split in s.splits for it in per_split.get(split, [])]
    s.samples = order[:samples]
    return s


def drawn(item, names: dict[int, str], size: int = 360):
    """A thumbnail of ``item`` with its labels drawn (boxes, polygons, class names), as a PIL image."""
    from PIL import Image, ImageDraw, ImageOps

    with Image.open(item.path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    w, h = im.size
    scale = min(1.0, size / max(w, h))
    im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))))
    draw = ImageDraw.Draw(im)
    for o in (item.labels.objects if item.labels is not None else ()):
        colour = _colour(o.category)
        if o.polygons:
            for poly in o.polygons:
                pts = [(poly[i] * scale, poly[i + 1] * scale) for i in range(0, len(poly) - 1, 2)]
                if len(pts) >= 2:
                    draw.line(pts + pts[:1], fill=colour, width=2)
        else:
            x0, y0, x1, y1 = (v * scale for v in o.box)
            draw.rectangle((x0, y0, x1, y1), outline=colour, width=2)
        label = names.get(o.category, "object" if o.category < 0 else str(o.category))
        x0, y0 = o.box[0] * scale, o.box[1] * scale
        draw.text((x0 + 2, max(0, y0 - 11)), label, fill=colour)
    return im


def _colour(c: int) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hls_to_rgb(((c * 137.508) % 360) / 360, 0.55, 0.85)
    return int(r * 255), int(g * 255), int(b * 255)


def folder_label(path: Path, roots: Iterable[Path]) -> str:
    """``path`` relative to the root that holds it (``root-name/sub``), for the list."""
    for r in roots:
        r = Path(r)
        if path == r or r in path.parents:
            rel = os.path.relpath(path, r)
            return r.name if rel == "." else f"{r.name}/{rel}"
    return str(path)
