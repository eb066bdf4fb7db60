"""Checks on a generated background before its composite is kept (issue #10).

A new background can spoil a training image in three ways, each a named check:

- ``object_copy``: the background shows a copy of the kept object (Stable Diffusion often paints
  the masked shape again nearby); in a detection set that is an unlabelled object, i.e. label
  noise. Weight-free: the object's own pixels (and, for plain objects, its silhouette in its
  colour) are template-matched over the new background at a few scales. Score: the best
  normalised correlation (1 = an exact copy).
- ``salient_object``: the background holds *any* new salient object. A segmenter (``classical``
  by default, weight-free; ``rembg`` with ISNet where the model is present, read before rembg
  stretches its output) runs on the new background; score: the largest foreground component outside the kept object, as a share of the
  kept object's area, times the segmenter's confidence where it reports one. Costlier, and the classical segmenter is fooled by busy procedural textures,
  so it is off by default.
- ``too_close``: the new background is too like the old one, so the class cue survives (a
  texture re-synthesis of a class-tinted background). Score: colour-histogram similarity (Lab,
  1 - Bhattacharyya distance) between the new background and the old background's real pixels.
- ``near_duplicate``: the variant repeats an earlier variant of the same image. Score: the
  highest similarity (1 - mean absolute difference of small thumbnails) to any earlier one.

Every score is "higher is worse"; a check fails when its score reaches its threshold in
:class:`~backdrop.config.ChecksConfig`. What to do on failure (regenerate with the next seed,
then keep with a warning or drop) is the pipeline's business; this module only measures.

>>> from PIL import Image
>>> from backdrop.config import ChecksConfig
>>> checker = BackgroundChecker(ChecksConfig())
>>> img = Image.new("RGB", (64, 48), (200, 30, 30)); mask = Image.new("L", (64, 48), 0)
>>> mask.paste(255, (20, 14, 44, 34))
>>> res = checker.check(img, mask, img, Image.new("L", (64, 48), 255), img, [img])
>>> res.passed, sorted(res.failed)
(False, ['near_duplicate', 'too_close'])
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
from PIL import Image

from . import runlog
from .config import ChecksConfig, SegmentConfig
from .errors import InputError

log = logging.getLogger(__name__)

WORK_SIDE = 256  # checks run with the long side at most this (they judge layout and colour, not detail)
THUMB = 24  # near_duplicate: thumbnail side
COPY_SCALES = (0.75, 1.0, 1.33)  # object_copy: a painted copy is rarely exactly the same size
MIN_TEMPLATE = 6  # object_copy: a template smaller than this (px, working resolution) says nothing
PLAIN_STD = 4.0  # object_copy: an object whose colour varies less than this (grey levels) is plain
BLUR = 1.0  # object_copy: Gaussian sigma (working px) applied to both sides of the appearance match
COLOUR_SIGMA = 20.0  # object_copy: Lab distance at which a pixel stops looking like the object's colour
FLAT_STD = 2.0  # object_copy: windows of the new background flatter than this are not compared
HIST_BINS = (8, 16, 16)  # too_close: Lab histogram bins (L, a, b)

CHECKS = ("object_copy", "salient_object", "too_close", "near_duplicate")

_quiet: contextvars.ContextVar[bool] = contextvars.ContextVar("backdrop_checks_quiet", default=False)


@dataclass
class CheckResult:
    """What the checks found on one generated background.

    ``scores`` maps each check that ran to its score (higher is worse); ``failed`` names the checks
    whose score reached its threshold; ``seconds`` is each check's cost.
    """

    passed: bool
    scores: dict[str, float] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly record (plain floats, rounded) for run.json and the manifest."""
        return {
            "passed": self.passed,
            "scores": {k: round(float(v), 4) for k, v in self.scores.items()},
            "failed": list(self.failed),
            "seconds": {k: round(float(v), 4) for k, v in self.seconds.items()},
        }


