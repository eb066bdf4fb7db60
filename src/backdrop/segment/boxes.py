"""Box-prompted masks: where labels are boxes, each box's object is segmented on its own.

A whole-frame pass on a busy background (a histology slide, grass, gravel) loses parts of
objects: the model's attention goes to the clutter, and what it misses gets a new background
while the box still frames the whole object. Here each box is segmented in a crop grown by a
margin, at an input side that suits the crop (:func:`backdrop.segment.isnet.crop_side`), and the
model's probabilities seed GrabCut inside the box (outside it is known background); the object's
mask is their union, holes filled, grown by ``grow`` pixels inside the box. Masks of all boxes are
combined.

Every object gets an honest record, judged against what can be known, the box, never the mask
against itself: a tight box is touched by its object on all four sides, so a mask that stops short
of a side has probably lost part of the object; a mask covering a small share of its box, or one
where the model and GrabCut disagree, is doubtful too. ``confidence`` (0-1) sums that up;
``doubtful`` objects are named in a warning. Only an object that cannot be segmented at all
(nothing found in its box) falls back to its whole box (``fallback``), counted.

>>> result = box_masks(image, [(40, 30, 200, 220)], segmenter)  # doctest: +SKIP
>>> result.mask, result.objects[0]["confidence"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
METHOD = "box-prompt-2"  # recorded, and part of the mask cache key: bump when the masks change


@dataclass
class BoxMasks:
    mask: Image.Image  # mode L, 255 = kept (the union of the objects' masks)
    objects: list[dict[str, Any]]  # per box: cover, confidence, sides, doubtful, fallback, why
    warnings: list[str] = field(default_factory=list)

    @property
    def fallbacks(self) -> list[int]:
        return [o["index"] for o in self.objects if o["fallback"]]


def _grabcut(crop: np.ndarray, prob: np.ndarray, inside: np.ndarray, iterations: int, seed: int,
             *, box_prompt: bool = False) -> Optional[np.ndarray]:
    """GrabCut inside the box (outside it: known background). Seeded from the model's
    probabilities, or, with ``box_prompt``, GrabCut's own box prompt (all of the box may be
    object) with the model's sure pixels kept as sure."""
    import cv2

    gc = np.full(prob.shape, cv2.GC_BGD, np.uint8)
    if box_prompt:
        gc[inside] = cv2.GC_PR_FGD
    else:
        gc[inside] = np.where(prob[inside] >= 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD)
    gc[inside & (prob >= 0.9)] = cv2.GC_FGD
    fg = np.isin(gc, (cv2.GC_FGD, cv2.GC_PR_FGD))
    bg = np.isin(gc, (cv2.GC_BGD, cv2.GC_PR_BGD))
    if fg.sum() < 16 or bg.sum() < 16:
        return None  # GrabCut needs samples of both to build its colour models
    cv2.setRNGSeed(seed)  # GrabCut's GMM initialisation draws from OpenCV's RNG: fixed, so masks repeat
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(crop[..., ::-1]), gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error as exc:  # a degenerate colour model: keep the model's mask
        log.debug("grabcut failed: %s", exc)
        return None
    return np.isin(gc, (cv2.GC_FGD, cv2.GC_PR_FGD))


def _sides(obj: np.ndarray, box: tuple[int, int, int, int]) -> int:
    """How many of the box's four sides the mask reaches (within 3 px, or 3 % of the box)."""
    x0, y0, x1, y1 = box
    sub = obj[y0:y1, x0:x1]
    tol = max(3, int(0.03 * max(sub.shape)))
    rows, cols = sub.any(1), sub.any(0)
    return int(rows[:tol].any()) + int(rows[-tol:].any()) + int(cols[:tol].any()) + int(cols[-tol:].any())


