"""Weight-free generator: domain randomisation, procedural backgrounds that owe nothing to the input.

Why it exists: a model trained on augmented data should stop using the background as a cue.
``texture`` re-synthesises the image's *own* background, so a class's background colour survives;
``random`` draws a genuinely new background for every seed (Tobin et al. 2017, domain
randomisation): one or more procedural layers, each a scalar field mapped through a random colour
ramp, mixed through soft masks or light modulations, then optionally blurred, vignetted and grained.

Families of fields: smooth and multi-stop gradients (linear, radial), fractal value noise
(Perlin-like octaves), cells (Voronoi), stripes and waves (domain-warped sines), blobs and bokeh
discs, fibres (oriented strokes), granules, and stain-like fields (thresholded noise with darker
rims, as dried stain on a slide). Colours come from the whole gamut or a style's palette.

Styles (``GenerateConfig.random_style``): ``any`` (full gamut, every family), ``microscopy``
(brightfield, H&E-like, fluorescence and phase-contrast palettes; stains, granules, fibres),
``studio`` (neutral and pastel seamless backdrops, gradients, soft bokeh), ``outdoor`` (sky,
foliage, earth, stone colours; noise, fibres, blobs). ``auto`` picks one from style words in the
request's prompt (a microscopy template says "microscopy"), else ``any``.

All fields are computed on a canvas of long side ``WORK_SIDE`` and resized to the target, so a
pattern keeps its scale relative to the frame at any size; only the grain is drawn at full size. The same seed gives the same pixels; another seed, another background.

>>> from backdrop.config import GenerateConfig
>>> RandomGenerator(GenerateConfig(backend="random")).describe()["model"]
'random-procedural'
"""

from __future__ import annotations

import colorsys
import logging
from typing import Any, Callable

import cv2
import numpy as np
from PIL import Image

from ..config import RANDOM_STYLES, GenerateConfig
from ..errors import GenerationError
from ..types import GenerateRequest
from ..stages import Generator

log = logging.getLogger(__name__)

WORK_SIDE = 192  # long side of the working resolution: fields are smooth, so upscaling loses nothing

Field = np.ndarray  # float32 (h, w) in 0..1

# style words that ``auto`` looks for in the prompt (lower case), first match wins
_AUTO_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("microscopy", ("microscop", "micrograph", "histolog", "fluorescen", "stained", "slide", "cell")),
    ("studio", ("studio", "backdrop", "product", "minimalist", "seamless")),
    ("outdoor", ("outdoor", "landscape", "forest", "sky", "field", "street", "garden", "nature")),
)


class RandomGenerator(Generator):
    """Seeded procedural backgrounds (domain randomisation), at the input's size, no weights."""

    name = "random"
    generative = False
    uses_prompt = False  # the prompt is never needed (``auto`` only glances at it for a style word)
    uses_background = False  # it draws its own: no clean background (inpainting) needed

    def __init__(self, config: GenerateConfig):
        self.config = config

    def describe(self) -> dict[str, Any]:
        return {"model": "random-procedural", "style": self.config.random_style}

    def __call__(self, request: GenerateRequest) -> Image.Image:
        width, height = request.image.size
        if width < 1 or height < 1:
            raise GenerationError(f"random: cannot make a {width}x{height} background")
        style = resolve_style(self.config.random_style, request.prompt.positive if request.prompt else "")
        out = render(width, height, request.seed, style)
        if request.progress is not None:
            request.progress(1, 1)
        return Image.fromarray(out, "RGB")


def resolve_style(style: str, prompt: str = "") -> str:
    """The concrete style for ``style`` (``auto`` looks for style words in ``prompt``).

    >>> resolve_style("auto", "brightfield microscopy image of a pale field")
    'microscopy'
    >>> resolve_style("auto", "")
    'any'
    """
    if style != "auto":
        return style
    text = prompt.lower()
    for name, words in _AUTO_WORDS:
        if any(w in text for w in words):
            return name
    return "any"


