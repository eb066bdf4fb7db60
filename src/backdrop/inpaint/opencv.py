"""OpenCV inpainting backends (no weights): Telea's fast marching and Navier-Stokes.

Both fill the object's hole from the pixels around it. The hole is the mask grown by
``InpaintConfig.dilate`` pixels, so the object's halo (the soft, colour-bled edge a segmenter
leaves behind) is filled too instead of being smeared into the hole. Large images are filled at
a reduced working resolution (long side ``max_side``) and the fill is upsampled and written
*inside the hole only*: every pixel outside :func:`hole_mask` is returned byte-identical.
``radius`` counts pixels at the resolution the fill runs at. The fill runs in float32, one
channel at a time, so wide holes keep the surrounding colour (8-bit Telea drifts brighter).

>>> from PIL import Image
>>> from backdrop.config import InpaintConfig
>>> image = Image.new("RGB", (64, 48), (200, 180, 190))
>>> image.paste((0, 90, 0), (20, 10, 40, 30))          # the object
>>> mask = Image.new("L", (64, 48), 0)
>>> mask.paste(255, (20, 10, 40, 30))
>>> clean = TeleaInpainter(InpaintConfig())(image, mask)
>>> [abs(a - b) < 8 for a, b in zip(clean.getpixel((30, 20)), (200, 180, 190))]
[True, True, True]
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from PIL import Image

from ..config import InpaintConfig
from ..errors import InputError
from ..runlog import note, warn
from ..worksize import scaled_size
from ..stages import Inpainter

log = logging.getLogger(__name__)

# Neutral grey written when the hole covers the whole image and nothing is known to fill from.
_NOTHING_KNOWN = (128, 128, 128)
# Growths up to this radius use a disc kernel (fast when small); larger ones a distance transform.
# Both give the same pixels: a pixel is in the hole when its centre is within ``dilate`` of the mask.
_KERNEL_UP_TO = 12


def hole_mask(mask: Image.Image, dilate: int) -> Image.Image:
    """The pixels an inpainter replaces: every non-zero mask pixel, grown by ``dilate`` pixels.

    Any non-zero pixel counts (a soft edge is partly object), and the growth is Euclidean
    (a disc, not a square). The pipeline's "known" pixels are exactly the complement.

    >>> from PIL import Image
    >>> m = Image.new("L", (9, 9), 0); m.putpixel((4, 4), 255)
    >>> hole_mask(m, 2).histogram()[255]  # a disc of radius 2
    13
    """
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0, got {dilate}")
    return Image.fromarray(_hole(np.asarray(mask.convert("L")), dilate), mode="L")


def _hole(mask: np.ndarray, dilate: int) -> np.ndarray:
    fg = cv2.compare(mask, 0, cv2.CMP_GT)  # 255 where any foreground
    if dilate == 0 or not cv2.countNonZero(fg):
        return fg
    if dilate <= _KERNEL_UP_TO:
        y, x = np.ogrid[-dilate : dilate + 1, -dilate : dilate + 1]
        return cv2.dilate(fg, (x * x + y * y <= dilate * dilate).astype(np.uint8))
    # Large growth: the exact Euclidean distance to the foreground, whose cost does not grow
    # with ``dilate`` (a disc kernel's does), computed only near the foreground.
    h, w = fg.shape
    bx, by, bw, bh = cv2.boundingRect(fg)
    x0, y0 = max(0, bx - dilate - 1), max(0, by - dilate - 1)
    x1, y1 = min(w, bx + bw + dilate + 1), min(h, by + bh + dilate + 1)
    out = np.zeros_like(fg)
    background = cv2.compare(fg[y0:y1, x0:x1], 0, cv2.CMP_EQ)
    dist = cv2.distanceTransform(background, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    out[y0:y1, x0:x1] = cv2.compare(dist, float(dilate), cv2.CMP_LE)
    return out


class _OpenCVInpainter(Inpainter):
    """Shared body of the two OpenCV backends; subclasses set ``name`` and ``_flag``."""

    name = ""
    _flag = cv2.INPAINT_TELEA

    def __init__(self, config: InpaintConfig | None = None):
        self.config = config if config is not None else InpaintConfig()

    @classmethod
    def availability(cls, config: InpaintConfig) -> str | None:
        return None  # OpenCV is a core dependency

    def __call__(self, image: Image.Image, mask: Image.Image) -> Image.Image:
        if image.size != mask.size:
            raise InputError(f"mask size {mask.size} differs from image size {image.size}")
        rgb = np.array(image if image.mode == "RGB" else image.convert("RGB"))  # a writable copy
        hole = _hole(np.asarray(mask if mask.mode == "L" else mask.convert("L")), self.config.dilate)
        count = cv2.countNonZero(hole)
        if count == 0:
            return Image.fromarray(rgb, mode="RGB")
        if count == hole.size:
            warn("inpaint: the hole covers the whole image; nothing is known to fill it from")
            rgb[:] = _NOTHING_KNOWN
            return Image.fromarray(rgb, mode="RGB")

        scale = min(1.0, self.config.max_side / max(hole.shape))
        note("inpaint.scale", round(scale, 4))
        # Work on the hole's bounding box plus a margin: pixels farther than the fill's reach
        # never change it, and a small hole in a large image then costs little.
        margin = int(np.ceil((self.config.radius + 4) / scale))
        h, w = hole.shape
        bx, by, bw, bh = cv2.boundingRect(hole)
        x0, y0 = max(0, bx - margin), max(0, by - margin)
        x1, y1 = min(w, bx + bw + margin), min(h, by + bh + margin)
        crop, crop_hole = rgb[y0:y1, x0:x1], hole[y0:y1, x0:x1]
        filled = self._fill(crop, crop_hole, scale)
        np.copyto(crop, filled, where=(crop_hole > 0)[..., None])  # through the view, hole only
        return Image.fromarray(rgb, mode="RGB")

    def _fill(self, rgb: np.ndarray, hole: np.ndarray, scale: float) -> np.ndarray:
        """The inpainted image at full size; filled at ``scale`` and upsampled when below 1."""
        if scale >= 1.0:
            return self._inpaint(rgb, hole)
        h, w = hole.shape
        size = scaled_size(w, h, scale)  # a thin crop keeps its short side
        if size == (w, h):
            return self._inpaint(rgb, hole)
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        # A small pixel is unknown if any of the full-size pixels it averages is in the hole,
        # so no object colour leaks into the border the fill grows from.
        small_hole = cv2.compare(cv2.resize(hole.astype(np.float32), size, interpolation=cv2.INTER_AREA), 0, cv2.CMP_GT)
        if cv2.countNonZero(small_hole) == small_hole.size:  # nothing known at this scale
            return self._inpaint(rgb, hole)
        return cv2.resize(self._inpaint(small, small_hole), (w, h), interpolation=cv2.INTER_LINEAR)

    def _inpaint(self, rgb: np.ndarray, hole: np.ndarray) -> np.ndarray:
        # One float32 channel at a time: OpenCV's 8-bit Telea rounds at every step and drifts
        # brighter the deeper it goes (about +9 levels 100 px into a hole); in float it does not.
        channels = [
            cv2.inpaint(np.ascontiguousarray(rgb[..., c], dtype=np.float32), hole, self.config.radius, self._flag)
            for c in range(3)
        ]
        return cv2.convertScaleAbs(cv2.merge(channels))  # rounds and saturates to uint8


class TeleaInpainter(_OpenCVInpainter):
    """Fill the hole by fast marching from its border (Telea 2004): quick, smooth fills."""

    name = "telea"
    _flag = cv2.INPAINT_TELEA


class NavierStokesInpainter(_OpenCVInpainter):
    """Fill the hole by continuing isophotes inward (Bertalmio et al. 2001, Navier-Stokes)."""

    name = "ns"
    _flag = cv2.INPAINT_NS
