"""Weight-free segmentation for objects on a plain, smooth or evenly textured background.

Good where classical methods can be: a stained cell on a pale, grainy microscopy field, a product
on a studio backdrop. Not for busy scenes (it says so with a warning rather than guessing quietly).

How it works, at a reduced working resolution (long side at most ``WORK_SIDE``):

1. Features: the image in Lab after a median filter (grain is not colour; step edges stay put),
   and a local texture energy, the RMS of the image minus its median (an evenly grainy field has
   one texture, an object with another stands out; plain edges have almost none).
2. Background model from the image border: a robust (trimmed, iterated) quadratic surface per
   Lab channel, so gradients, vignetting and uneven illumination are part of the background,
   plus robust scales (MAD) of the colour residuals and of the log texture energy.
3. Distance of every pixel to that model in robust sigmas (colour and texture together); Otsu on
   its logarithm, clamped to a sane range, gives the first mask.
4. Morphology, keep the main components (specks dropped, ``keep_components`` largest when set),
   fill holes unless a hole clearly shows background (a mug's handle).
5. GrabCut (``grabcut=True``) initialised from that mask refines it; a result that disagrees
   wildly with its start is not trusted.
6. Edge snapping at up to ``SNAP_SIDE``: in a thin band along the edge each pixel is compared
   with the local object and background colours and kept where the object covers at least half
   of it; then the mask is upsampled to the input size, strictly 0/255.

Unsure results call :func:`backdrop.runlog.warn` (object on the border, busy border, empty or
almost full mask); ``segment_confidence`` (0..1) is recorded with :func:`backdrop.runlog.note`.

>>> from PIL import Image
>>> from backdrop.config import SegmentConfig
>>> img = Image.new("RGB", (120, 90), (230, 230, 230))
>>> img.paste((200, 40, 40), (40, 30, 80, 60))
>>> mask = ClassicalSegmenter(SegmentConfig())(img)
>>> mask.mode, mask.size, mask.getpixel((60, 45)), mask.getpixel((5, 5))
('L', (120, 90), 255, 0)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .. import runlog
from ..config import SegmentConfig
from ..errors import InputError
from ..worksize import working_size
from ..stages import Segmenter

log = logging.getLogger(__name__)

WORK_SIDE = 512  # long side of the working resolution; larger inputs are reduced, the mask upsampled
SNAP_SIDE = 1600  # long side at most at which the mask's edge is snapped to the image's edges
GRABCUT_ITERS = 4
# Floors of the robust per-channel scales (Lab units): a perfectly flat backdrop must not turn a
# faint shadow into "foreground". L gets the largest floor because shadows and shading are in L.
SIGMA_FLOOR = np.array([3.0, 1.5, 1.5], np.float32)
THRESHOLD_RANGE = (3.5, 8.0)  # Otsu's cut on the distance, in robust sigmas, is clamped to this
TEXTURE_WEIGHT = 1.0  # weight of the texture distance next to the colour distance
TEXTURE_EPS = 1.0  # added to the texture energy (grey levels) before its log: fainter texture is none
TEXTURE_SIGMA_FLOOR = 0.15  # least robust scale of log texture energy (about a 16% change)
TOUCH_WARN = 0.025  # warn when the mask covers more than this share of the image's outer frame
BUSY_SIGMA = 9.0  # warn when the border's robust colour spread exceeds this (mean Lab units)
OUTLIER_WARN = 0.15  # warn when more than this share of the border's background does not fit the model


@dataclass
class _Model:
    distance: np.ndarray  # per-pixel distance to the background model, robust sigmas
    colour: np.ndarray  # its colour part alone (holes are judged on it: JPEG ringing is texture)
    sigma: np.ndarray  # robust spread of the whole border's colours around the fit, Lab units
    border: np.ndarray  # the border band the model was fitted on (bool)


class ClassicalSegmenter(Segmenter):
    """Border background model + colour/texture distance + Otsu + morphology (+ GrabCut).

    >>> seg = ClassicalSegmenter(SegmentConfig(grabcut=False, keep_components=1))
    >>> seg.name
    'classical'
    """

    name = "classical"

    def __init__(self, config: SegmentConfig):
        self.config = config

    @classmethod
    def availability(cls, config: SegmentConfig) -> str | None:
        return None  # numpy + OpenCV only, both core dependencies

    def __call__(self, image: Image.Image) -> Image.Image:
        return self._mask(image, whole_image=True)

    def crop_probabilities(self, crop: Image.Image) -> np.ndarray:
        """A box's crop (segment.boxes), as a certain 0/1 mask. The crop is the box and a margin,
        so the object touches its border by design, and each object is judged against its box
        there: the whole-image warnings (border touched, busy border) are not said for crops."""
        return np.asarray(self._mask(crop, whole_image=False), np.float32) / 255.0

    def _mask(self, image: Image.Image, *, whole_image: bool) -> Image.Image:
        if image.width < 1 or image.height < 1:
            raise InputError(f"cannot segment an empty image ({image.width}x{image.height})")
        rgb = _to_rgb8(image)
        H, W = rgb.shape[:2]
        # an extreme aspect keeps a usable short side (10x10000 works at 10x512, not 1x512)
        size = working_size(W, H, WORK_SIDE)
        small = rgb if size == (W, H) else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        mask, confidence = self._segment(small, whole_image)
        # the edge is snapped at up to SNAP_SIDE (cost grows with the area), then upsampled
        mid_size = working_size(W, H, SNAP_SIDE)
        mid = rgb if mid_size == (W, H) else cv2.resize(rgb, mid_size, interpolation=cv2.INTER_AREA)
        mask = _upsample(mask, mid.shape[:2])
        up = max(mid.shape[0] / small.shape[0], mid.shape[1] / small.shape[1])
        for _ in range(2):  # the second pass starts from the corrected edge
            if mask.any() and not mask.all():
                mask = _snap_edges(mid, mask, up)
        mask = _upsample(mask, (H, W))
        runlog.note("segment_confidence", confidence)
        return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L")

    # -- the steps ---------------------------------------------------------------------------------
    def _segment(self, rgb: np.ndarray, whole_image: bool = True) -> tuple[np.ndarray, float]:
        h, w = rgb.shape[:2]
        if min(h, w) < 8:
            if whole_image:
                runlog.warn(f"classical segmenter: image too small to model ({w}x{h}); whole image kept as foreground")
            return np.ones((h, w), bool), 0.0
        model = _background_model(rgb)
        dist = model.distance
        thr = _otsu_threshold(dist, clamp=True)
        keep = self.config.keep_components
        first = _clean(dist >= thr, model.colour, thr, keep)
        mask = first
        agreement = 1.0
        if self.config.grabcut and first.any() and not first.all():
            refined = _grabcut(rgb, first, dist, thr)
            refined = _clean(refined, model.colour, thr, keep)
            agreement = _iou(refined, first)
            if refined.any() and agreement >= 0.5:
                mask = refined
            else:
                runlog.note("segment_grabcut", f"ignored (IoU {agreement:.2f} with its start)")
        mask = self._never_empty(mask, dist, thr, whole_image)
        return mask, self._confidence(mask, dist, thr, model, agreement, whole_image)

    def _never_empty(self, mask: np.ndarray, dist: np.ndarray, thr: float, whole_image: bool = True) -> np.ndarray:
        if mask.any():
            return mask
        h, w = mask.shape
        guess = np.zeros_like(mask)
        if float(dist.max() - dist.min()) > 1e-3:
            # the most background-unlike region, by Otsu's unclamped cut, though it is weak
            cut = _otsu_threshold(dist, clamp=False)
            guess = _clean(dist > cut, dist, thr, 1, min_share=0.0)
        if guess.any():
            message = "classical segmenter found no clear foreground; returned the most distinct region as a guess"
        else:
            ys, xs = np.ogrid[:h, :w]
            guess = ((xs - w / 2) / (w / 4)) ** 2 + ((ys - h / 2) / (h / 4)) ** 2 <= 1
            message = "classical segmenter found no foreground at all (uniform image?); returned a centred ellipse"
        if whole_image:  # not for a box's crop: segment.boxes judges the guess against its box
            runlog.warn(message)
        return guess

    def _confidence(self, mask: np.ndarray, dist: np.ndarray, thr: float, model: _Model, agreement: float,
                    whole_image: bool = True) -> float:
        area = float(mask.mean())
        frame = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
        touch = float(frame.mean())
        # the border outside the object should all fit the background model; if much of it does
        # not, or its colours spread widely, the background is busy and the model is a poor guess
        rest = model.border & ~mask
        off = float((dist[rest] > thr).mean()) if rest.any() else 1.0
        busy = float(np.mean(model.sigma))
        if whole_image and (busy > BUSY_SIGMA or off > OUTLIER_WARN):
            runlog.warn(
                "classical segmenter: the image border is not a plain background "
                f"(colour spread {busy:.1f}, {off:.0%} off-model); try the rembg backend"
            )
        if whole_image and touch > TOUCH_WARN:
            runlog.warn(
                f"classical segmenter: the object touches the image border ({touch:.0%} of it); "
                "the background model and the mask may be off there"
            )
        if whole_image and area > 0.9:
            runlog.warn(f"classical segmenter: the mask covers {area:.0%} of the image; background too busy or object fills the frame?")
        # separation of the two sides, in units of the threshold
        fg = np.median(dist[mask]) if mask.any() else 0.0
        bg = np.median(dist[~mask]) if (~mask).any() else thr
        separation = float(np.clip((fg - bg) / (2.0 * thr), 0.0, 1.0))
        homogeneous = float(np.clip(1.0 - off / (2 * OUTLIER_WARN), 0.0, 1.0)) * float(
            np.clip(1.0 - (busy - 3.0) / (2 * BUSY_SIGMA), 0.0, 1.0)
        )
        border = float(np.clip(1.0 - touch / (4 * TOUCH_WARN), 0.0, 1.0))
        size = 1.0 if 0.002 <= area <= 0.85 else 0.4
        conf = separation * (0.5 + 0.5 * homogeneous) * (0.5 + 0.5 * border) * size * (0.5 + 0.5 * agreement)
        return round(float(np.clip(conf, 0.0, 1.0)), 3)


def _to_rgb8(image: Image.Image) -> np.ndarray:
    """RGB uint8 array; 16-bit and float images (microscopy TIFFs) are stretched, not clipped."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        a = np.asarray(image, dtype=np.float64)
        lo, hi = np.percentile(a, [0.1, 99.9])
        if hi <= lo:
            lo, hi = float(a.min()), float(a.max()) + 1e-9
        g = np.clip((a - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


# -- background model -------------------------------------------------------------------------------


def _features(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed Lab (float32, h x w x 3) and texture energy (h x w, grey levels)."""
    h, w = rgb.shape[:2]
    s = max(1.0, min(h, w) / 300.0)
    # colour: a median (removes grain, keeps step edges where they are) then a light blur
    k = 5 if s < 1.6 else 7
    denoised = cv2.medianBlur(np.ascontiguousarray(rgb, dtype=np.uint8), k)
    smooth = cv2.GaussianBlur(cv2.cvtColor(denoised.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab), (0, 0), 0.8 * s)
    # texture energy: RMS of the image minus its median. A median keeps step edges where they are,
    # so an edge between two flat regions has (almost) no energy and a narrow gap between two
    # edges (a handle's opening) is not "textured"; grain, granules and weave are. A box filter
    # (finite support) and a grey opening wider than its window remove what edges leave.
    gray = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    high = gray.astype(np.float32) - cv2.medianBlur(gray, k).astype(np.float32)
    k2 = 2 * round(3 * s) + 1
    energy = np.sqrt(np.maximum(cv2.blur(high * high, (k2, k2), borderType=cv2.BORDER_REFLECT), 0))
    ko = k2 + k + 1
    energy = cv2.morphologyEx(energy, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ko, ko)))
    return smooth, energy


def _design(xs: np.ndarray, ys: np.ndarray, w: int, h: int) -> np.ndarray:
    u = xs.astype(np.float32) / max(1, w - 1) * 2 - 1
    v = ys.astype(np.float32) / max(1, h - 1) * 2 - 1
    return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)


def _robust_scale(x: np.ndarray, axis=0) -> np.ndarray:
    med = np.median(x, axis=axis)
    return 1.4826 * np.median(np.abs(x - med), axis=axis)


def _background_model(rgb: np.ndarray) -> _Model:
    h, w = rgb.shape[:2]
    lab, energy = _features(rgb)
    band = max(2, round(0.03 * min(h, w)))
    border = np.zeros((h, w), bool)
    border[:band], border[-band:], border[:, :band], border[:, -band:] = True, True, True, True
    ys, xs = np.nonzero(border)
    samples = lab[ys, xs]  # n x 3
    A = _design(xs, ys, w, h)

    # start from the border's median colour, then iterate trimmed quadratic fits
    med = np.median(samples, axis=0)
    sig = np.maximum(_robust_scale(samples), SIGMA_FLOOR)
    inl = np.sqrt((((samples - med) / sig) ** 2).sum(1)) <= 3.0 * np.sqrt(3)
    if inl.sum() < A.shape[1] * 4:
        inl = np.ones(len(samples), bool)
    coef = np.zeros((A.shape[1], 3), np.float32)
    for _ in range(4):
        coef, *_ = np.linalg.lstsq(A[inl], samples[inl], rcond=None)
        resid = samples - A @ coef
        raw_sigma = _robust_scale(resid[inl])
        sig = np.maximum(raw_sigma, SIGMA_FLOOR)
        d = np.sqrt(((resid / sig) ** 2).sum(1))
        new = d <= 3.5
        if new.sum() < A.shape[1] * 4 or np.array_equal(new, inl):
            break
        inl = new

    # texture statistics of the background (border inliers)
    # (in log space: grain twice as strong is as far as grain half as strong)
    log_e = np.log(energy + TEXTURE_EPS)
    e = log_e[ys, xs][inl]
    e_med = float(np.median(e))
    e_sig = max(float(_robust_scale(e)), TEXTURE_SIGMA_FLOOR)

    # distance of every pixel, in robust sigmas
    u = (np.arange(w, dtype=np.float32) / max(1, w - 1) * 2 - 1)[None, :, None]
    v = (np.arange(h, dtype=np.float32) / max(1, h - 1) * 2 - 1)[:, None, None]
    c = coef.astype(np.float32)
    fit = c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v  # as in _design
    dc = np.sqrt((((lab - fit) / sig) ** 2).sum(-1))
    dt = np.abs(log_e - e_med) / e_sig
    dist = np.sqrt(dc * dc + (TEXTURE_WEIGHT * dt) ** 2).astype(np.float32)

    # spread of the whole border around the fit (inliers or not): large when the border is busy,
    # small when it is plain even if an object covers some of it (the median ignores a minority)
    spread = _robust_scale(samples - A @ coef)
    return _Model(dist, dc.astype(np.float32), spread.astype(np.float32), border)


def _otsu_threshold(dist: np.ndarray, clamp: bool) -> float:
    """Otsu's cut on log(1 + distance); clamped to THRESHOLD_RANGE unless asked not to."""
    x = np.log1p(dist)
    lo, top = float(x.min()), float(np.percentile(x, 99.5))
    if top <= lo + 1e-6:
        top = float(x.max())
    if top <= lo + 1e-6:
        return THRESHOLD_RANGE[1] if clamp else float(dist.max())
    x8 = np.clip((x - lo) / (top - lo) * 255.0, 0, 255).astype(np.uint8)
    t8, _ = cv2.threshold(x8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    thr = float(np.expm1(lo + t8 / 255.0 * (top - lo)))
    return float(np.clip(thr, *THRESHOLD_RANGE)) if clamp else thr


# -- mask clean-up ------------------------------------------------------------------------------------


def _kernel(h: int, w: int, factor: float = 1.0) -> np.ndarray:
    k = max(3, int(round(min(h, w) / 128 * factor)) | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def _clean(mask: np.ndarray, colour: np.ndarray, thr: float, keep: int, min_share: float = 0.0015) -> np.ndarray:
    """Open/close, drop specks, keep the ``keep`` largest components (0: all big ones), fill holes."""
    h, w = mask.shape
    m = mask.astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _kernel(h, w))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _kernel(h, w, 1.5))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return np.zeros((h, w), bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(-areas, kind="stable")
    largest = areas[order[0]]
    minimum = max(min_share * h * w, 0.03 * largest)
    chosen = [i for i in order if areas[i] >= minimum] or [order[0]]
    if keep > 0:
        chosen = chosen[:keep]
    out = np.isin(labels, np.asarray(chosen) + 1)
    return _fill_holes(out, colour, thr)


def _fill_holes(mask: np.ndarray, colour: np.ndarray, thr: float) -> np.ndarray:
    """Fill enclosed holes, except large ones that look like the background (a handle's opening)."""
    h, w = mask.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    x, y, bw, bh, a = (stats[1:, k] for k in range(5))
    enclosed = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)  # not connected to the frame
    large = enclosed & (a >= max(16, 0.01 * mask.sum()))
    fill = set((np.nonzero(enclosed & ~large)[0] + 1).tolist())
    for i in np.nonzero(large)[0] + 1:
        if np.median(colour[labels == i]) >= 0.5 * thr:
            fill.add(int(i))  # background-unlike: part of the object (a pale vacuole, a highlight)
    if not fill:
        return mask
    return mask | np.isin(labels, np.fromiter(fill, int))


def _upsample(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    up = cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    out = up >= 0.5
    if mask.any() and not out.any():  # a tiny object can vanish in upsampling; keep its best pixel
        out[np.unravel_index(int(np.argmax(up)), up.shape)] = True
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


# -- GrabCut ------------------------------------------------------------------------------------------


def _grabcut(rgb: np.ndarray, first: np.ndarray, dist: np.ndarray, thr: float) -> np.ndarray:
    h, w = first.shape
    m = first.astype(np.uint8)
    sure_fg = cv2.erode(m, _kernel(h, w, 2.5)).astype(bool)
    near = cv2.dilate(m, _kernel(h, w, 3.0)).astype(bool)
    gc = np.full((h, w), cv2.GC_BGD, np.uint8)
    gc[near | (dist >= 0.5 * thr)] = cv2.GC_PR_BGD
    gc[first] = cv2.GC_PR_FGD
    gc[sure_fg] = cv2.GC_FGD
    if not (gc == cv2.GC_BGD).any() and not (gc == cv2.GC_PR_BGD).any():
        return first
    # GrabCut only where it may change something, plus a margin of sure background to learn from
    ys, xs = np.nonzero(gc != cv2.GC_BGD)
    margin = max(8, int(0.15 * max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)))
    y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + margin + 1)
    x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + margin + 1)
    sub = np.ascontiguousarray(gc[y0:y1, x0:x1])
    # light denoising so grain is not taken for edges; GrabCut's own smoothness does the rest
    img = cv2.GaussianBlur(rgb[y0:y1, x0:x1], (0, 0), max(0.8, min(h, w) / 400))
    img = np.ascontiguousarray(img[..., ::-1])  # BGR, as OpenCV expects (the GMMs do not care)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from OpenCV's RNG: fix it for repeatable masks
    try:
        cv2.grabCut(img, sub, None, bgd, fgd, GRABCUT_ITERS, cv2.GC_INIT_WITH_MASK)
    except cv2.error as exc:  # e.g. too few samples on one side
        log.debug("GrabCut failed, keeping the first mask: %s", exc)
        return first
    out = np.zeros((h, w), bool)
    out[y0:y1, x0:x1] = (sub == cv2.GC_FGD) | (sub == cv2.GC_PR_FGD)
    return out


# -- edge snapping at full resolution -------------------------------------------------------------------


def _snap_edges(rgb: np.ndarray, mask: np.ndarray, up: float) -> np.ndarray:
    """Move the mask's edge to where the object covers half of each pixel.

    The working-resolution mask is a few pixels off (smoothing, upsampling). In a thin band
    along its edge, each pixel's colour is compared with the local foreground and background
    colours just inside and outside the band: a pixel is kept when its coverage, the projection
    of its colour on the line between the two, is at least one half. Where the two local colours
    are too close to tell apart, the mask is left as it was.
    """
    H, W = mask.shape
    r = max(2, int(np.ceil(2.5 * up)))
    ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    m8 = mask.astype(np.uint8)
    inner = cv2.erode(m8, ker, borderType=cv2.BORDER_REPLICATE).astype(np.float32)
    outer = 1.0 - cv2.dilate(m8, ker, borderType=cv2.BORDER_REPLICATE).astype(np.float32)
    band = (inner == 0) & (outer == 0)
    ys, xs = np.nonzero(band)
    if len(ys) == 0:
        return mask
    # work in the band's bounding box only (plus room for the local means)
    pad = 4 * r + 2
    y0, y1 = max(0, ys.min() - pad), min(H, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(W, xs.max() + pad + 1)
    img = rgb[y0:y1, x0:x1].astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 0.6 * max(1.0, up / 2))  # grain is not an edge
    inn, out, bnd = inner[y0:y1, x0:x1], outer[y0:y1, x0:x1], band[y0:y1, x0:x1]
    sigma = 1.5 * r

    def local_mean(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wsum = cv2.GaussianBlur(weight, (0, 0), sigma)
        total = cv2.GaussianBlur(img * weight[..., None], (0, 0), sigma)
        return total / np.maximum(wsum, 1e-6)[..., None], wsum

    fg, wf = local_mean(inn)
    bg, wb = local_mean(out)
    diff = fg - bg
    contrast2 = (diff * diff).sum(-1)
    alpha = ((img - bg) * diff).sum(-1) / np.maximum(contrast2, 1e-6)
    usable = bnd & (contrast2 >= 12.0**2) & (wf > 0.02) & (wb > 0.02)
    snapped = np.where(usable, alpha >= 0.5, mask[y0:y1, x0:x1])
    # a 3x3 median removes single-pixel decisions made by noise; only the band may change
    snapped = cv2.medianBlur(snapped.astype(np.uint8), 3).astype(bool)
    out_mask = mask.copy()
    out_mask[y0:y1, x0:x1] = np.where(bnd, snapped, mask[y0:y1, x0:x1])
    return out_mask