def render(width: int, height: int, seed: int, style: str = "any") -> np.ndarray:
    """A (height, width, 3) uint8 background for ``seed`` in ``style`` (see the module docstring)."""
    if style not in _STYLES:
        raise GenerationError(f"random: unknown style {style!r}; choose one of: {', '.join(RANDOM_STYLES)}")
    rng = np.random.default_rng(seed)
    spec = _STYLES[style]
    # a canvas of the same long side whatever the target size, so a seed's pattern has the same
    # scale relative to the frame on a 32 px crop and a 4000 px photo (grain, cells, fibres alike)
    scale = WORK_SIDE / max(width, height)
    h, w = max(8, round(height * scale)), max(8, round(width * scale))

    n_layers = int(rng.choice([1, 2, 3], p=spec["layers"]))
    img = _layer(rng, spec, h, w)
    for _ in range(n_layers - 1):
        top = _layer(rng, spec, h, w)
        mode = rng.choice(["mask", "mask", "multiply", "screen", "overlay"])
        if mode == "mask":
            # a soft region of one layer over another: the layers occupy different parts of the frame
            a = _field(rng, rng.choice(["fractal", "blobs", "gradient", "cells", "stain"]), h, w)
            sharp = rng.uniform(1.0, 8.0)
            a = 1.0 / (1.0 + np.exp(-sharp * (a - rng.uniform(0.3, 0.7)) * 4.0))
            alpha = (a * rng.uniform(0.5, 1.0))[..., None]
            img = img * (1 - alpha) + top * alpha
        elif mode == "multiply":
            img = img * (0.5 + 0.5 * top)
        elif mode == "screen":
            img = 1 - (1 - img) * (1 - 0.6 * top)
        else:
            img = np.where(img < 0.5, 2 * img * top, 1 - 2 * (1 - img) * (1 - top)) * 0.6 + img * 0.4

    img = _finish_small(rng, spec, img)
    shrink = width < w or height < h
    out = cv2.resize(img.astype(np.float32), (width, height),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    grain = float(rng.choice([0.0, 0.0, rng.uniform(0.005, spec["grain"])]))
    # full resolution from here: in place, no temporary frame (the same float32 arithmetic, so the
    # same pixels, at about half the time: at 640x480 the temporaries' page faults dominated)
    if grain > 0:
        # the only full-resolution noise: sensor grain, so an upscaled field does not look plastic
        noise = rng.standard_normal((height, width, 1), dtype=np.float32)
        noise *= grain
        out += noise
    out *= 255.0
    out += 0.5
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


# -- colour ----------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


def _colour_any(rng: np.random.Generator) -> np.ndarray:
    return _hsv(rng.random(), rng.random() ** 0.7, rng.uniform(0.05, 1.0))


def _colour_microscopy(rng: np.random.Generator) -> np.ndarray:
    kind = rng.choice(["bright", "he", "fluor", "phase", "any"], p=[0.3, 0.25, 0.15, 0.15, 0.15])
    if kind == "bright":  # brightfield: near-white glass with a faint tint
        return _hsv(rng.random(), rng.uniform(0, 0.25), rng.uniform(0.7, 1.0))
    if kind == "he":  # haematoxylin and eosin: pinks and purples
        return _hsv(rng.uniform(0.72, 0.99), rng.uniform(0.1, 0.65), rng.uniform(0.45, 1.0))
    if kind == "fluor":  # dark field with a coloured glow
        return _hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.0, 0.45) ** 1.5)
    if kind == "phase":  # greys
        return _hsv(0, 0, rng.uniform(0.25, 0.9))
    return _colour_any(rng)


def _colour_studio(rng: np.random.Generator) -> np.ndarray:
    kind = rng.choice(["neutral", "pastel", "paper", "dark"], p=[0.35, 0.3, 0.2, 0.15])
    if kind == "neutral":
        return _hsv(rng.random(), rng.uniform(0, 0.08), rng.uniform(0.5, 1.0))
    if kind == "pastel":
        return _hsv(rng.random(), rng.uniform(0.1, 0.4), rng.uniform(0.75, 1.0))
    if kind == "paper":  # a saturated seamless paper backdrop
        return _hsv(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.4, 0.95))
    return _hsv(rng.random(), rng.uniform(0, 0.3), rng.uniform(0.05, 0.3))


