"""Thumbnails for the contact sheet, cached under ``SET/.backdrop/preview/thumbs/``.

A thumbnail's name is a hash of the image's path (relative to the set, so a moved set keeps its
thumbnails), its size and mtime in bytes and nanoseconds,
and the thumbnail size, followed by the image's upright width and height::

    .backdrop/preview/thumbs/3f/3f0c...e1_640x480.jpg

So the cache needs no index file that could disagree with it: a rerun lists the folder once,
finds every unchanged image's thumbnail by its hash (and its size, which the SVG overlay needs,
by its name) and opens no image again; a changed image gets a new name. Thumbnails are written
through :class:`backdrop.preview.files.Writer` (a temporary file linked into place), so a killed run
leaves no partial thumbnail and two runs at once never replace each other's. Names no longer used
are removed at the end of a run (they are this folder's own files, nothing else lies there).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

THUMB_PX = 320  # the longer side of a thumbnail
_NAME = re.compile(r"^([0-9a-f]{32})_(\d+)x(\d+)\.jpg$")
_OUTLINE = re.compile(r"^([0-9a-f]{32})\.outline\.json$")  # a mask file's outline (mask-pair sets)


@dataclass(frozen=True)
class Thumb:
    rel: str  # relative to the thumbs folder (POSIX)
    size: tuple[int, int]  # the image's upright (width, height)


def key_of(path: Path, px: int, root: Path) -> str | None:
    """The cache key of ``path``'s thumbnail (None when the file cannot be read)."""
    try:
        st = path.stat()
    except OSError:
        return None
    raw = f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\0{px}"
    return hashlib.sha256(raw.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class ThumbCache:
    """The thumbnails folder: find, make, and prune."""

    def __init__(self, folder: Path, px: int = THUMB_PX, root: Path | None = None, writer=None):
        from .files import Writer

        self.folder = Path(folder)
        self.writer = writer or Writer(self.folder / ".partial")
        self.root = Path(root) if root is not None else self.folder
        self.px = int(px)
        self.known: dict[str, Thumb] = {}
        self.outlines: dict[str, str] = {}  # key -> rel of a cached mask outline
        self.used: set[str] = set()
        self.made = 0
        self.reused = 0
        self._lock = threading.Lock()  # get() is called from a few threads
        if self.folder.is_dir():
            for sub in os.scandir(self.folder):
                if not sub.is_dir():
                    continue
                for f in os.scandir(sub.path):
                    m = _NAME.match(f.name)
                    if m:
                        self.known[m.group(1)] = Thumb(f"{sub.name}/{f.name}", (int(m.group(2)), int(m.group(3))))
                    elif _OUTLINE.match(f.name):
                        self.outlines[f.name[:32]] = f"{sub.name}/{f.name}"

    def get(self, path: Path) -> Thumb:
        """The thumbnail of ``path``, made if missing. Raises ValueError for an unreadable image."""
        key = key_of(path, self.px, self.root)
        if key is None:
            raise ValueError("no such file")
        hit = self.known.get(key)
        if hit is not None and (self.folder / hit.rel).is_file():
            with self._lock:
                self.used.add(hit.rel)
                self.reused += 1
            return hit
        data, size = make_thumb(path, self.px)
        rel = f"{key[:2]}/{key}_{size[0]}x{size[1]}.jpg"
        (self.folder / key[:2]).mkdir(parents=True, exist_ok=True)
        self.writer.new(self.folder / rel, data)  # False: another run made the same one (same bytes)
        thumb = Thumb(rel, size)
        with self._lock:
            self.known[key] = thumb
            self.used.add(rel)
            self.made += 1
        return thumb

    def outline(self, mask: Path) -> list[list[float]]:
        """The outline of a mask file (foreground > 0) as polygons in its pixels, cached like a
        thumbnail. Raises ValueError for an unreadable mask."""
        import json

        key = key_of(mask, self.px, self.root)
        if key is None:
            raise ValueError("no such file")
        rel = self.outlines.get(key)
        if rel is not None:
            try:
                polys = json.loads((self.folder / rel).read_text())
                with self._lock:
                    self.used.add(rel)
                return polys
            except (OSError, ValueError):
                pass
        polys = mask_outline(mask, self.px)
        rel = f"{key[:2]}/{key}.outline.json"
        (self.folder / key[:2]).mkdir(parents=True, exist_ok=True)
        self.writer.new(self.folder / rel, json.dumps(polys).encode())
        with self._lock:
            self.outlines[key] = rel
            self.used.add(rel)
        return polys

    def prune(self) -> int:
        """Remove thumbnails that this run did not use (images gone or changed); returns how many."""
        gone = 0
        for rel in [t.rel for t in self.known.values()] + list(self.outlines.values()):
            if rel not in self.used:
                try:
                    (self.folder / rel).unlink()
                    gone += 1
                except OSError:
                    pass
        return gone


def make_thumb(path: Path, px: int = THUMB_PX) -> tuple[bytes, tuple[int, int]]:
    """(JPEG bytes of the upright thumbnail, the upright image's (width, height)).

    JPEGs are decoded at a reduced scale (``draft``), which is most of the speed of a first run.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orient = im.getexif().get(0x0112)
            except Exception:
                orient = None
            if orient in (5, 6, 7, 8):
                w, h = h, w
            if im.format == "JPEG":
                im.draft("RGB", (px, px))
            im = ImageOps.exif_transpose(im)
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGBA")
                bg = Image.new("RGB", im.size, (255, 255, 255))
                bg.paste(im, mask=im.getchannel("A"))
                im = bg
            elif im.mode == "L":
                im = im.convert("RGB")
            im.thumbnail((px, px))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=82)
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except Exception as exc:  # PIL raises many kinds for non-images
        raise ValueError(f"not a readable image ({type(exc).__name__})") from None
    return buf.getvalue(), (w, h)


def mask_outline(path: Path, px: int = THUMB_PX) -> list[list[float]]:
    """The outer contours of a mask's foreground (> 0, EXIF orientation applied), traced at about
    thumbnail resolution and simplified, as flat polygons in the full mask's pixels."""
    import cv2
    import numpy as np

    from ..datasets.labels import read_mask_file

    try:
        fg = read_mask_file(path)
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for non-images
        raise ValueError(f"not a readable mask ({type(exc).__name__})") from None
    h, w = fg.shape
    scale = min(1.0, px / max(w, h))
    small = fg.astype(np.uint8) * 255
    if scale < 1.0:
        small = cv2.resize(small, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    contours, _ = cv2.findContours((small > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        c = cv2.approxPolyDP(c, 0.8, True)
        if len(c) < 3:
            continue
        polys.append([round(float(v) / scale, 1) for v in c.reshape(-1)])
    return polys
