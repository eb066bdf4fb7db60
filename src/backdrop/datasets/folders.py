"""Class folders (``split/class/file`` or ``class/file``) and plain folders of images.

Class folders: every folder under the root is a split (``train``, ``val``/``valid``/
``validation``, ``test``, ...) holding class folders, or, with no split folders, a class folder
itself (at least two of them). The class is the folder's name (``meta["class"]``); there are no
label files, so nothing but the images is written. Folders named ``images``, ``labels``,
``masks`` or ``annotations`` belong to other formats and are not taken for classes.

Plain: any folder with images (searched recursively) that no other format claims; split ``""``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .base import Dataset, canonical_split, has_images, is_image, is_split_name, posix_rel, scan_images

RESERVED = {"images", "labels", "masks", "annotations"}


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _top_images(folder: Path) -> bool:
    return any(p.is_file() and is_image(p) for p in folder.iterdir())


def _layout(root: Path) -> dict[str, list[Path]] | None:
    """{split: [class folders]} ("" when there are no split folders), or None."""
    if not root.is_dir() or _top_images(root):
        return None
    if (root / "metadata.jsonl").exists() or (root / "metadata.csv").exists():
        return None
    subs = _subdirs(root)
    if not subs or any(d.name.lower() in RESERVED for d in subs):
        return None
    if all(is_split_name(d.name) for d in subs):
        out = {}
        for d in subs:
            classes = [c for c in _subdirs(d) if has_images(c)]
            if not classes or _top_images(d) or any(c.name.lower() in RESERVED for c in _subdirs(d)):
                return None
            if (d / "metadata.jsonl").exists() or (d / "metadata.csv").exists():
                return None
            out[d.name] = classes
        return out
    classes = [d for d in subs if has_images(d)]
    if len(classes) < 2 or any(is_split_name(d.name) for d in subs):
        return None
    return {"": classes}


class FoldersDataset(Dataset):
    format = "folders"

    def __init__(self, root, layout: dict[str, list[Path]]):
        splits = [canonical_split(s) if s else "" for s in layout]
        classes = sorted({c.name for cs in layout.values() for c in cs})
        super().__init__(root, splits, {"classes": classes, "description": "class folders"})
        self._layout = layout

    def _entries(self, chosen):
        out = []
        for raw, classes in self._layout.items():
            split = canonical_split(raw) if raw else ""
            if not self._wants(chosen, split):
                continue
            for c in classes:
                for p in scan_images(c):
                    out.append((posix_rel(p, self.root), split, p, {"class": c.name}))
        return out


class FoldersFormat:
    name = "folders"
    looks_for = "class folders, split/class/file"
    fallback = False

    def detect(self, root: Path) -> str | None:
        layout = _layout(Path(root))
        if layout is None:
            return None
        classes = sorted({c.name for cs in layout.values() for c in cs})
        shown = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        where = f"splits {', '.join(layout)}; " if "" not in layout else ""
        return f"class folders ({where}{len(classes)} classes: {shown})"

    def open(self, root: Path) -> FoldersDataset:
        root = Path(root)
        layout = _layout(root)
        if layout is None:
            raise InputError(f"{root}: not class folders (expected split/class/file or class/file "
                             "with at least two class folders)")
        return FoldersDataset(root, layout)


class PlainDataset(Dataset):
    format = "plain"

    def __init__(self, root):
        super().__init__(root, [""], {"description": "plain folder"})

    def _entries(self, chosen):
        if not self._wants(chosen, ""):
            return []
        return [(posix_rel(p, self.root), "", p, {}) for p in scan_images(self.root)]


class PlainFormat:
    name = "plain"
    looks_for = "any folder of images"
    fallback = True  # any folder of images: tried after every other format

    def detect(self, root: Path) -> str | None:
        root = Path(root)
        if not has_images(root):
            return None
        from .registry import FORMATS

        if any(f.detect(root) for f in FORMATS.specific()):
            return None
        n = len(scan_images(root))
        return f"plain folder of images ({n} images, no labels)"

    def open(self, root: Path) -> PlainDataset:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: no such folder")
        if not has_images(root):
            raise InputError(f"{root}: folder has no images")
        return PlainDataset(root)


FORMAT = FoldersFormat()
PLAIN = PlainFormat()

__all__ = ["FORMAT", "PLAIN", "FoldersDataset", "PlainDataset"]
