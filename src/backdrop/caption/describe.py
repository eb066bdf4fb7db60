"""A weight-free captioner: describes a clean background by measuring it.

It names the dominant colours (k-means in CIE Lab, each centre named from ~30 colours with
pale/dark/deep/muted modifiers), the brightness (dim/bright), how even the light is (even, a
gradient from one side, a vignette), the contrast, and the texture (smooth, fine or coarse
grain, mottled, striped or a regular pattern, from band-pass energies and FFT peaks).
It is deterministic: the same image gives the same caption.

>>> from PIL import Image
>>> from backdrop.config import CaptionConfig
>>> DescribeCaptioner(CaptionConfig())(Image.new("RGB", (128, 96), (245, 205, 215)))
'a smooth, bright, evenly lit pale pink background'
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from ..config import CaptionConfig
from ..runlog import note
from ..worksize import working_size
from ..stages import Captioner

log = logging.getLogger(__name__)

# sRGB anchors of the named colours. Greys are named by lightness alone (see _name_lab).
_PALETTE_RGB: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 40),
    "maroon": (110, 20, 35),
    "rust": (170, 75, 35),
    "orange": (240, 130, 30),
    "coral": (250, 120, 95),
    "salmon": (245, 145, 125),
    "peach": (250, 200, 165),
    "brown": (120, 75, 40),
    "tan": (205, 170, 125),
    "beige": (225, 210, 180),
    "cream": (250, 243, 215),
    "sand": (215, 195, 150),
    "gold": (215, 170, 40),
    "yellow": (245, 220, 50),
    "olive": (120, 120, 40),
    "lime": (170, 220, 50),
    "green": (50, 150, 60),
    "sage": (160, 180, 145),
    "mint": (175, 230, 200),
    "teal": (30, 130, 130),
    "turquoise": (60, 200, 200),
    "sky blue": (135, 195, 235),
    "blue": (35, 70, 215),
    "navy": (25, 35, 90),
    "slate": (95, 108, 130),
    "steel blue": (70, 130, 180),
    "indigo": (75, 40, 130),
    "lavender": (190, 170, 225),
    "purple": (120, 50, 150),
    "magenta": (210, 40, 170),
    "pink": (240, 160, 185),
    "rose": (200, 100, 125),
}

# Below this chroma a colour is a grey; between _TINTED and _ACHROMATIC it is a warm/cool grey.
_ACHROMATIC = 9.0
_TINTED = 4.5
# k-means centres closer than this (CIE76 delta E) are one colour (noise, grain, shading).
_MERGE_DELTA_E = 16.0
_MIN_SHARE = 0.15  # a colour under this share of the image is not named
_COLOUR_SIDE = 128  # colour analysis resolution (long side)
_TEXTURE_SIDE = 512  # texture / lighting analysis resolution (long side)


def _lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> float32 CIE Lab (L 0..100)."""
    flat = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1, 1, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(flat, cv2.COLOR_RGB2Lab).reshape(rgb.shape[:-1] + (3,))


_PALETTE_NAMES = list(_PALETTE_RGB)
_PALETTE_LAB = _lab(np.array([_PALETTE_RGB[n] for n in _PALETTE_NAMES], dtype=np.uint8))


def _lch(lab: np.ndarray) -> tuple[float, float, float]:
    L, a, b = (float(v) for v in lab)
    return L, math.hypot(a, b), math.degrees(math.atan2(b, a)) % 360.0


def _grey_name(L: float) -> str:
    if L < 14:
        return "black"
    if L < 32:
        return "charcoal"
    if L < 48:
        return "dark grey"
    if L < 72:
        return "grey"
    if L < 90:
        return "light grey"
    return "white"


def colour_name(rgb: tuple[int, int, int]) -> str:
    """The name of one sRGB colour, as the captioner would say it.

    >>> colour_name((245, 205, 215)), colour_name((40, 80, 200)), colour_name((128, 128, 128))
    ('pale pink', 'blue', 'grey')
    """
    return _name_lab(_lab(np.array([[rgb]], dtype=np.uint8))[0, 0])