def _colour_outdoor(rng: np.random.Generator) -> np.ndarray:
    kind = rng.choice(["sky", "foliage", "earth", "stone", "any"], p=[0.2, 0.3, 0.2, 0.15, 0.15])
    if kind == "sky":
        return _hsv(rng.uniform(0.53, 0.65), rng.uniform(0.05, 0.6), rng.uniform(0.6, 1.0))
    if kind == "foliage":
        return _hsv(rng.uniform(0.17, 0.42), rng.uniform(0.3, 0.9), rng.uniform(0.15, 0.8))
    if kind == "earth":
        return _hsv(rng.uniform(0.03, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.75))
    if kind == "stone":
        return _hsv(rng.uniform(0.0, 0.2), rng.uniform(0.0, 0.15), rng.uniform(0.3, 0.85))
    return _colour_any(rng)


def _ramp(rng: np.random.Generator, spec: dict, field: Field) -> np.ndarray:
    """``field`` mapped through a random colour ramp of 2..5 stops: (h, w, 3) float32 in 0..1."""
    pick: Callable[[np.random.Generator], np.ndarray] = spec["colour"]
    stops = int(rng.integers(2, 6))
    first = pick(rng)
    colours = [first]
    for _ in range(stops - 1):
        if rng.random() < spec["analogous"]:
            # a neighbour of the previous stop: tonal ramps (a stain's light and dark) look natural
            r, g, b = colours[-1]
            hh, ss, vv = colorsys.rgb_to_hsv(float(r), float(g), float(b))
            colours.append(_hsv(hh + rng.normal(0, 0.05), ss + rng.normal(0, 0.15), vv + rng.normal(0, 0.25)))
        else:
            colours.append(pick(rng))
    positions = np.sort(np.concatenate([[0.0, 1.0], rng.random(stops - 2)]))
    lut_x = np.linspace(0, 1, 256)
    lut = np.stack([np.interp(lut_x, positions, [c[i] for c in colours]) for i in range(3)], axis=1)
    index = np.clip(field * 255.0 + 0.5, 0, 255).astype(np.intp)
    return lut.astype(np.float32)[index]


# -- fields (all (h, w) float32 in 0..1) -----------------------------------------------------------


def _norm(f: np.ndarray) -> Field:
    lo, hi = float(f.min()), float(f.max())
    if hi - lo < 1e-6:
        return np.full(f.shape, 0.5, np.float32)
    return ((f - lo) / (hi - lo)).astype(np.float32)


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    s = float(max(h, w))
    return x / s, y / s


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> Field:
    gh, gw = max(2, round(cells * h / max(h, w))) + 1, max(2, round(cells * w / max(h, w))) + 1
    grid = rng.random((gh, gw), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def f_gradient(rng, h, w) -> Field:
    x, y = _coords(h, w)
    if rng.random() < 0.6:
        angle = rng.uniform(0, 2 * np.pi)
        g = x * np.cos(angle) + y * np.sin(angle)
    else:  # radial, centred anywhere (a spot light, a vignette)
        cx, cy = rng.uniform(-0.2, 1.2) * w / max(h, w), rng.uniform(-0.2, 1.2) * h / max(h, w)
        g = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    return _norm(g) ** rng.uniform(0.5, 2.0)


def f_fractal(rng, h, w) -> Field:
    base = int(rng.integers(2, 8))
    octaves = int(rng.integers(2, 6))
    persistence = rng.uniform(0.35, 0.7)
    total = np.zeros((h, w), np.float32)
    amp = 1.0
    for o in range(octaves):
        total += amp * _value_noise(rng, h, w, base * 2**o)
        amp *= persistence
    f = _norm(total)
    if rng.random() < 0.3:  # ridged: veins and marble-like creases
        f = 1 - np.abs(2 * f - 1)
    return f


def f_cells(rng, h, w) -> Field:
    n = int(rng.integers(6, 80))
    seeds = np.ones((h, w), np.uint8)
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    seeds[ys, xs] = 0
    dist, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_CCOMP)
    if rng.random() < 0.5:  # flat cells, one value each (cobbles, tiles)
        values = rng.random(int(labels.max()) + 1).astype(np.float32)
        return values[labels]
    return _norm(dist) ** rng.uniform(0.4, 1.2)  # shaded cells: bright centres, dark walls (or reversed)