def _separability(crop: np.ndarray, obj: np.ndarray, ring: np.ndarray) -> float:
    """How far the mask's mean colour is from the surroundings' (outside the box), in units of the
    surroundings' own spread; large when there is an object to tell apart, near 0 when the "object"
    is more of the same background. inf when there are too few pixels to judge."""
    if obj.sum() < 16 or ring.sum() < 64:
        return float("inf")
    a, b = crop[obj].astype(np.float32), crop[ring].astype(np.float32)
    spread = float(np.sqrt((b.var(0)).sum())) + 1.0
    return float(np.linalg.norm(a.mean(0) - b.mean(0)) / spread)


def _fill_holes(m: np.ndarray) -> np.ndarray:
    """Holes inside an object's mask: pixels the model doubted but that lie within the object's
    outline. Keeping them keeps object pixels (a hole of real background keeps old pixels, harmless
    to the label)."""
    import cv2

    if not m.any():
        return m
    pad = np.pad(m.astype(np.uint8), 1)
    flood = pad.copy()
    h, w = pad.shape
    cv2.floodFill(flood, np.zeros((h + 2, w + 2), np.uint8), (0, 0), 1)
    return (pad | (flood == 0))[1:-1, 1:-1].astype(bool)


def _grow(m: np.ndarray, px: int) -> np.ndarray:
    import cv2

    if px <= 0 or not m.any():
        return m
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(m.astype(np.uint8), k) > 0


