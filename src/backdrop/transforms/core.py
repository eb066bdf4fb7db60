"""The framework-free core: numpy in, numpy out, a new background on every call.

See :class:`ReplaceBackground`. The adapters (:mod:`backdrop.transforms.albumentations`,
:mod:`backdrop.transforms.torchvision`) wrap this class; they only translate their library's
targets and draw the per-call seed from the library's own random state.
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from ..errors import ConfigError, InputError

log = logging.getLogger(__name__)

OnMiss = Literal["segment", "box", "skip", "error"]
ON_MISS = ("segment", "box", "skip", "error")
RULE = 2  # bump when the labels-aware rule changes what a stored mask means (2: box-prompted masks)


def draw_seed() -> int:
    """A per-call seed from the framework's own random state: torch's global generator when torch
    is already imported (``torch.manual_seed`` and a DataLoader's per-worker seeds govern it),
    else numpy's global one (which a DataLoader seeds per worker too)."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "randint"):
        return int(torch.randint(0, 2**31 - 1, (1,)).item())
    return int(np.random.randint(0, 2**31 - 1))


class ReplaceBackground:
    """Replace the background of an image, keeping every object pixel, with a new one per call.

    ``t = ReplaceBackground(generator="random")`` then
    ``out = t(image=img, mask=m, bboxes=b)``: ``img`` is ``H x W x 3`` uint8 (RGB, upright),
    ``m`` an optional ``H x W`` mask (non-zero = object: semantic and instance masks alike),
    ``b`` optional ``N x 4`` pixel boxes ``x0 y0 x1 y1``. ``out`` has the same keys; only
    ``out["image"]`` changes, and only outside the object.

    Where the object comes from: the mask when given; else a mask stored for these pixels (and
    boxes) by ``backdrop masks SRC`` or an earlier call (``masks``: a folder, ``"auto"`` for
    ``$BACKDROP_HOME/cache/pixel-masks``, None for no store); else ``on_miss``:
    ``"segment"`` (run the segmenter here, inside the boxes when given; warns once; the mask is
    stored for the next epoch), ``"box"`` (keep the whole boxes), ``"skip"`` (return the input
    unchanged) or ``"error"``.

    ``generator``: any registered generator (``random``, ``pool`` with ``backgrounds=DIR``,
    ``texture``, ``swap`` with ``donors=DIR``: the donor store an ``augment --generator swap``
    run wrote, any other image's clean background, whatever its class, ...); ``generator_options`` are :class:`~backdrop.config.GenerateConfig` fields
    (``random_style="studio"``, ``variation=0.1``). Stable Diffusion backends work but take
    seconds per image. ``p``: the probability of replacing at all. ``seed``: None draws each
    call's seed from the framework's random state (:func:`draw_seed`); an int makes the
    instance's sequence of backgrounds fixed (every DataLoader worker then repeats the same
    sequence: leave it None in a loader). Picklable; generators and models load lazily in
    the process that first uses them (each DataLoader worker).

    >>> import numpy as np
    >>> img = np.full((48, 64, 3), 200, np.uint8); m = np.zeros((48, 64), np.uint8); m[10:30, 20:40] = 1
    >>> out = ReplaceBackground(seed=0)(image=img, mask=m)
    >>> bool((out["image"][m > 0] == 200).all()), out["mask"] is m
    (True, True)
    """

    def __init__(
        self,
        generator: str = "random",
        backgrounds: str | Path | None = None,
        p: float = 1.0,
        seed: Optional[int] = None,
        *,
        on_miss: OnMiss = "segment",
        masks: str | Path | None = "auto",
        segment: Any = None,
        box_grow: float = 0.05,
        box_min_cover: float = 0.3,
        box_prompt: bool = True,
        prompt: str = "",
        donors: str | Path | None = None,
        **generator_options: Any,
    ):
        from ..config import GenerateConfig, SegmentConfig
        from ..generate import GENERATORS

        GENERATORS.check_name(generator)
        if not 0.0 <= float(p) <= 1.0:
            raise ConfigError(f"p must be between 0 and 1, got {p!r}")
        if on_miss not in ON_MISS:
            raise ConfigError(f"on_miss must be one of {', '.join(ON_MISS)}, got {on_miss!r}")
        try:
            self.generate_config = GenerateConfig(
                backend=generator, backgrounds=None if backgrounds is None else str(backgrounds), **generator_options)
        except TypeError as exc:
            raise ConfigError(f"unknown generator option: {exc}") from None
        if isinstance(segment, str):
            segment = SegmentConfig(backend=segment)
        self.segment_config = segment or SegmentConfig()
        avail = GENERATORS.availability(generator, self.generate_config)
        if not avail.usable:
            raise ConfigError(f"generator {generator!r}: {avail.reason}")
        if GENERATORS.capability(generator, "needs_set") and donors is None:
            raise ConfigError(f"generator {generator!r} draws from a set's donor store: pass donors=DIR, the "
                              "OUT/.backdrop/donors/<settings> folder that a `backdrop augment --generator swap` run wrote")
        self.donors = None if donors is None else str(donors)
        self.generator = generator
        self.p = float(p)
        self.seed = seed
        self.on_miss = on_miss
        self.masks = masks
        self.box_grow = float(box_grow)
        self.box_min_cover = float(box_min_cover)
        self.box_prompt = bool(box_prompt)
        self.prompt = prompt
        self._init_state()

    def _init_state(self) -> None:
        self._rng = None if self.seed is None else np.random.default_rng(self.seed)
        self._gen: Any = None
        self._pipe: Any = None
        self._inpainter: Any = None
        self._store: Any = None
        self._warned = False
        self.stats = {"given": 0, "stored": 0, "segmented": 0, "box": 0, "skipped": 0}

    # -- pickling: settings travel, loaded things are rebuilt in the worker ------------------------
    def __getstate__(self) -> dict[str, Any]:
        keep = ("generate_config", "segment_config", "generator", "p", "seed", "on_miss", "masks",
                "box_grow", "box_min_cover", "box_prompt", "prompt", "donors")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_state()

    def __repr__(self) -> str:
        return (f"ReplaceBackground(generator={self.generator!r}, p={self.p}, seed={self.seed}, "
                f"on_miss={self.on_miss!r})")

    # -- settings that identify a stored mask -------------------------------------------------------
    def store_settings(self, source: str) -> dict[str, Any]:
        return store_settings(source, self.segment_config, self.box_grow, self.box_min_cover, self.box_prompt)

    @property
    def store(self) -> Any:
        if self._store is None and self.masks:
            from ..maskstore import MaskStore

            self._store = MaskStore(None if self.masks == "auto" else self.masks)
        return self._store

    # -- the call ---------------------------------------------------------------------------------
    def next_seed(self) -> int:
        if self._rng is not None:
            return int(self._rng.integers(0, 2**31 - 1))
        return draw_seed()

    def __call__(self, *, image: np.ndarray, mask: Any = None, bboxes: Any = None,
                 seed: Optional[int] = None, **targets: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"image": image, **targets}
        if mask is not None:
            out["mask"] = mask
        if bboxes is not None:
            out["bboxes"] = bboxes
        seed = self.next_seed() if seed is None else int(seed)
        if seed < 0:
            raise InputError(f"seed must be >= 0, got {seed}")
        if self.p < 1.0 and np.random.default_rng([seed, 1]).random() >= self.p:
            return out
        img = check_image(image)
        fg = self.foreground(img, mask, bboxes)
        if fg is not None:
            out["image"] = self.apply(img, fg, seed)
        return out

    def foreground(self, image: np.ndarray, mask: Any = None, bboxes: Any = None) -> Optional[np.ndarray]:
        """The object's pixels (bool ``H x W``), or None to leave this image as it is."""
        from ..datasets.labels import Labels, Obj, box_mask, segment_plan

        h, w = image.shape[:2]
        if mask is not None:
            self.stats["given"] += 1
            return mask_foreground(mask, (h, w))
        boxes = None if bboxes is None else check_boxes(bboxes)
        labels = None if boxes is None else Labels(tuple(Obj(-1, tuple(float(v) for v in b)) for b in boxes))
        fg, region, _ = segment_plan(labels, (w, h), self.box_grow)
        if fg is not None:  # no boxes at all: all background
            self.stats["given"] += 1
            return fg
        box_list = None if boxes is None else [tuple(float(v) for v in b) for b in boxes]
        store = self.store
        facts = None
        if store is not None:
            facts = store.facts(image, box_list, self.store_settings("labels"))
            for source in ("labels", "segment"):
                facts = {**facts, "settings": self.store_settings(source)}
                found = store.get(image, box_list, facts["settings"], facts=facts)
                if found is not None:
                    self.stats["stored"] += 1
                    return found
        if self.on_miss == "error":
            raise InputError(
                "no mask for this image: pass mask=, or fill the mask store first with `backdrop masks SRC`"
                + ("" if store is None else f" (store: {store.folder})"))
        if self.on_miss == "skip" or (self.on_miss == "box" and box_list is None):
            self._warn_once(f"no stored mask for an image; on_miss={self.on_miss!r}: "
                            "left as it is (fill the store with `backdrop masks SRC`)")
            self.stats["skipped"] += 1
            return None
        if self.on_miss == "box":
            self._warn_once("no stored mask for an image; on_miss='box': whole boxes kept")
            self.stats["box"] += 1
            whole = np.zeros((h, w), bool)
            for b in box_list:
                whole |= box_mask(b, (w, h))
            return whole
        self._warn_once("no stored mask for an image: running the segmenter in the loader (slow; "
                        "precompute with `backdrop masks SRC`)")
        fg = self.segment(image, region, box_list)
        self.stats["segmented"] += 1
        if store is not None and facts is not None:  # facts: the "segment" settings' (the loop's last)
            from ..errors import BackdropError

            try:
                store.put(image, box_list, facts["settings"], fg, extra={"made_by": "transform"}, facts=facts)
            except (OSError, BackdropError) as exc:  # a full or read-only store must not stop training
                log.debug("mask store not written: %s", exc)
        return fg

    def segment(self, image: np.ndarray, region: Optional[np.ndarray], boxes: Optional[list]) -> np.ndarray:
        """The segmenter's mask by the labels-aware rule (the same steps as ``augment``)."""
        return segment_mask(self.pipeline, image, region, boxes, self.box_min_cover, self.box_grow, self.box_prompt)

    @property
    def pipeline(self) -> Any:
        if self._pipe is None:
            self._pipe = build_pipeline(self.segment_config)
        return self._pipe

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(message, RuntimeWarning, stacklevel=3)

    def apply(self, image: np.ndarray, fg: np.ndarray, seed: int) -> np.ndarray:
        """``image`` with a new background drawn with ``seed`` where ``fg`` is False."""
        from PIL import Image

        from ..types import GenerateRequest, Prompt

        gen = self.loaded_generator
        pil = Image.fromarray(image, "RGB")
        m8 = fg.view(np.uint8) * np.uint8(255)
        mask = Image.fromarray(m8, "L")
        background = pil
        if gen.uses_background:
            from ..pipeline import known_background

            if gen.reads_background:  # the clean background only for generators that read it
                background = self.inpainter(pil, mask)
            known = known_background(mask, self._inpaint_dilate)
        else:  # generators that draw their own: nothing inpainted, the known background is all outside
            known = Image.fromarray(255 - m8, "L")
        request = GenerateRequest(image=pil, mask=mask, background=background, known=known,
                                  prompt=Prompt(self.prompt, ""), seed=int(seed))
        new = gen(request)
        if new.size != pil.size:
            new = new.resize(pil.size, Image.Resampling.LANCZOS)
        out = np.array(new if new.mode == "RGB" else new.convert("RGB"))  # a writable copy
        # the composite with no feather (augment's default): the object's pixels exactly as they
        # were (OpenCV's masked copy: 0.03 ms at 640x480, numpy's masked assignment 2-6 ms)
        import cv2

        cv2.copyTo(image, m8, out)
        return out

    @property
    def loaded_generator(self) -> Any:
        if self._gen is None:
            from ..generate import GENERATORS
            from ..stages import adopt

            self._gen = adopt(GENERATORS.create(self.generator, self.generate_config), "generate")
            if self._gen.needs_set:  # swap: a set's donors; the image is outside it here
                from ..generate.donors import DonorStore

                self._gen.bind_set(DonorStore(self.donors), variants=1, base_seed=self.seed or 0)
            self._gen.load()  # the contract's load(): a no-op for weight-free generators
        return self._gen

    _inpaint_dilate = 7

    @property
    def inpainter(self) -> Any:
        if self._inpainter is None:
            from ..config import InpaintConfig
            from ..inpaint import INPAINTERS

            cfg = InpaintConfig()
            self._inpaint_dilate = cfg.dilate
            self._inpainter = INPAINTERS.create(cfg.backend, cfg)
        return self._inpainter


# -- helpers shared with `backdrop masks` ------------------------------------------------------------


def store_settings(source: str, segment_config: Any, box_grow: float, box_min_cover: float,
                   box_prompt: bool = True) -> dict[str, Any]:
    """What identifies a stored mask besides the pixels and boxes. ``labels``: the labels' own
    mask (polygons, RLE, a mask file); ``segment``: the segmenter's, by the labels-aware rule
    with these settings."""
    if source == "labels":
        return {"source": "labels", "rule": RULE}
    return {"source": "segment", "rule": RULE, "segment": asdict(segment_config),
            "box_grow": float(box_grow), "box_min_cover": float(box_min_cover), "box_prompt": bool(box_prompt)}


def build_pipeline(segment_config: Any) -> Any:
    """A pipeline for masks only: the given segmenter, a weight-free generator, no caption."""
    from ..config import GenerateConfig, PipelineConfig
    from ..pipeline import Pipeline

    return Pipeline.from_config(PipelineConfig(segment=segment_config, generate=GenerateConfig(backend="random")))


def segment_mask(pipe: Any, image: np.ndarray, region: Optional[np.ndarray], boxes: Optional[list],
                 min_cover: float, box_grow: float = 0.05, box_prompt: bool = True) -> np.ndarray:
    """The segmenter's mask (bool) as ``augment`` makes it: :func:`backdrop.segment.itemmask.item_mask`
    (each box segmented on its own with ``box_prompt``, else the whole frame kept inside the grown
    boxes), then, for a whole-frame mask, every box covered at least ``min_cover`` (else whole)."""
    from PIL import Image

    from ..datasets.labels import cover_boxes
    from ..segment.itemmask import item_mask

    pil = Image.fromarray(image, "RGB") if isinstance(image, np.ndarray) else image
    reg = None if region is None else Image.fromarray(np.where(region, 255, 0).astype(np.uint8), "L")
    seg = item_mask(pipe.segmenter, pipe.config.segment, pil, None, boxes=boxes or None, region=reg,
                    box_prompt=box_prompt, box_grow=box_grow)
    m = np.asarray(seg.mask) > 0
    if boxes and seg.objects is None:  # box-prompted masks hold their whole-box fallbacks already
        m = cover_boxes(m, boxes, min_cover)[2]
    return m


def check_image(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"image must be an H x W x 3 uint8 RGB array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def mask_foreground(mask: Any, hw: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3:  # H x W x C (several masks, or a colour mask): any channel
        m = (m != 0).any(axis=2)
    if m.shape != hw:
        raise InputError(f"mask is {'x'.join(map(str, m.shape))}, the image {hw[0]}x{hw[1]}: they must match")
    return m != 0


def check_boxes(bboxes: Any) -> np.ndarray:
    arr = np.asarray(bboxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] < 4:
        raise InputError(f"bboxes must be N x 4 pixel x0 y0 x1 y1, got shape {arr.shape}")
    return arr[:, :4]
