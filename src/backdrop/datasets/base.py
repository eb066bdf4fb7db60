"""Items, the Dataset base class and the helpers that every format shares."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Protocol

from ..images import IMAGE_SUFFIXES
from .labels import Labels

VARIANT_TAG = "_bd"  # variant k of images/train/001.jpg is images/train/001_bd{k}.jpg


@dataclass(frozen=True)
class Item:
    """One image of a data set.

    ``rel`` is its POSIX path relative to the data set root: the identity that output names and
    seeds derive from. ``labels`` is None where the format has none (class folders, plain
    folders). ``error``, when set, is one line naming the file (and line) that is wrong; the
    engine reports it and goes on with the rest.
    """

    path: Path
    rel: str
    split: str
    labels: Labels | None
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    error: str | None = None


class DatasetFormat(Protocol):
    """What a format declares (register it in :data:`backdrop.datasets.FORMATS`)."""

    name: str
    looks_for: str  # one phrase: what detect() recognises (the "no data set found" message lists them)
    fallback: bool  # True: tried after every other format (plain)

    def detect(self, root: Path) -> str | None: ...

    def open(self, root: Path) -> "Dataset": ...


_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


def canonical_split(name: str) -> str:
    """``train2017`` -> ``train``, ``valid``/``validation`` -> ``val``, ``testing`` -> ``test``;
    other names are kept as they are."""
    base = re.sub(r"[-_]?\d+$", "", name.lower())
    return _SPLIT_ALIASES.get(base, name)


def order_splits(splits) -> list[str]:
    """Unique split names in the order train, val, test, then the others as they came."""
    seen = list(dict.fromkeys(splits))
    known = [s for s in ("train", "val", "test") if s in seen]
    return known + [s for s in seen if s not in known]


def is_split_name(name: str) -> bool:
    return canonical_split(name) in ("train", "val", "test")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def scan_images(folder: Path, *, recursive: bool = True) -> list[Path]:
    """The images under ``folder`` (hidden files and folders skipped), sorted."""
    if not folder.is_dir():
        return []
    found = []
    it = folder.rglob("*") if recursive else folder.iterdir()
    for p in it:
        if p.is_file() and is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            found.append(p)
    return sorted(found)


def has_images(folder: Path, *, recursive: bool = True) -> bool:
    if not folder.is_dir():
        return False
    it = folder.rglob("*") if recursive else folder.iterdir()
    return any(p.is_file() and is_image(p) for p in it)


def posix_rel(path: Path, root: Path) -> str:
    return PurePosixPath(*Path(os.path.relpath(path, root)).parts).as_posix()


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the upright image, read from the header (EXIF orientation applied).

    Raises ValueError with a short reason when the file is not a readable image.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orient = im.getexif().get(0x0112)
            except Exception:
                orient = None
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except Exception as exc:  # PIL raises many kinds for non-images
        raise ValueError(f"not a readable image ({type(exc).__name__})") from None
    return (h, w) if orient in (5, 6, 7, 8) else (w, h)


def norm_ext(ext: str | None, rel: str) -> str:
    if not ext:
        return PurePosixPath(rel).suffix
    return ext if ext.startswith(".") else "." + ext


class Dataset:
    """A data set opened by a format: streams its items and writes its index files.

    Subclasses set ``format`` and override what their format needs; the defaults suit a format
    with no label files and no index files (plain folders, class folders).
    """

    format: str = ""

    def __init__(self, root: Path, splits: list[str], info: dict | None = None):
        self.root = Path(root)
        self.splits = order_splits(splits)
        self.info = dict(info or {})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {self.root} splits={self.splits}>"

    # -- reading ----------------------------------------------------------------------------------
    def _entries(self, splits: set[str] | None) -> list[tuple[str, str, Path, dict]]:
        """(rel, split, path, meta) for every image of the chosen splits; subclasses fill it."""
        raise NotImplementedError

    def _item(self, rel: str, split: str, path: Path, meta: dict) -> Item:
        return Item(path=path, rel=rel, split=split, labels=None, meta=meta)

    def items(self, splits: Iterable[str] | None = None) -> Iterator[Item]:
        """The items of ``splits`` (all when None), sorted by ``rel``; labels parsed lazily."""
        chosen = None if splits is None else {canonical_split(s) if s else s for s in splits}
        for rel, split, path, meta in sorted(self._entries(chosen), key=lambda e: e[0]):
            if rel == ".." or rel.startswith("../") or PurePosixPath(rel).is_absolute():
                # its outputs would land outside the output folder
                yield Item(path, rel, split, None, meta, error=f"{path}: lies outside the data set root {self.root}")
                continue
            yield self._item(rel, split, path, meta)

    def _wants(self, chosen: set[str] | None, split: str) -> bool:
        return chosen is None or split in chosen

    # -- writing ----------------------------------------------------------------------------------
    def variant_rel(self, item: Item, k: int, ext: str | None = None) -> str:
        """Where variant ``k`` of ``item`` goes in the output set: ``images/train/001_bd1.jpg``;
        ``k = 0`` is the original, at the source's path (with ``ext`` as its suffix)."""
        p = PurePosixPath(item.rel)
        suffix = norm_ext(ext, item.rel)
        stem = p.stem if k == 0 else f"{p.stem}{VARIANT_TAG}{int(k)}"
        return str(p.with_name(stem + suffix))

    def label_files(self, item: Item, image_rel: str) -> dict[str, bytes]:
        """Label files to write beside the image at ``image_rel`` (rel path -> bytes)."""
        return {}

    def record(self, item: Item, image_rel: str, size: tuple[int, int]) -> dict:
        """JSON-able fields that :meth:`finalize` needs for the image at ``image_rel``
        (``size`` = (width, height) of the written image)."""
        return {}

    def passthrough(self, item: Item) -> dict[str, Path]:
        """For an item copied unchanged: {output rel: source file}, the image and its labels."""
        return {item.rel: item.path}

    def finalize(self, dst: Path, records: Iterable[dict], *, copied: Iterable[str] = ()) -> list[str]:
        """Write the output set's index files from ``records``; return the rel paths written.

        ``copied`` names splits that were copied unchanged through :meth:`passthrough` and have no
        records: their index files are written from the source.
        """
        for _ in records:  # consume, so a generator's side effects happen either way
            pass
        return []