def _name_lab(lab: np.ndarray) -> str:
    L, C, h = _lch(lab)
    if C < _ACHROMATIC or (L > 97 and C < 2 * _ACHROMATIC):
        base = _grey_name(L)
        if C >= _TINTED and base not in ("black", "white"):
            warm = 20.0 <= h <= 200.0 or h >= 340.0  # yellowish-red side of the hue circle
            return ("warm " if warm else "cool ") + base
        if base == "white" and C >= _TINTED:
            return "off-white"
        return base
    # Nearest anchor where hue counts fully, chroma and lightness half: the modifiers below
    # say how much lighter, darker, stronger or greyer than the anchor the colour is.
    best, best_d = 0, float("inf")
    for i, p in enumerate(_PALETTE_LAB):
        pL, pC, ph = _lch(p)
        dh = math.radians((h - ph + 180.0) % 360.0 - 180.0)
        dH = 2.0 * math.sqrt(C * pC) * math.sin(dh / 2.0)
        d = math.sqrt(dH**2 + ((C - pC) / 2.0) ** 2 + ((L - pL) / 2.0) ** 2)
        if d < best_d:
            best, best_d = i, d
    name = _PALETTE_NAMES[best]
    pL, pC, _ = _lch(_PALETTE_LAB[best])
    dL, dC = L - pL, C - pC
    if dL > 10 and dC < 0:
        return "pale " + name
    if dL < -14:
        return ("deep " if dC > -5 and C > 35 else "dark ") + name
    if dC > 20:
        return "deep " + name
    if dC < -25:
        return "muted " + name
    return name


