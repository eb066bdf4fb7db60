"""The one in-memory label model: objects with a class, a box and an optional mask.

Every format reader turns its labels into :class:`Labels` (a tuple of :class:`Obj`), in pixels of
the *upright* image (EXIF orientation applied, as :func:`backdrop.images.load_image` makes it).
Sizes passed to :meth:`Obj.mask` and :meth:`Labels.foreground` are ``(width, height)``, in the
order of ``PIL.Image.size``; the arrays they return are ``height x width``.

Polygons and RLE are rasterised by pycocotools, the COCO reference implementation, so a mask here
is the mask that ``COCO.annToMask`` gives for the same annotation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Box = tuple[float, float, float, float]


def _decode(rle: dict) -> np.ndarray:
    """pycocotools' decode, quiet: under numpy 2 it warns about its own ``__array__``."""
    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        return mask_utils.decode([rle])[:, :, 0].astype(bool)


def _wh(size: tuple[int, int]) -> tuple[int, int]:
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0:
        raise ValueError(f"size must be (width, height) > 0, got {size!r}")
    return w, h


def box_mask(box: Box, size: tuple[int, int]) -> np.ndarray:
    """A bool ``h x w`` mask of the pixels that the box touches (partly covered pixels included)."""
    w, h = _wh(size)
    x0, y0, x1, y1 = box
    c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    c1, r1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
    out = np.zeros((h, w), bool)
    if c1 > c0 and r1 > r0:
        out[r0:r1, c0:c1] = True
    return out


def polygons_mask(polygons, size: tuple[int, int]) -> np.ndarray:
    """Fill flat ``(x1, y1, x2, y2, ...)`` polygons (pixels) as COCO does; bool ``h x w``."""
    from pycocotools import mask as mask_utils

    w, h = _wh(size)
    polys = [list(map(float, p)) for p in polygons]
    if not polys:
        return np.zeros((h, w), bool)
    rles = mask_utils.frPyObjects(polys, h, w)
    return _decode(mask_utils.merge(rles))