def f_waves(rng, h, w) -> Field:
    x, y = _coords(h, w)
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(3, 40)
    phase = x * np.cos(angle) + y * np.sin(angle)
    if rng.random() < 0.6:  # warped: waves, wood grain, ripples
        phase = phase + rng.uniform(0.02, 0.3) * (_value_noise(rng, h, w, int(rng.integers(2, 6))) - 0.5)
    s = np.sin(2 * np.pi * freq * phase)
    if rng.random() < 0.4:  # hard stripes
        s = np.tanh(s * rng.uniform(2, 10))
    if rng.random() < 0.25:  # a second set across: a weave or a plaid
        angle2 = angle + rng.uniform(np.pi / 4, 3 * np.pi / 4)
        s = s + np.sin(2 * np.pi * rng.uniform(3, 40) * (x * np.cos(angle2) + y * np.sin(angle2)))
    return _norm(s)


def f_blobs(rng, h, w) -> Field:
    f = np.zeros((h, w), np.float32)
    bokeh = rng.random() < 0.5
    n = int(rng.integers(5, 60))
    side = max(h, w)
    for _ in range(n):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        r = int(side * rng.uniform(0.02, 0.15 if bokeh else 0.3))
        layer = np.zeros_like(f)
        cv2.circle(layer, c, max(1, r), float(rng.uniform(0.3, 1.0)), -1, lineType=cv2.LINE_AA)
        f = np.maximum(f, layer) if bokeh else f + layer
    sigma = side * (rng.uniform(0.002, 0.01) if bokeh else rng.uniform(0.02, 0.08))
    f = cv2.GaussianBlur(f, (0, 0), max(0.5, sigma))
    return _norm(f)


def f_fibres(rng, h, w) -> Field:
    f = np.zeros((h, w), np.float32)
    n = int(rng.integers(30, 300))
    main = rng.uniform(0, np.pi)
    spread = rng.uniform(0.05, 1.5)  # small: combed fibres, grass; large: felt, paper
    side = max(h, w)
    for _ in range(n):
        x0, y0 = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        angle = main + rng.normal(0, spread)
        length = side * rng.uniform(0.05, 0.5)
        bend = rng.normal(0, 0.4)
        t = np.linspace(0, 1, 8)
        xs = x0 + length * t * np.cos(angle + bend * t)
        ys = y0 + length * t * np.sin(angle + bend * t)
        pts = np.stack([xs, ys], axis=1).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(f, [pts], False, float(rng.uniform(0.3, 1.0)), 1, lineType=cv2.LINE_AA)
    f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.4, 1.2))
    return _norm(f + 0.3 * _value_noise(rng, h, w, 4))


def f_granules(rng, h, w) -> Field:
    noise = rng.random((h, w), dtype=np.float32)
    f = cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.5, 2.0))
    f = _norm(f)
    if rng.random() < 0.5:  # sparse grains on a plain field (sand, debris)
        cut = rng.uniform(0.6, 0.85)
        f = np.clip((f - cut) / (1 - cut), 0, 1)
    return _norm(f + 0.5 * _value_noise(rng, h, w, int(rng.integers(2, 6))))


