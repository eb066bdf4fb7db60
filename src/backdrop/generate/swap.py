"""Weight-free generator: the clean background of *another image of the same set*.

Each variant's background is another training image with its objects removed and the hole
filled (the donor store, :mod:`backdrop.generate.donors`, made in a first pass over the set),
fitted to the image's size without losing its grain: cropped at the donor's own scale where it
is large enough, mirrored-tiled where it is smaller, resized only when the sizes differ more than
twice. Of a few crop windows the one with the most *real* donor pixels is taken, so the filled
hole is kept out of the picture where the donor allows.

Which donor: never the image itself; an image of **another class** where the set has classes
(class folders, an imagefolder ``label`` column, the majority class of detection labels), else
any other image (said once). The pick depends on the base seed, the image's rank in its class
and the variant only, never on the order the items run in or which engine runs them; donors are
spread like ``pool`` spreads its pictures: an image's class takes donor after donor of a fixed
shuffle of the other classes', so none is used twice while unused ones remain.

>>> from backdrop.config import GenerateConfig
>>> SwapGenerator(GenerateConfig()).describe()["model"]
'swap'
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import cv2
import numpy as np
from PIL import Image

from .. import runlog
from ..config import GenerateConfig
from ..errors import ConfigError
from ..stages import Generator
from ..types import GenerateRequest

log = logging.getLogger(__name__)

TAG = 0x73776170  # "swap": seeds the donor shuffles apart from every other use of the base seed
WINDOWS = 6  # crop windows tried; the one with the most real donor pixels is kept (see bench_swap_fill.py)
MAX_SCALE = 2.0  # a donor within MAX_SCALE x of the target's size keeps its own pixel scale


class SwapGenerator(Generator):
    """Backgrounds of the set's other images (other classes first), from the donor store."""

    name = "swap"
    generative = False
    uses_prompt = False  # the pipeline skips caption and refine for it
    uses_background = False  # it reads donors' clean backgrounds, not the image's own
    needs_set = True  # the engine builds the donor store in a first pass and binds it (bind_set)
    # a donor is a background of the same set, by design like the image's own: the too_close and
    # near_duplicate checks would reject it (and burn the spread of donors on retries)
    keeps_background_colours = True

    def __init__(self, config: GenerateConfig):
        self.config = config
        self.store: Any = None
        self.variants = 1
        self.base_seed = 0
        self._fallback_said = False
        self._random: Any = None  # a set of fewer than 2 images: random backgrounds instead

    def bind_set(self, store: Any, *, variants: int, base_seed: int) -> None:
        """Called by the engine's worker: the donor store of this run, its variants per image and base seed."""
        self.store = store
        self.variants = max(1, int(variants))
        self.base_seed = int(base_seed)

    def describe(self) -> dict[str, Any]:
        from .donors import FILL

        out: dict[str, Any] = {"model": "swap", "fill": FILL}
        if self.store is not None:
            out["donors"] = self.store.count
            out["classes"] = len(self.store.names)
        return out

    def __call__(self, request: GenerateRequest) -> Image.Image:
        store = self.store
        if store is None:
            raise ConfigError("swap draws backgrounds from the other images of a set: use it with `backdrop augment`, "
                              "`backdrop run` over several images, or backdrop.augment(); for one image use random or pool")
        if store.count < 2:  # a set of one: nothing to swap with (the first pass said so once)
            if self._random is None:
                from .random import RandomGenerator  # a sibling backend: no import back up to the registry

                self._random = RandomGenerator(self.config)
            runlog.note(f"mix.seed{request.seed}", "random")  # the manifest's ``generator``: what made it
            return self._random(request)
        donor, other = self.pick(request)
        rgb, real = store.load(donor)
        rng = np.random.default_rng([TAG, request.seed])
        out = fit(rgb, real, request.image.size, rng)
        runlog.note(f"swap.donor.seed{request.seed}", store.rel(donor))
        cls = int(store.classes[donor])
        if cls >= 0:
            runlog.note(f"swap.class.seed{request.seed}", store.names[cls])
        runlog.note(f"swap.other_class.seed{request.seed}", other)
        if request.progress is not None:
            request.progress(1, 1)
        return Image.fromarray(out, "RGB")

    def pick(self, request: GenerateRequest) -> tuple[int, bool]:
        """(donor position, whether it is of another class than the image's)."""
        store = self.store
        pos: Optional[int] = store.find(request.item) if request.item is not None else None
        k = int(request.slot) % self.variants if request.slot is not None else 0
        c, rank = store.class_rank(pos) if pos is not None else (-1, None)
        others = store.count - int(store.sizes[c]) if c >= 0 else 0
        if rank is None:  # not in the store (a single image outside the set): its seed places it
            rank = int(np.random.default_rng([TAG, request.seed]).integers(store.count))
        if c >= 0 and others > 0:
            cycle, p = divmod(rank * self.variants + k, others)
            q = int(np.random.default_rng([TAG, self.base_seed, c, cycle]).permutation(others)[p])
            return store.other_class(c, q), True
        if not self._fallback_said:
            self._fallback_said = True
            why = ("the set has no classes (class folders, a label column or detection labels)" if not store.names
                   else "this image has no class" if c < 0 else f"every image is of class {store.names[c]!r}")
            log.warning("swap: %s: backgrounds come from any other image of the set", why)
        n = store.count - (1 if pos is not None else 0)
        if n <= 0:
            raise ConfigError("swap needs at least 2 images to swap backgrounds between")
        cycle, p = divmod(rank * self.variants + k, n)
        q = int(np.random.default_rng([TAG, self.base_seed, 0xFFFFFFFF, cycle]).permutation(n)[p])
        return (q if pos is None or q < pos else q + 1), False


def fit(rgb: np.ndarray, real: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A ``size`` (w, h) background from a donor, its pixel scale kept where the sizes allow:
    resized only beyond ``MAX_SCALE`` x, mirrored-tiled where smaller, then the crop window (of
    ``WINDOWS`` tried) with the most real pixels, flipped half the time."""
    tw, th = size
    h, w = rgb.shape[:2]
    ratio = min(w / tw, h / th)
    scale = MAX_SCALE / ratio if ratio > MAX_SCALE else (1 / (MAX_SCALE * ratio) if ratio < 1 / MAX_SCALE else 1.0)
    if scale != 1.0:
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        real = cv2.resize(real.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) > 0
        h, w = nh, nw
    if h < th or w < tw:  # mirror-tile: the grain stays, only the layout repeats
        py, px = max(0, th - h), max(0, tw - w)
        pad = ((0, py), (0, px))
        rgb = np.pad(rgb, pad + ((0, 0),), mode="symmetric")
        real = np.pad(real, pad, mode="symmetric")
        h, w = rgb.shape[:2]
    best, best_real = (0, 0), -1.0
    integral = cv2.integral(real.astype(np.uint8))
    for _ in range(WINDOWS):
        y0 = int(rng.integers(0, h - th + 1))
        x0 = int(rng.integers(0, w - tw + 1))
        n = float(integral[y0 + th, x0 + tw] - integral[y0, x0 + tw] - integral[y0 + th, x0] + integral[y0, x0])
        if n > best_real:
            best, best_real = (y0, x0), n
    y0, x0 = best
    out = rgb[y0:y0 + th, x0:x0 + tw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)