def rle_mask(rle: dict, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a COCO RLE (compressed string/bytes counts, or an uncompressed list); bool ``h x w``.

    ``size`` (width, height), when given, must match the RLE's own ``size`` ([height, width]).
    """
    from pycocotools import mask as mask_utils

    h, w = (int(v) for v in rle["size"])
    if size is not None and _wh(size) != (w, h):
        raise ValueError(f"RLE is {w}x{h}, the image {size[0]}x{size[1]}")
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed (iscrowd): frPyObjects compresses it
        enc = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        enc = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return _decode(enc)


@dataclass(frozen=True)
class Obj:
    """One labelled object.

    ``category`` is the format's own class id (YOLO index, COCO ``category_id``; -1 where a format
    has no per-object class). ``box`` is ``(x0, y0, x1, y1)`` in pixels of the upright image.
    ``polygons`` are flat pixel polygons, ``rle`` a COCO RLE dict; an object has at most one of
    them. ``extra`` carries other fields (COCO: ``id``, ``iscrowd``, ``area``, ...).
    """

    category: int
    box: Box
    polygons: tuple[tuple[float, ...], ...] = ()
    rle: dict | None = field(default=None, compare=True, hash=False)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def has_mask(self) -> bool:
        return bool(self.polygons) or self.rle is not None

    def mask(self, size: tuple[int, int]) -> np.ndarray:
        """The object's pixels, bool ``h x w`` for ``size`` = (width, height): the polygon fill or
        the RLE decoded; the box filled when the object has no mask."""
        if self.rle is not None:
            return rle_mask(self.rle, size)
        if self.polygons:
            return polygons_mask(self.polygons, size)
        return box_mask(self.box, size)


def read_mask_file(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A user's mask image as bool ``h x w``: foreground where the value is > 0 (any channel of
    an RGB mask, the palette index of a ``P`` mask), after the EXIF orientation is applied."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode == "P":
            arr = np.asarray(im)  # palette indices: 0 is the background (as in VOC)
        elif im.mode in ("RGBA", "LA", "PA"):
            arr = np.asarray(im.convert("RGB" if im.mode == "RGBA" else "L"))
        else:
            arr = np.asarray(im)
    fg = arr > 0
    if fg.ndim == 3:
        fg = fg.any(axis=2)
    if size is not None and (fg.shape[1], fg.shape[0]) != _wh(size):
        raise ValueError(f"{path}: mask is {fg.shape[1]}x{fg.shape[0]}, the image {size[0]}x{size[1]}")
    return fg


@dataclass(frozen=True)
class Labels:
    """An image's labels: its objects, and for mask-pair sets the user's mask file."""

    objects: tuple[Obj, ...] = ()
    mask_file: Path | None = None

    def has_masks(self) -> bool:
        """True when the foreground is fully known: a mask file, or every object has a mask.

        An image with no objects (a YOLO background image) counts: its foreground is known to
        be empty.
        """
        return self.mask_file is not None or all(o.has_mask() for o in self.objects)

    def foreground(self, size: tuple[int, int]) -> np.ndarray | None:
        """The union of the objects' masks (or the mask file's > 0), bool ``h x w``; None when
        some object has only a box (the foreground is then not known)."""
        w, h = _wh(size)
        if self.mask_file is not None:
            fg = read_mask_file(self.mask_file, (w, h))
            for o in self.objects:
                if o.has_mask():
                    fg |= o.mask((w, h))
            return fg
        if not self.has_masks():
            return None
        fg = np.zeros((h, w), bool)
        for o in self.objects:
            fg |= o.mask((w, h))
        return fg

    def boxes(self) -> list[Box]:
        return [o.box for o in self.objects]


# -- the labels-aware rule: one for `augment`, `backdrop masks` and the training-loop transform ------


def segment_plan(labels: Labels | None, size: tuple[int, int], box_grow: float):
    """Where an image's foreground comes from, given its labels: ``(foreground, region, boxes)``.

    - masks known (a mask file, every object's polygon/RLE, or no objects at all):
      ``foreground`` is their union (bool ``h x w``); the segmenter is not needed;
    - boxes only: ``region`` (bool ``h x w``) is the boxes grown by ``box_grow`` of their size
      (+2 px), inside which the segmenter's mask is kept, and ``boxes`` the boxes themselves
      (each must then be covered enough, see :func:`cover_boxes`);
    - no labels: ``(None, None, None)``, the segmenter's mask of the whole image.
    """
    if labels is None:
        return None, None, None
    fg = labels.foreground(size)
    if fg is not None:
        return fg, None, None
    boxes = labels.boxes()
    w, h = _wh(size)
    region = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in boxes:
        gx, gy = (x1 - x0) * box_grow + 2, (y1 - y0) * box_grow + 2
        region |= box_mask((x0 - gx, y0 - gy, x1 + gx, y1 + gy), (w, h))
    return None, region, boxes


def cover_boxes(mask: np.ndarray, boxes: list[Box], min_cover: float) -> tuple[list[float], list[int], np.ndarray]:
    """Each labelled box must be covered by the mask at least ``min_cover`` of its area.

    Returns the coverages (rounded), the indices of the boxes below it, and the mask with those
    boxes filled whole (bool ``h x w``; the input itself when none falls short)."""
    m = np.asarray(mask) > 0
    size = (m.shape[1], m.shape[0])
    covers, short = [], []
    for i, box in enumerate(boxes):
        inside = box_mask(box, size)
        cover = float((m & inside).sum()) / max(1, int(inside.sum()))
        covers.append(round(cover, 3))
        if cover < min_cover:
            short.append(i)
    if short:
        m = m.copy()
        for i in short:
            m |= box_mask(boxes[i], size)
    return covers, short, m
