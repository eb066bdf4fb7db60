"""Weight-free generator: image quilting (Efros & Freeman 2001) from the real background pixels.

The new background is stitched from square patches copied out of the input's *known* background
(``request.known == 255``): never from the object and never from the inpainted fill, so every
output pixel is a real background pixel or a blend of two along a seam. Neighbouring patches
overlap, each new patch is picked among random candidates whose overlap matches well (sum of
squared differences), and the seam follows the minimum-error boundary cut.

The search runs at a working resolution (long side at most ``MAX_SIDE``); the chosen patches and
cuts are then replayed on the full-resolution pixels, so the result keeps the input's fine detail.

>>> from backdrop.config import GenerateConfig
>>> gen = TextureGenerator(GenerateConfig(patch=32))
>>> gen.describe()["model"]
'texture-quilting'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from .. import runlog
from ..config import GenerateConfig
from ..errors import GenerationError
from ..types import GenerateRequest
from ..worksize import working_size
from ._colour import jitter
from ..stages import Generator

log = logging.getLogger(__name__)

MAX_SIDE = 512  # working resolution: the patch search runs with the long side at most this
CANDIDATES = 600  # random source positions compared for each new patch
TOLERANCE = 0.1  # any candidate within 10% of the best overlap error may be picked
MIN_PATCH = 6  # below this (working pixels) quilting gives up and the pixel fallback is used
LOW_KNOWN = 0.05  # warn when less than this fraction of the image is real background


@dataclass(frozen=True)
class _Placement:
    oy: int  # where the patch goes (working resolution, canvas coordinates)
    ox: int
    sy: int  # where it comes from (working resolution, source coordinates)
    sx: int
    cut: np.ndarray | None  # float32 (p, p): 1 = new patch, 0 = keep what is there; None = all new


class TextureGenerator(Generator):
    """Patch-based texture synthesis that samples only real background pixels."""

    name = "texture"
    generative = False
    uses_prompt = False  # the pipeline skips caption and refine for it
    keeps_background_colours = True  # by design: too_close and near_duplicate checks do not apply to it
    reads_background = False  # it samples only ``known`` pixels, never the inpainted ones

    def __init__(self, config: GenerateConfig):
        self.config = config

    def describe(self) -> dict[str, Any]:
        return {"model": "texture-quilting", "patch": self.config.patch, "variation": self.config.variation}

    def __call__(self, request: GenerateRequest) -> Image.Image:
        image, known = _arrays(request)
        if not known.any():
            raise GenerationError(
                "texture: the image has no real background pixels to sample (the object covers it all); "
                "use --generator pool or an sd-* backend"
            )
        fraction = float(known.mean())
        if fraction < LOW_KNOWN:
            runlog.warn(
                f"texture: only {fraction:.1%} of the image is real background; the new background repeats it"
            )
        rng = np.random.default_rng(request.seed)
        height, width = known.shape
        small_size = working_size(width, height, MAX_SIDE)  # a long thin image keeps its short side
        small, sample_ok = _downscale(image, known, small_size)

        patch, positions = self._patch_and_positions(sample_ok)
        if positions is None:
            runlog.warn(
                "texture: the real background is only thin slivers; filled with a smooth mix of its colours"
            )
            runlog.note("texture.fallback", "pixels")
            out = _pixel_fallback(image, known, rng)
        else:
            placements = _quilt(small, positions, patch, small.shape[:2], rng, request.progress)
            out = _render(image, placements, patch, (height / small.shape[0], width / small.shape[1]))
        out = jitter(out, self.config.variation, rng)
        return Image.fromarray(out, "RGB")

    def _patch_and_positions(self, sample_ok: np.ndarray) -> tuple[int, np.ndarray | None]:
        """The patch size to use and the top-left corners where a whole patch is real background."""
        h, w = sample_ok.shape
        wanted = self.config.patch
        patch = max(MIN_PATCH, min(wanted, min(h, w) // 2))
        while patch >= MIN_PATCH:
            positions = _valid_positions(sample_ok, patch)
            if len(positions):
                if patch < min(wanted, min(h, w) // 2):
                    runlog.warn(f"texture: real background pieces are small; patch reduced from {wanted} to {patch} px")
                    runlog.note("texture.patch", patch)
                return patch, positions
            patch = int(patch * 0.7)
        return patch, None


# -- inputs ----------------------------------------------------------------------------------------


def _arrays(request: GenerateRequest) -> tuple[np.ndarray, np.ndarray]:
    image = request.image.convert("RGB")
    known = request.known
    if known.size != image.size:
        raise GenerationError(f"texture: known mask is {known.size}, image is {image.size}; they must match")
    return np.asarray(image), np.asarray(known.convert("L")) == 255


def _downscale(image: np.ndarray, known: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Working-resolution image, and where a patch corner may sit without touching unknown pixels.

    A working pixel counts as sampleable only if no unknown full-resolution pixel contributes to
    it; one more pixel is taken off all round so that rounding when patches are replayed at full
    resolution cannot reach an unknown pixel either.
    """
    if size == (known.shape[1], known.shape[0]):
        small = image.astype(np.float32)
        unknown = ~known
    else:
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        leak = cv2.resize((~known).astype(np.float32), size, interpolation=cv2.INTER_AREA)
        unknown = leak > 1e-6
        unknown = cv2.dilate(unknown.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return small, ~unknown


def _valid_positions(sample_ok: np.ndarray, patch: int) -> np.ndarray:
    """(N, 2) array of (y, x) corners whose patch x patch window is all sampleable."""
    h, w = sample_ok.shape
    if h < patch or w < patch:
        return np.empty((0, 2), np.int64)
    bad = np.zeros((h + 1, w + 1), np.int64)
    bad[1:, 1:] = np.cumsum(np.cumsum(~sample_ok, axis=0), axis=1)
    window = bad[patch:, patch:] - bad[:-patch, patch:] - bad[patch:, :-patch] + bad[:-patch, :-patch]
    return np.argwhere(window == 0)


# -- quilting (working resolution) -----------------------------------------------------------------


def _quilt(small, positions, patch, size, rng, progress) -> list[_Placement]:
    overlap = max(2, patch // 6)
    step = patch - overlap
    h, w = size
    # one working pixel more than needed, so rounding at full resolution never leaves a gap
    rows = max(1, -(-(h + 1 - overlap) // step))
    cols = max(1, -(-(w + 1 - overlap) // step))
    canvas = np.zeros((rows * step + overlap, cols * step + overlap, 3), np.float32)
    src = np.ascontiguousarray(small.transpose(2, 0, 1))  # (3, H, W): strips come out channel-first
    top_view = sliding_window_view(src, (overlap, patch), axis=(1, 2))  # (3, H', W', ov, p)
    left_view = sliding_window_view(src, (patch, overlap), axis=(1, 2))
    placements: list[_Placement] = []
    for i in range(rows):
        for j in range(cols):
            oy, ox = i * step, j * step
            first = i == 0 and j == 0
            if first:
                sy, sx = positions[rng.integers(len(positions))]
            else:
                pick = positions[rng.integers(len(positions), size=min(CANDIDATES, len(positions)))]
                ys, xs = pick[:, 0], pick[:, 1]
                err = np.zeros(len(pick), np.float32)
                if i > 0:
                    target = canvas[oy : oy + overlap, ox : ox + patch].transpose(2, 0, 1)
                    diff = top_view[:, ys, xs] - target[:, None]
                    err += np.einsum("ckij,ckij->k", diff, diff)
                if j > 0:
                    target = canvas[oy : oy + patch, ox : ox + overlap].transpose(2, 0, 1)
                    diff = left_view[:, ys, xs] - target[:, None]
                    err += np.einsum("ckij,ckij->k", diff, diff)
                good = np.flatnonzero(err <= err.min() * (1 + TOLERANCE) + 1e-3)
                sy, sx = pick[good[rng.integers(len(good))]]
            new = small[sy : sy + patch, sx : sx + patch]
            region = canvas[oy : oy + patch, ox : ox + patch]
            cut = None if first else _cut_mask(region, new, overlap, i > 0, j > 0)
            if cut is None:
                region[:] = new
            else:
                region[:] = region * (1 - cut[..., None]) + new * cut[..., None]
            placements.append(_Placement(oy, ox, int(sy), int(sx), cut))
        if progress is not None:
            progress(i + 1, rows)
    return placements


def _cut_mask(old: np.ndarray, new: np.ndarray, overlap: int, top: bool, left: bool) -> np.ndarray:
    """1 where the new patch shows, 0 where the old pixels stay: the minimum-error boundary cuts."""
    patch = new.shape[0]
    mask = np.ones((patch, patch), np.float32)
    err = ((old - new) ** 2).sum(axis=2)
    if left:
        path = _min_path(err[:, :overlap])
        cols = np.arange(overlap)[None, :]
        mask[:, :overlap] *= cols >= path[:, None]
    if top:
        path = _min_path(err[:overlap, :].T)
        rows = np.arange(overlap)[:, None]
        mask[:overlap, :] *= rows >= path[None, :]
    return mask


def _min_path(err: np.ndarray) -> np.ndarray:
    """Column index, per row, of the cheapest 8-connected top-to-bottom path through ``err``."""
    n, m = err.shape
    cost = np.full((n, m + 2), np.inf)  # an inf column each side: no stepping off the strip
    cost[:, 1:-1] = err
    for r in range(1, n):
        prev = cost[r - 1]
        cost[r, 1:-1] += np.minimum(np.minimum(prev[:-2], prev[1:-1]), prev[2:])
    path = np.empty(n, np.int64)
    c = int(cost[-1].argmin())  # padded column index
    path[-1] = c - 1
    for r in range(n - 1, 0, -1):
        c = c - 1 + int(cost[r - 1, c - 1 : c + 2].argmin())
        path[r - 1] = c - 1
    return path


# -- replay at full resolution ---------------------------------------------------------------------


def _render(image: np.ndarray, placements: list[_Placement], patch: int, factor: tuple[float, float]) -> np.ndarray:
    """Copy the chosen patches from the full-resolution image, blending along softened cuts."""
    height, width = image.shape[:2]
    fy, fx = factor
    ph, pw = round(patch * fy), round(patch * fx)
    last = placements[-1]
    canvas_h = max(height, round(last.oy * fy) + ph)
    canvas_w = max(width, round(last.ox * fx) + pw)
    out = np.zeros((canvas_h, canvas_w, 3), np.uint8)
    filled = np.zeros((canvas_h, canvas_w), bool)
    for p in placements:
        y0, x0 = round(p.oy * fy), round(p.ox * fx)
        sy0 = min(round(p.sy * fy), height - ph)
        sx0 = min(round(p.sx * fx), width - pw)
        new = image[sy0 : sy0 + ph, sx0 : sx0 + pw]
        dst = out[y0 : y0 + ph, x0 : x0 + pw]
        done = filled[y0 : y0 + ph, x0 : x0 + pw]
        if p.cut is None or not done.any():
            dst[:] = new
        else:
            soft = cv2.GaussianBlur(p.cut, (3, 3), 0)  # a seam one working pixel wide, not a step
            m = cv2.resize(soft, (pw, ph), interpolation=cv2.INTER_LINEAR)
            m[~done] = 1.0  # nothing there yet (rounding gaps): take the new patch
            m = m[..., None]
            dst[:] = np.clip(dst * (1 - m) + new * m + 0.5, 0, 255).astype(np.uint8)
        done[:] = True
    return np.ascontiguousarray(out[:height, :width])


def _pixel_fallback(image: np.ndarray, known: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth field of the known colours: random known pixels on a coarse grid, upscaled."""
    height, width = known.shape
    colours = image[known]
    gh, gw = max(1, -(-height // 16)), max(1, -(-width // 16))
    grid = colours[rng.integers(len(colours), size=gh * gw)].reshape(gh, gw, 3)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