class BackgroundChecker:
    """Runs the enabled checks of a :class:`ChecksConfig` on generated backgrounds.

    A segmenter for ``salient_object`` is built on first use and kept for the whole batch.
    """

    def __init__(self, config: ChecksConfig):
        self.config = config
        self._segmenter = None

    def thresholds(self) -> dict[str, float]:
        c = self.config
        return {
            "object_copy": c.copy_threshold,
            "salient_object": c.salient_threshold,
            "too_close": c.close_threshold,
            "near_duplicate": c.duplicate_threshold,
        }

    def enabled(self) -> list[str]:
        c = self.config
        on = {"object_copy": c.object_copy, "salient_object": c.salient_object,
              "too_close": c.too_close, "near_duplicate": c.near_duplicate}
        return [name for name in CHECKS if on[name]]

    def check(
        self,
        image: Image.Image,
        mask: Image.Image,
        old_background: Image.Image,
        known: Optional[Image.Image],
        new_background: Image.Image,
        earlier: list[Image.Image] | None = None,
    ) -> CheckResult:
        """Score ``new_background`` for the input ``image`` (with its ``mask``, 255 = object).

        ``old_background`` is the clean (inpainted) background and ``known`` marks its real
        pixels (255; None: all of it); ``earlier`` are the backgrounds already kept for this image.
        """
        import cv2  # lazy: importing backdrop.checks (e.g. from the pipeline) stays light
        size = image.size
        for what, im in (("mask", mask), ("old background", old_background), ("known", known)):
            if im is not None and im.size != size:
                raise InputError(f"checks: {what} is {im.size[0]}x{im.size[1]}, the image {size[0]}x{size[1]}")
        scale = min(1.0, WORK_SIDE / max(size))
        work = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        img = _rgb(image, work)
        new = _rgb(new_background, work)
        m = _grey(mask, work, cv2.INTER_NEAREST) >= 128
        limits = self.thresholds()
        result = CheckResult(passed=True)
        for name in self.enabled():
            start = time.perf_counter()
            if name == "object_copy":
                score = object_copy_score(img, m, new)
            elif name == "salient_object":
                score = self._salient_score(new_background, m, work)
            elif name == "too_close":
                old = _rgb(old_background, work)
                k = np.ones(m.shape, bool) if known is None else _grey(known, work, cv2.INTER_NEAREST) == 255
                score = colour_similarity(old, k & ~m, new)
            else:
                score = duplicate_score(new_background, earlier or [])
            result.seconds[name] = time.perf_counter() - start
            result.scores[name] = float(score)
            if score >= limits[name]:
                result.failed.append(name)
        result.passed = not result.failed
        if result.failed:
            log.debug("background checks failed: %s (%s)", result.failed, result.scores)
        return result

    # -- salient object ------------------------------------------------------------------------

    def _salient_score(self, new_background: Image.Image, mask: np.ndarray, work: tuple[int, int]) -> float:
        import cv2
        seg = self._get_segmenter()
        raw = _isnet_raw(seg, new_background)
        if raw is not None:
            fg = cv2.resize(raw, work, interpolation=cv2.INTER_LINEAR) >= 0.5
            confidence = 1.0
        else:
            with _quietly() as rec:
                found = seg(new_background.convert("RGB"))
            # the classical segmenter says how sure it is; on a plain or evenly busy field it returns
            # "the most distinct region" with a confidence near 0, which is no object
            confidence = float(rec["notes"].get("segment_confidence", 1.0))
            fg = _grey(found, work, cv2.INTER_NEAREST) >= 128
        fg &= ~mask  # what the kept object covers is hidden in the composite
        if not fg.any():
            return 0.0
        n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
        # a "foreground" covering most of the frame is a segmenter splitting the texture, not an object
        areas = areas[areas <= 0.5 * fg.size]
        if not len(areas):
            return 0.0
        reference = max(float(mask.sum()), 0.01 * fg.size)
        return float(areas.max() / reference * confidence)

    def _get_segmenter(self):
        if self._segmenter is None:
            from .segment import SEGMENTERS

            name = self.config.segmenter
            cfg = SegmentConfig(backend=name, model=self.config.segment_model, grabcut=False)
            self._segmenter = SEGMENTERS.create(name, cfg)
        return self._segmenter


def _isnet_raw(segmenter: Any, image: Image.Image) -> np.ndarray | None:
    """ISNet's own saliency (0..1) for ``image`` when ``segmenter`` is a rembg ISNet session, else None.

    rembg stretches each prediction to the full 0..1 range, so on a background without any object
    its mask still shows "the most salient" patch; an object check needs the model's unstretched
    output, which is near 0 everywhere on an empty scene.
    """
    session = getattr(segmenter, "session", None)
    if session is None or type(session).__module__.rsplit(".", 1)[-1] not in _ISNET_SESSIONS:
        return None
    inputs = session.normalize(image.convert("RGB"), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), (1024, 1024))
    pred = session.inner_session.run(None, inputs)[0][0, 0]
    return np.clip(pred, 0.0, 1.0).astype(np.float32)


# rembg session modules that run ISNet with mean 0.5 inputs (dis_anime uses other means: not read raw)
_ISNET_SESSIONS = {"dis_custom", "dis_general_use"}


# -- the scores (plain functions, also used by the benchmark) --------------------------------------


