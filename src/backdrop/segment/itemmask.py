"""One item's segmenter mask: box-prompted where labels are boxes, whole-frame otherwise, cached.

:func:`item_mask` is what the items layer calls when an image's labels do not give its mask. It
returns the mask with what the segmenter said about it (its warnings, and for boxes the
per-object record: cover of the box, confidence, doubtful, fallback). The :class:`MaskCache`
keeps all of that beside the mask, so a run served from the cache records exactly what the
first run did: a doubtful mask stays doubtful.

>>> m = item_mask(pipe.segmenter, pipe.config.segment, image, path, boxes=[(10, 10, 90, 120)])  # doctest: +SKIP
>>> m.mask, m.warnings, m.objects[0]["confidence"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
from PIL import Image, PngImagePlugin

from .. import runlog
from ..errors import BackdropError

log = logging.getLogger(__name__)

_META = "backdrop-segment"  # the PNG text chunk that holds a cached mask's record


@dataclass
class ItemMask:
    mask: Image.Image  # mode L, 255 = foreground
    method: str  # "boxes" (box-prompted) or "whole" (the segmenter on the whole frame)
    warnings: list[str] = field(default_factory=list)  # what the segmenter said, first run or cached
    objects: Optional[list[dict[str, Any]]] = None  # boxes: one record per box
    notes: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    seconds: float = 0.0

    def apply(self, prep: Any) -> None:
        """Put the segmenter's account into a prepared item: its time, its warnings (first, as if
        the segmenter had just run), the cache hit and the per-object record."""
        if not self.cached:
            prep.timings["segment"] = prep.timings.get("segment", 0.0) + self.seconds
        prep.warnings[:0] = [w for w in self.warnings if w not in prep.warnings]
        prep.notes.update(self.notes)
        prep.notes["segment_method"] = self.method
        if self.cached:
            prep.notes["mask_cache"] = "hit"
        if self.objects is not None:
            prep.notes["segment_objects"] = self.objects


class MaskCache:
    """Segmenter masks kept by the image's content, the segmenter's settings (model, input size,
    runtime, ...), the boxes and the method, each with its record (warnings, per-object
    confidence), so augmenting the same images again (other seeds, more variants, another output)
    skips the segmenter and still says what the first run said. About 5-20 kB a mask; delete the
    folder to clear it. Best effort: a cache that cannot be read or written is passed over."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @classmethod
    def for_job(cls, job: Any) -> Optional["MaskCache"]:
        if not job.mask_cache:
            return None
        if job.mask_cache == "auto":
            from ..models import home

            return cls(home() / "cache" / "masks")
        return cls(Path(job.mask_cache))

    def key(self, path: str | Path, segment: Any, region: Optional[Image.Image] = None, extra: Any = None) -> str:
        from ..version import __version__

        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(json.dumps({"segment": asdict(segment), "version": __version__}, sort_keys=True).encode())
        if region is not None:
            h.update(np.packbits(np.asarray(region) > 0).tobytes())
        if extra is not None:
            h.update(json.dumps(extra, sort_keys=True, default=str).encode())
        return h.hexdigest()[:40]

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.png"

    def get(self, key: str, size: tuple[int, int]) -> Optional[Image.Image]:
        found = self.get_record(key, size)
        return None if found is None else found[0]

    def get_record(self, key: str, size: tuple[int, int]) -> Optional[tuple[Image.Image, dict[str, Any]]]:
        """(mask, record) when cached with its record; a mask cached without one (an older
        backdrop) counts as absent, so its warnings are never lost."""
        try:
            with Image.open(self._path(key)) as im:
                im.load()
                text = getattr(im, "text", {}).get(_META)
                if im.size != size or text is None:
                    return None
                return im.convert("L"), json.loads(text)
        except (OSError, ValueError, SyntaxError):
            return None

    def put(self, key: str, mask: Image.Image, record: Optional[dict[str, Any]] = None) -> None:
        from ..outputs import write_new

        try:
            self._path(key).parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            info = PngImagePlugin.PngInfo()
            info.add_text(_META, json.dumps(record or {}, default=str))
            mask.save(buf, "PNG", optimize=False, pnginfo=info)
            if not write_new(self._path(key), buf.getvalue()):  # there already: replaced only if it had no record
                with Image.open(self._path(key)) as old:
                    if _META not in getattr(old, "text", {}):
                        from ..outputs import atomic_write_bytes

                        atomic_write_bytes(self._path(key), buf.getvalue())
        except (OSError, ValueError, BackdropError) as exc:
            log.debug("mask cache not written: %s", exc)


