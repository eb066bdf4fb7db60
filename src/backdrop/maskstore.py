"""Foreground masks kept by the image's *decoded pixels*, its boxes and the settings that made them.

Why not :class:`backdrop.engine.work.MaskCache` (keyed by the file's bytes): a transform inside a
training loop never sees a file, only the pixels a loader decoded. ``backdrop masks SRC`` fills
this store once; :class:`backdrop.transforms.ReplaceBackground` looks masks up by the pixels it is
given (and their boxes), so no epoch runs the segmenter.

A mask is one PNG (mode L, 255 = foreground) at ``folder/ab/<key>.png``. The key hashes the
pixels, their shape, the settings and the number of boxes; the PNG's text chunk ``backdrop-mask``
records the same facts plus the boxes, and a lookup compares the facts exactly and the boxes
within ``BOX_TOLERANCE`` pixels (clipped to the image, in any order): a loader's boxes come from
the same labels through other float arithmetic (YOLO's normalised centres, albumentations'
normalised corners), so an exact match would miss by 1e-13 px. A clash of key prefixes, a file
copied under another name or other boxes is a miss, never a wrong mask. Writes go
through :func:`backdrop.outputs.write_new` (a temporary file linked into place): concurrent
writers of one key cannot tear a file, and a process killed mid-write leaves no partial mask.

>>> import numpy as np, tempfile
>>> store = MaskStore(tempfile.mkdtemp())
>>> img = np.zeros((4, 6, 3), np.uint8); fg = np.zeros((4, 6), bool); fg[1:3, 2:4] = True
>>> store.put(img, None, {"source": "labels"}, fg)
True
>>> bool((store.get(img, None, {"source": "labels"}) == fg).all())
True
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image, PngImagePlugin

log = logging.getLogger(__name__)

TEXT_KEY = "backdrop-mask"
VERSION = 1
BOX_TOLERANCE = 0.5  # pixels: boxes this close count as the same boxes


def default_folder() -> Path:
    """``$BACKDROP_HOME/cache/pixel-masks``."""
    from .models import home

    return home() / "cache" / "pixel-masks"


def _boxes(boxes: Optional[Sequence[Sequence[float]]], shape: Sequence[int]) -> Optional[np.ndarray]:
    """Boxes as float ``N x 4``, clipped to the image, sorted (order does not matter)."""
    if boxes is None:
        return None
    arr = np.asarray(boxes, dtype=np.float64)
    arr = arr.reshape(-1, 4) if arr.size else np.zeros((0, 4))
    h, w = int(shape[0]), int(shape[1])
    arr = np.clip(arr, 0, [w, h, w, h])
    return arr[np.lexsort(arr.T[::-1])] if len(arr) else arr


def _facts(image: np.ndarray, boxes: Any, settings: dict[str, Any]) -> dict[str, Any]:
    img = np.ascontiguousarray(image)
    return {
        "version": VERSION,
        "pixels": hashlib.sha256(img.data).hexdigest(),
        "shape": list(img.shape),
        "dtype": str(img.dtype),
        "boxes": None if boxes is None else len(np.asarray(boxes).reshape(-1)) // 4,
        "settings": json.loads(json.dumps(settings, sort_keys=True, default=str)),
    }


def _same_boxes(stored: Any, query: Optional[np.ndarray]) -> bool:
    if stored is None or query is None:
        return stored is None and query is None
    a = np.asarray(stored, dtype=np.float64).reshape(-1, 4)
    return a.shape == query.shape and bool(np.all(np.abs(a - query) <= BOX_TOLERANCE))


class MaskStore:
    """Masks by decoded pixels + boxes + settings (see the module docstring). Best effort on read:
    a file that cannot be read or whose record differs is a miss."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder).expanduser() if folder is not None else default_folder()

    def __repr__(self) -> str:
        return f"MaskStore({str(self.folder)!r})"

    @staticmethod
    def facts(image: np.ndarray, boxes: Any, settings: dict[str, Any]) -> dict[str, Any]:
        """What identifies a mask: the pixels' hash and shape, the boxes, the settings."""
        return _facts(image, boxes, settings)

    @staticmethod
    def key(facts: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:40]

    def path(self, facts: dict[str, Any]) -> Path:
        key = self.key(facts)
        return self.folder / key[:2] / f"{key}.png"

    def get(self, image: np.ndarray, boxes: Any, settings: dict[str, Any],
            facts: dict[str, Any] | None = None) -> Optional[np.ndarray]:
        """The stored mask as bool ``h x w``, or None."""
        facts = facts or _facts(image, boxes, settings)
        path = self.path(facts)
        try:
            with Image.open(path) as im:
                record = json.loads(im.text.get(TEXT_KEY, "null"))
                if record is None or record.get("facts") != facts:
                    log.debug("mask store: %s holds another mask's record; ignored", path)
                    return None
                if not _same_boxes(record.get("boxes"), _boxes(boxes, facts["shape"])):
                    log.debug("mask store: %s was made for other boxes; ignored", path)
                    return None
                arr = np.asarray(im.convert("L")) > 127
        except FileNotFoundError:
            return None
        except (OSError, ValueError, SyntaxError, AttributeError) as exc:
            log.debug("mask store: %s unreadable: %s", path, exc)
            return None
        if arr.shape != tuple(facts["shape"][:2]):
            return None
        return arr

    def put(self, image: np.ndarray, boxes: Any, settings: dict[str, Any], mask: np.ndarray,
            extra: dict[str, Any] | None = None, facts: dict[str, Any] | None = None) -> bool:
        """Store ``mask`` (bool or 0/255, ``h x w``); False when one is there already. Raises
        :class:`~backdrop.errors.OutputError` when the folder cannot be written."""
        from .outputs import write_new

        facts = facts or _facts(image, boxes, settings)
        m = np.asarray(mask)
        if m.shape != tuple(facts["shape"][:2]):
            raise ValueError(f"mask is {m.shape}, the image {tuple(facts['shape'][:2])}")
        path = self.path(facts)
        if path.exists():
            return False
        info = PngImagePlugin.PngInfo()
        clipped = _boxes(boxes, facts["shape"])
        record = {**(extra or {}), "facts": facts, "boxes": None if clipped is None else clipped.tolist()}
        info.add_text(TEXT_KEY, json.dumps(record, sort_keys=True))
        buf = io.BytesIO()
        Image.fromarray(np.where(m > 0, 255, 0).astype(np.uint8), "L").save(buf, "PNG", pnginfo=info)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_new(path, buf.getvalue())

    def record(self, image: np.ndarray, boxes: Any, settings: dict[str, Any]) -> Optional[dict[str, Any]]:
        """The stored mask's record (``facts`` plus what the writer added), or None."""
        path = self.path(_facts(image, boxes, settings))
        try:
            with Image.open(path) as im:
                return json.loads(im.text.get(TEXT_KEY, "null"))
        except (OSError, ValueError, SyntaxError):
            return None