def object_copy_score(image: np.ndarray, mask: np.ndarray, new: np.ndarray) -> float:
    """Best normalised correlation of the kept object anywhere in ``new`` (1.0: an exact copy).

    ``image`` and ``new`` are RGB uint8 of one size, ``mask`` bool. Two templates, at a few
    scales: the object's own pixels (inside the mask, one pixel in from the edge, where no old
    background is mixed in; both sides slightly blurred so fine grain sampled at another pixel
    phase still matches), and its silhouette in a map of how close each pixel of ``new`` is to the
    object's colour (a plain object has no inner pattern to correlate, but its shape shows there).
    """
    import cv2
    if not mask.any():
        return 0.0
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = cv2.GaussianBlur(image.astype(np.float32), (0, 0), BLUR)[y0:y1, x0:x1]
    cmask = mask[y0:y1, x0:x1].astype(np.uint8)
    inner = cv2.erode(cmask, np.ones((3, 3), np.uint8)) if cmask.sum() > 4 * MIN_TEMPLATE**2 else cmask
    target = cv2.GaussianBlur(new.astype(np.float32), (0, 0), BLUR)
    obj_colour = crop[inner > 0].mean(axis=0)
    lab_new = cv2.cvtColor(new, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab_obj = cv2.cvtColor(np.uint8([[np.clip(obj_colour, 0, 255)]]), cv2.COLOR_RGB2LAB).astype(np.float32)
    near = np.exp(-(((lab_new - lab_obj) ** 2).sum(axis=2)) / (2 * COLOUR_SIGMA**2)).astype(np.float32)
    pad = max(2, round(0.25 * max(y1 - y0, x1 - x0)))
    sil = np.pad(cmask.astype(np.float32), pad)
    best = 0.0
    for s in COPY_SCALES:
        th, tw = round(crop.shape[0] * s), round(crop.shape[1] * s)
        if min(th, tw) < MIN_TEMPLATE or th > new.shape[0] or tw > new.shape[1]:
            continue
        t = cv2.resize(crop, (tw, th), interpolation=cv2.INTER_AREA)
        tm = cv2.resize(inner, (tw, th), interpolation=cv2.INTER_NEAREST).astype(np.float32)
        if tm.sum() >= MIN_TEMPLATE**2 and float(t[tm > 0].std(axis=0).max()) > PLAIN_STD:
            best = max(best, _match(target, t, np.repeat(tm[..., None], 3, axis=2)))
        sp = round(pad * s)
        st = cv2.resize(sil, (tw + 2 * sp, th + 2 * sp), interpolation=cv2.INTER_LINEAR)
        if st.shape[0] <= near.shape[0] and st.shape[1] <= near.shape[1]:
            best = max(best, _match(near, st, np.ones_like(st)))
    return best


def _match(image: np.ndarray, template: np.ndarray, mask: np.ndarray) -> float:
    """Masked TM_CCOEFF_NORMED, ignoring windows of ``image`` that are (almost) flat.

    A flat window makes the normalisation 0/0 (or a huge ratio of tiny numbers), which would
    read as a perfect match.
    """
    import cv2
    r = cv2.matchTemplate(image, template, cv2.TM_CCOEFF_NORMED, mask=mask)
    grey = image.mean(axis=2) if image.ndim == 3 else image
    m = np.ascontiguousarray(mask[..., 0] if mask.ndim == 3 else mask)
    n = float(m.sum())
    mean = cv2.matchTemplate(grey, m, cv2.TM_CCORR) / n
    var = np.maximum(cv2.matchTemplate(grey * grey, m, cv2.TM_CCORR) / n - mean**2, 0.0)
    floor = FLAT_STD**2 if image.max() > 1.5 else (FLAT_STD / 255.0) ** 2
    ok = np.isfinite(r) & (var > floor)
    return float(np.clip(r[ok].max(), 0.0, 1.0)) if ok.any() else 0.0


def colour_similarity(old: np.ndarray, old_mask: np.ndarray, new: np.ndarray) -> float:
    """1 - Bhattacharyya distance of Lab histograms: old background (its real pixels) vs new."""
    import cv2
    if not old_mask.any():
        return 0.0
    hist = []
    for im, m in ((old, old_mask.astype(np.uint8)), (new, None)):
        lab = cv2.cvtColor(im, cv2.COLOR_RGB2LAB)
        h = cv2.calcHist([lab], [0, 1, 2], m, list(HIST_BINS), [0, 256, 0, 256, 0, 256])
        hist.append(h / max(float(h.sum()), 1.0))
    return float(1.0 - cv2.compareHist(hist[0], hist[1], cv2.HISTCMP_BHATTACHARYYA))


def thumbnail(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BOX), np.float32)


def duplicate_score(new: Image.Image, earlier: list[Image.Image]) -> float:
    """Highest similarity (1 - mean abs difference / 255 of thumbnails) to any earlier background."""
    if not earlier:
        return 0.0
    t = thumbnail(new)
    return float(max(1.0 - np.abs(t - thumbnail(e)).mean() / 255.0 for e in earlier))


# -- helpers ---------------------------------------------------------------------------------------


def _rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    im = image.convert("RGB")
    if im.size != size:
        im = im.resize(size, Image.Resampling.BOX)
    return np.asarray(im)


def _grey(image: Image.Image, size: tuple[int, int], interpolation: int) -> np.ndarray:
    import cv2
    a = np.asarray(image.convert("L"))
    if a.shape[::-1] != size:
        a = cv2.resize(a, size, interpolation=interpolation)
    return a


class _DropWhileQuiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _quiet.get()


# installed once: it drops records only inside _quietly() in this thread/task (a context variable)
logging.getLogger("backdrop").addFilter(_DropWhileQuiet())


@contextlib.contextmanager
def _quietly() -> Iterator[dict[str, Any]]:
    """Run a segmenter on a generated background without its warnings reaching the user or run.json.

    Its "busy border" warnings are about the background under test, not the user's image.
    """
    token = _quiet.set(True)
    try:
        with runlog.collecting() as rec:
            yield rec
    finally:
        _quiet.reset(token)