def box_masks(
    image: Image.Image,
    boxes: Sequence[Box],
    segmenter: Any,
    *,
    margin: float = 0.25,
    grabcut: bool = True,
    iterations: int = 4,
    grow: int = 2,
    seed: int = 0,
    min_cover: float = 0.02,
    small_side: int = 128,
    min_separability: float = 0.15,
    box_grow: float = 0.05,
) -> BoxMasks:
    """One mask for all ``boxes`` (x0, y0, x1, y1 in pixels), each object segmented in its own crop.

    ``margin``: the crop is the box grown by this share of its longer side (at least 8 px) on each
    side, so the model sees the object's surroundings. ``min_cover``: an object whose mask covers
    less than this share of its box counts as not found: its whole box is kept (``fallback``).
    ``min_separability``: a mask whose pixels look like the box's surroundings (mean colour
    distance over the surroundings' spread, :func:`_separability`) holds no object that can be told
    apart: the whole box is kept. ``box_grow``: the mask may reach this share of the box (plus
    2 px) past each side, as a hand-drawn or rounded box may cut the object's edge.
    ``small_side``: boxes smaller than this (longer side, px) always get GrabCut's box prompt too:
    a small object's thin parts (limbs, handles) are a few pixels wide and the model loses them."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(rgb)
    h, w = arr.shape[:2]
    from ..stages import adopt

    probs = adopt(segmenter, "segment").crop_probabilities
    total = np.zeros((h, w), bool)
    objects, warnings = [], []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        bx0, by0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        bx1, by1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        rec: dict[str, Any] = {"index": i, "cover": 0.0, "confidence": 0.0, "sides": 0, "doubtful": True,
                               "fallback": False, "why": []}
        if bx1 - bx0 < 2 or by1 - by0 < 2:  # nothing to segment: whatever it holds is kept
            rec.update(fallback=True, why=["box smaller than 2 px: the whole box is kept"])
            total[by0:max(by1, by0 + 1), bx0:max(bx1, bx0 + 1)] = True
            objects.append(rec)
            continue
        pad = max(8, int(round(margin * max(bx1 - bx0, by1 - by0))))
        cx0, cy0, cx1, cy1 = max(0, bx0 - pad), max(0, by0 - pad), min(w, bx1 + pad), min(h, by1 + pad)
        crop = arr[cy0:cy1, cx0:cx1]
        prob = probs(Image.fromarray(crop))
        # a box drawn by hand (or rounded) may cut the object's edge: the mask may reach a little past it
        sx, sy = int(np.ceil(box_grow * (bx1 - bx0) + 2)), int(np.ceil(box_grow * (by1 - by0) + 2))
        inside = np.zeros(prob.shape, bool)
        inside[max(0, by0 - sy - cy0): by1 + sy - cy0, max(0, bx0 - sx - cx0): bx1 + sx - cx0] = True
        tight = np.zeros(prob.shape, bool)
        tight[by0 - cy0: by1 - cy0, bx0 - cx0: bx1 - cx0] = True
        model = (prob >= 0.5) & inside
        local = (bx0 - cx0, by0 - cy0, bx1 - cx0, by1 - cy0)
        obj = model
        agree = 1.0
        if grabcut:
            gc = _grabcut(crop, prob, inside, iterations, seed + i)
            if gc is not None:
                gc &= inside
                union = (gc | model).sum()
                agree = float((gc & model).sum() / union) if union else 1.0
                obj = gc | model
        obj = _grow(_fill_holes(obj), grow) & inside
        box_area = float(tight.sum())
        cover = float((obj & tight).sum()) / box_area
        sides = _sides(obj, local)
        prompted = False
        small = max(bx1 - bx0, by1 - by0) < small_side
        if grabcut and (sides < 4 or cover < 0.25 or small):
            # the mask stops short of the tight box: part of the object is probably missing (a
            # white dress on a pale slide, a limb): GrabCut with the box itself as the prompt
            gc = _grabcut(crop, prob, inside, iterations, seed + i, box_prompt=True)
            if gc is not None:
                more = _grow(_fill_holes((gc & inside) | obj), grow) & inside
                if _sides(more, local) > sides or cover < 0.25 or small:
                    if not small or sides < 4:
                        agree = float(obj.sum() / max(1, more.sum()))  # share the first mask had found
                    obj, prompted = more, True
                    cover = float((obj & tight).sum()) / box_area
                    sides = _sides(obj, local)
        decisive = float(np.mean(np.abs(prob[tight] - 0.5)) * 2)  # 1: the model is sure everywhere in the box
        # each missing side, a model that found little of the mask, an unsure model, a thin cover: less sure
        confidence = round((sides / 4) ** 2 * (0.5 + 0.5 * agree) * (0.6 + 0.4 * decisive)
                           * min(1.0, cover / 0.25), 3)
        why = []
        if sides < 4:
            why.append(f"the mask reaches {sides} of the box's 4 sides")
        if cover < 0.25:
            why.append(f"the mask covers {cover:.0%} of the box")
        if agree < 0.6:
            why.append(f"the model found {agree:.0%} of the mask" if prompted else
                       f"the model and GrabCut agree on {agree:.0%}")
        separable = _separability(crop, obj & tight, ~inside)
        fallback = cover < min_cover or separable < min_separability
        if separable < min_separability and cover >= min_cover:
            why.append(f"what the mask holds looks like the box's surroundings (separability {separable:.2f})")
        if fallback:
            obj = tight.copy()
            why.append("nothing found in the box: the whole box is kept")
        rec.update(cover=round(cover, 3), confidence=confidence, separability=round(separable, 3), sides=sides,
                   agree=round(agree, 3), doubtful=bool(why), fallback=fallback, box_prompt=prompted, why=why)
        objects.append(rec)
        total[cy0:cy1, cx0:cx1] |= obj
    doubtful = [o["index"] for o in objects if o["doubtful"] and not o["fallback"]]
    if doubtful:
        warnings.append(f"segment: the mask of labelled object(s) {doubtful} may not be whole ("
                        + "; ".join(f"{o['index']}: {', '.join(o['why'])}" for o in objects if o["index"] in doubtful)
                        + "); its missing pixels would get the new background")
    falls = [o["index"] for o in objects if o["fallback"]]
    if falls:
        warnings.append(f"segment: nothing found in box(es) {falls}: whole box kept")
    return BoxMasks(Image.fromarray(np.where(total, 255, 0).astype(np.uint8), "L"), objects, warnings)