def f_stain(rng, h, w) -> Field:
    base = f_fractal(rng, h, w)
    cut = rng.uniform(0.35, 0.65)
    soft = 1.0 / (1.0 + np.exp(-(base - cut) * rng.uniform(10, 40)))
    # dried stain collects at its edge: a darker rim where the field crosses the cut
    rim = np.exp(-((base - cut) ** 2) / (2 * rng.uniform(0.005, 0.03) ** 2))
    return _norm(soft + rng.uniform(0.3, 1.0) * rim + 0.2 * _value_noise(rng, h, w, 16))


def f_flat(rng, h, w) -> Field:
    return _norm(_value_noise(rng, h, w, 2) * rng.uniform(0.05, 0.3) + 0.5)


_FAMILIES: dict[str, Callable[[np.random.Generator, int, int], Field]] = {
    "gradient": f_gradient,
    "fractal": f_fractal,
    "cells": f_cells,
    "waves": f_waves,
    "blobs": f_blobs,
    "fibres": f_fibres,
    "granules": f_granules,
    "stain": f_stain,
    "flat": f_flat,
}


def _field(rng: np.random.Generator, family: str, h: int, w: int) -> Field:
    return _FAMILIES[str(family)](rng, h, w)


def _layer(rng: np.random.Generator, spec: dict, h: int, w: int) -> np.ndarray:
    names, weights = zip(*spec["families"].items())
    p = np.asarray(weights, np.float64)
    family = rng.choice(names, p=p / p.sum())
    return _ramp(rng, spec, _field(rng, family, h, w))


def _finish_small(rng: np.random.Generator, spec: dict, img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if rng.random() < spec["blur"]:  # out of focus: depth of field, a defocused slide
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), max(h, w) * rng.uniform(0.003, 0.03))
    if rng.random() < spec["vignette"]:
        x, y = _coords(h, w)
        cx, cy = 0.5 * w / max(h, w), 0.5 * h / max(h, w)
        r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) / max(cx, cy, 1e-6)
        img = img * (1 - rng.uniform(0.1, 0.5) * np.clip(r, 0, 1.5)[..., None] ** 2)
    return img


_STYLES: dict[str, dict[str, Any]] = {
    "any": {
        "colour": _colour_any,
        "analogous": 0.35,
        "layers": [0.35, 0.45, 0.2],
        "families": {"gradient": 1.0, "fractal": 1.2, "cells": 1.0, "waves": 1.0, "blobs": 1.0,
                     "fibres": 0.8, "granules": 0.8, "stain": 0.8, "flat": 0.4},
        "blur": 0.2,
        "vignette": 0.2,
        "grain": 0.05,
    },
    "microscopy": {
        "colour": _colour_microscopy,
        "analogous": 0.7,
        "layers": [0.35, 0.5, 0.15],
        "families": {"gradient": 0.6, "fractal": 1.0, "cells": 0.4, "waves": 0.2, "blobs": 0.6,
                     "fibres": 0.8, "granules": 1.0, "stain": 1.4, "flat": 0.6},
        "blur": 0.35,
        "vignette": 0.35,
        "grain": 0.04,
    },
    "studio": {
        "colour": _colour_studio,
        "analogous": 0.8,
        "layers": [0.55, 0.4, 0.05],
        "families": {"gradient": 2.0, "fractal": 0.5, "cells": 0.1, "waves": 0.2, "blobs": 1.0,
                     "fibres": 0.2, "granules": 0.2, "stain": 0.1, "flat": 1.5},
        "blur": 0.5,
        "vignette": 0.5,
        "grain": 0.02,
    },
    "outdoor": {
        "colour": _colour_outdoor,
        "analogous": 0.6,
        "layers": [0.3, 0.5, 0.2],
        "families": {"gradient": 1.0, "fractal": 1.5, "cells": 0.5, "waves": 0.3, "blobs": 1.2,
                     "fibres": 1.2, "granules": 0.8, "stain": 0.3, "flat": 0.2},
        "blur": 0.35,
        "vignette": 0.2,
        "grain": 0.04,
    },
}