@contextlib.contextmanager
def _stage_errors() -> Iterator[None]:
    """A backend's own exception becomes one line naming the stage (as Prepared.timed does)."""
    try:
        yield
    except BackdropError:
        raise
    except Exception as exc:  # noqa: BLE001
        from ..errors import GenerationError

        raise GenerationError(f"segment failed ({type(exc).__name__}: {exc})") from exc


def item_mask(
    segmenter: Any,
    config: Any,
    image: Image.Image,
    path: str | Path | None,
    *,
    boxes: Optional[Sequence[tuple[float, float, float, float]]] = None,
    region: Optional[Image.Image] = None,
    cache: Optional[MaskCache] = None,
    box_prompt: bool = True,
    box_grow: float = 0.05,
    label: Optional[str] = None,
) -> ItemMask:
    """The item's mask: with ``boxes`` and ``box_prompt``, each box segmented on its own
    (:func:`backdrop.segment.boxes.box_masks`); else the segmenter on the whole frame, kept inside
    ``region`` (the grown boxes) when given. From ``cache`` when it made this one before."""
    from .boxes import METHOD, box_masks

    method = "boxes" if boxes and box_prompt else "whole"
    key = None
    if cache is not None and path is not None:
        extra: dict[str, Any] = {"method": METHOD, "boxes": [list(map(float, b)) for b in boxes],
                                 "grow": box_grow} if method == "boxes" else {}
        describe = getattr(segmenter, "describe", None)
        if callable(describe):  # what "auto" resolved to here (the runtime, the model file) is part of the key
            extra["segmenter"] = {k: v for k, v in describe().items() if k in ("file", "runtime", "size")}
        try:
            key = cache.key(path, config, None if method == "boxes" else region, extra or None)
        except OSError:
            key = None
        found = cache.get_record(key, image.size) if key else None
        if found is not None:
            mask, rec = found
            for w in rec.get("warnings", []):  # said again, as the first run said it
                log.warning("%s: %s", label, w) if label else log.warning(w)
            log.debug("mask from the cache (the segmenter made it for this image before)")
            return ItemMask(mask, method, list(rec.get("warnings", [])), rec.get("objects"),
                            dict(rec.get("notes", {})), cached=True)
    t0 = time.perf_counter()
    objects = None
    with runlog.collecting(label=label) as rec, _stage_errors():
        if method == "boxes":
            result = box_masks(image, boxes, segmenter, box_grow=box_grow)
            for w in result.warnings:
                runlog.warn(w)
            mask, objects = result.mask, result.objects
        else:
            m = segmenter(image)
            m = m.convert("L") if m.mode != "L" else m
            if m.size != image.size:
                m = m.resize(image.size, Image.Resampling.NEAREST)
            a = np.asarray(m) >= 128
            if region is not None:
                a &= np.asarray(region.convert("L").resize(image.size, Image.Resampling.NEAREST)) > 0
            mask = Image.fromarray(np.where(a, 255, 0).astype(np.uint8), "L")
    out = ItemMask(mask, method, list(rec["warnings"]), objects, dict(rec["notes"]), seconds=time.perf_counter() - t0)
    if key is not None:
        cache.put(key, mask, {"warnings": out.warnings, "objects": objects, "notes": out.notes, "method": method})
    return out