def _base(name: str) -> str:
    for prefix in ("pale ", "dark ", "deep ", "muted ", "warm ", "cool "):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _resize_long(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    size = working_size(w, h, side)
    if size == (w, h):
        return rgb
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _kmeans(x: np.ndarray, k: int, iters: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means: centres start at lightness quantiles. Returns (centres, counts)."""
    order = np.argsort(x[:, 0], kind="stable")
    picks = order[((np.arange(k) + 0.5) / k * len(x)).astype(int)]
    centres = x[picks].astype(np.float64)
    for _ in range(iters):
        d = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        label = d.argmin(1)
        counts = np.bincount(label, minlength=len(centres))
        keep = counts > 0
        new = np.zeros_like(centres)
        for c in range(3):
            new[:, c] = np.bincount(label, weights=x[:, c], minlength=len(centres))
        new = new[keep] / counts[keep, None]
        if new.shape == centres.shape and np.allclose(new, centres, atol=1e-3):
            centres = new
            break
        centres = new
    d = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    counts = np.bincount(d.argmin(1), minlength=len(centres)).astype(np.float64)
    return centres[counts > 0], counts[counts > 0]


def _merge(centres: np.ndarray, weights: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Agglomerate the closest pair of centres (weighted means) while closer than ``limit``."""
    cs, ws = [c for c in centres], [float(w) for w in weights]
    while len(cs) > 1:
        best = None
        for i in range(len(cs)):
            for j in range(i + 1, len(cs)):
                d = float(np.linalg.norm(cs[i] - cs[j]))
                if best is None or d < best[0]:
                    best = (d, i, j)
        d, i, j = best
        if d >= limit:
            break
        w = ws[i] + ws[j]
        cs[i] = (cs[i] * ws[i] + cs[j] * ws[j]) / w
        ws[i] = w
        del cs[j], ws[j]
    return np.array(cs), np.array(ws)


@dataclass(frozen=True)
class Description:
    """What :func:`analyse` measured; :meth:`caption` turns it into a sentence."""

    colours: tuple[tuple[str, float], ...]  # (name, share of the image), largest first
    brightness: str  # "dim", "" or "bright"
    lighting: str  # "even", "gradient", "vignette", "uneven" or "" (not judged)
    light_from: str  # for a gradient: "top", "bottom left", ... (where it is brightest)
    contrast: str  # "low", "" or "high"
    texture: str  # smooth, faint grain, fine grain, coarse grain, mottled, stripes, pattern
    stripes: str  # for stripes: "vertical", "horizontal" or "diagonal"
    measures: dict[str, float] = field(default_factory=dict, compare=False)

    def caption(self) -> str:
        words: list[str] = []
        if self.texture in ("smooth", "mottled"):
            words.append(self.texture)
        if self.brightness:
            words.append(self.brightness)
        if self.contrast:
            words.append(f"{self.contrast}-contrast")
        if self.lighting == "even":
            words.append("evenly lit")
        elif self.lighting == "uneven":
            words.append("unevenly lit")
        names = [n for n, _ in self.colours]
        colour = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        head = ", ".join(words[:-1] + [f"{words[-1]} {colour}"]) if words else colour
        article = "an" if head[0] in "aeiou" else "a"
        extras: list[str] = []
        if self.texture == "fine grain":
            extras.append("a fine grainy texture")
        elif self.texture == "faint grain":
            extras.append("a faint fine grain")
        elif self.texture == "coarse grain":
            extras.append("a coarse grainy texture")
        elif self.texture == "stripes":
            extras.append(f"{self.stripes} stripes")
        elif self.texture == "pattern":
            extras.append("a regular repeating pattern")
        if self.lighting == "gradient":
            extras.append(f"a soft light gradient from the {self.light_from}")
        elif self.lighting == "vignette":
            extras.append("a soft vignette")
        text = f"{article} {head} background"
        if extras:
            text += " with " + " and ".join(extras)
        return text


def analyse(image: Image.Image) -> Description:
    """Measure colours, light, contrast and texture of a background image.

    >>> analyse(Image.new("RGB", (64, 64), (40, 80, 200))).colours
    (('blue', 1.0),)
    """
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    measures: dict[str, float] = {}
    colours = _colours(_resize_long(rgb, _COLOUR_SIDE))

    lum = _lab(_resize_long(rgb, _TEXTURE_SIDE))[..., 0].astype(np.float32)
    mean_l = float(lum.mean())
    measures["mean_L"] = mean_l
    brightness = "dim" if mean_l < 38 else "bright" if mean_l > 80 else ""

    lighting, light_from = _lighting(lum, measures, several_colours=len(colours) > 1)
    texture, stripes = _texture(lum, measures)
    std = float(lum.std())
    measures["std_L"] = std
    # "low" only where a visible structure is faint; a plain surface is not "low-contrast"
    contrast = "high" if std > 22 else "low" if (std < 4 and texture in ("mottled", "stripes", "pattern")) else ""
    return Description(colours, brightness, lighting, light_from, contrast, texture, stripes, measures)


def _colours(rgb: np.ndarray) -> tuple[tuple[str, float], ...]:
    x = _lab(rgb).reshape(-1, 3).astype(np.float64)
    centres, counts = _kmeans(x, k=6)
    centres, counts = _merge(centres, counts, _MERGE_DELTA_E)
    # Merge by base name too ("pale pink" and "pink" are one pink), naming the merged mean.
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(centres):
        groups.setdefault(_base(_name_lab(c)), []).append(i)
    named: list[tuple[str, float]] = []
    total = counts.sum()
    for idx in groups.values():
        w = counts[idx]
        mean = (centres[idx] * w[:, None]).sum(0) / w.sum()
        named.append((_name_lab(mean), float(w.sum() / total)))
    named.sort(key=lambda t: (-t[1], t[0]))
    kept = [(n, s) for n, s in named if s >= _MIN_SHARE][:3] or named[:1]
    if kept[0][1] >= 0.85:
        kept = kept[:1]
    norm = sum(s for _, s in kept)
    return tuple((n, round(s / norm, 3)) for n, s in kept)


def _lighting(lum: np.ndarray, measures: dict[str, float], several_colours: bool) -> tuple[str, str]:
    h, w = lum.shape
    sigma = max(h, w) / 8.0
    low = cv2.GaussianBlur(lum, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    spread = float(np.percentile(low, 98) - np.percentile(low, 2))
    measures["light_spread"] = spread
    if spread < 8.0:
        return "even", ""
    if several_colours:  # large areas of different colours: their lightness is not the light's
        return "", ""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs = xs / max(w - 1, 1) - 0.5
    ys = ys / max(h - 1, 1) - 0.5
    r2 = xs**2 + ys**2
    design = np.stack([np.ones_like(xs), xs, ys, r2], -1).reshape(-1, 4).astype(np.float64)
    target = low.reshape(-1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = target - design @ coef
    explained = 1.0 - resid.var() / max(target.var(), 1e-9)
    _, gx, gy, gr = (float(c) for c in coef)
    measures.update(gradient_x=gx, gradient_y=gy, vignette=gr, light_fit=float(explained))
    if explained < 0.6:
        return "uneven", ""
    plane = abs(gx) + abs(gy)
    radial = abs(gr) * 0.5  # r2 spans 0..0.5
    if radial > plane and gr < 0:
        return "vignette", ""
    horizontal = "left" if gx < 0 else "right"
    vertical = "top" if gy < 0 else "bottom"
    if abs(gx) > 2.0 * abs(gy):
        return "gradient", horizontal
    if abs(gy) > 2.0 * abs(gx):
        return "gradient", vertical
    return "gradient", f"{vertical} {horizontal}"


def _texture(lum: np.ndarray, measures: dict[str, float]) -> tuple[str, str]:
    # Detail energy in octave bands: pixel grain, grain a few pixels wide, blotches.
    blurs = [lum] + [cv2.GaussianBlur(lum, (0, 0), s, borderType=cv2.BORDER_REFLECT) for s in (1, 2, 4, 8)]
    # Robust spreads (median absolute deviation): grain is everywhere, while a single edge
    # between two colour areas is a few pixels wide and must not read as texture.
    bands = [_robust_std(blurs[i] - blurs[i + 1]) ** 2 for i in range(4)]
    detail = float((lum - blurs[-1]).std())
    robust = _robust_std(lum - blurs[-1])
    measures.update(detail=detail, robust_detail=robust, **{f"band{i}": b for i, b in enumerate(bands)})

    periodic, direction = _periodicity(lum - blurs[-1], measures)
    if periodic and detail > 2.0:
        return ("stripes", direction) if direction else ("pattern", "")
    if robust < 0.6:
        return "smooth", ""
    # the energy-weighted band index says how large the texture's grains are
    scale = sum(i * b for i, b in enumerate(bands)) / max(sum(bands), 1e-12)
    measures["grain_scale"] = scale
    if robust < 1.5:  # barely visible: only a fine grain is worth a word
        return ("faint grain" if scale < 1.9 else "smooth"), ""
    if scale < 0.9:
        return "fine grain", ""
    if scale < 1.9:
        return "coarse grain", ""
    return "mottled", ""


def _robust_std(x: np.ndarray) -> float:
    return 1.4826 * float(np.median(np.abs(x - np.median(x))))


def _periodicity(detail: np.ndarray, measures: dict[str, float]) -> tuple[bool, str]:
    """Whether the detail layer is dominated by a few spatial frequencies, and their direction."""
    h, w = detail.shape
    if min(h, w) < 16:
        return False, ""
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    power = np.abs(np.fft.fftshift(np.fft.fft2(detail * window))) ** 2
    cy, cx = h // 2, w // 2
    fy, fx = np.mgrid[0:h, 0:w]
    fy, fx = (fy - cy) / h, (fx - cx) / w  # cycles per pixel
    radius = np.hypot(fy, fx)
    power[radius < 3.0 / min(h, w)] = 0.0  # the lowest frequencies are lighting, not pattern
    total = float(power.sum())
    if total <= 0:
        return False, ""
    peaks: list[tuple[float, float]] = []  # (share, angle in degrees, 0..180)
    angles = np.degrees(np.arctan2(fy, fx)) % 180.0
    work = power.copy()
    for _ in range(2):
        iy, ix = np.unravel_index(int(work.argmax()), work.shape)
        angle = float(angles[iy, ix])
        # the peak, its mirror and its harmonics all lie on one line through the centre
        diff = np.abs(angles - angle)
        line = np.minimum(diff, 180.0 - diff) < 6.0
        line_power = float(work[line].sum())
        # A repeating pattern has one strong frequency on its line (and its harmonics); a single
        # edge or a blotch spreads over the whole line. Keep the lines that peak sharply.
        near = (np.abs(radius - radius[iy, ix]) <= 1.5 / min(h, w)) & line
        sharp = float(work[near].sum()) / max(line_power, 1e-12)
        peaks.append((line_power / total if sharp > 0.4 else 0.0, angle))
        work[line] = 0.0
    first, second = peaks[0][0], peaks[1][0]
    if first + second < 0.6 or first < 0.3:
        return False, ""
    if second > 0.25:
        return True, ""  # two directions: a grid, checks, weave
    angle = peaks[0][1]
    # frequency along x (angle ~0) means the light/dark bands are vertical
    if angle < 20 or angle > 160:
        return True, "vertical"
    if 70 < angle < 110:
        return True, "horizontal"
    return True, "diagonal"


class DescribeCaptioner(Captioner):
    """Caption a clean background from measurements alone (no weights, deterministic).

    >>> from PIL import Image
    >>> DescribeCaptioner(CaptionConfig())(Image.new("RGB", (32, 32), (128, 128, 128)))
    'a smooth, evenly lit grey background'
    """

    name = "describe"

    def __init__(self, config: CaptionConfig | None = None):
        self.config = config if config is not None else CaptionConfig()

    @classmethod
    def availability(cls, config: CaptionConfig) -> str | None:
        return None

    def __call__(self, image: Image.Image) -> str:
        found = analyse(image)
        note("caption.describe", {"colours": [list(c) for c in found.colours], "texture": found.texture,
                                  "lighting": found.lighting})
        log.debug("describe measures: %s", found.measures)
        return found.caption()
