"""Weight-free generator: backgrounds drawn from a folder of images you give.

Each call picks one image by seed (in a data set run: by the request's slot, so the pictures are
spread over the set), crops a random window of the target's aspect ratio at a random
scale, flips it horizontally half the time, resizes it to the target size and (with
``variation`` > 0) jitters its colour and brightness. The same seed gives the same pixels.

>>> from backdrop.config import GenerateConfig
>>> PoolGenerator.availability(GenerateConfig())
'pool needs a folder of background images: pass --backgrounds DIR'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .. import runlog
from ..config import GenerateConfig
from ..errors import ConfigError, GenerationError
from ..types import GenerateRequest
from ._colour import jitter
from ..stages import Generator

log = logging.getLogger(__name__)

EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}
MAX_ZOOM = 1.6  # the crop is between 1/MAX_ZOOM and all of the largest window of the target's aspect


def pool_files(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, so a seed picks the same file everywhere)."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())


class PoolGenerator(Generator):
    """New backgrounds cropped, scaled and flipped from a folder of images (``config.backgrounds``)."""

    name = "pool"
    generative = False
    uses_prompt = False  # the pipeline skips caption and refine for it
    uses_background = False  # nor does it read the clean background: no inpainting needed

    def __init__(self, config: GenerateConfig):
        self.config = config
        reason = self.availability(config)
        if reason:
            raise ConfigError(reason)
        self.folder = Path(config.backgrounds).expanduser()
        self.files = pool_files(self.folder)
        if not self.files:
            raise ConfigError(
                f"pool folder {self.folder} holds no jpg/png/webp/tif/bmp images: pass --backgrounds DIR with some"
            )
        self._bad: set[Path] = set()

    @classmethod
    def availability(cls, config: GenerateConfig) -> str | None:
        if not config.backgrounds:
            return "pool needs a folder of background images: pass --backgrounds DIR"
        folder = Path(config.backgrounds).expanduser()
        if not folder.is_dir():
            return f"pool folder {folder} does not exist or is not a folder: pass --backgrounds DIR"
        return None

    def describe(self) -> dict[str, Any]:
        return {"model": "pool", "pool": str(self.folder), "variation": self.config.variation}

    def __call__(self, request: GenerateRequest) -> Image.Image:
        size = request.image.size
        rng = np.random.default_rng(request.seed)
        order = rng.permutation(len(self.files))
        if request.slot is not None:
            # a data set run numbers its (image, variant) pairs: slot s takes picture s of a fixed
            # shuffle of the pool (a new shuffle each time round), so no picture is used again
            # while unused ones remain
            cycle, pos = divmod(int(request.slot), len(self.files))
            first = np.random.default_rng([0x706F6F6C, cycle]).permutation(len(self.files))[pos]
            order = np.concatenate([[first], order[order != first]])
        for index in order:
            path = self.files[index]
            picture = self._load(path, size)
            if picture is None:
                continue
            runlog.note(f"pool.file.seed{request.seed}", str(path.relative_to(self.folder)))
            out = _crop_scale_flip(picture, size, rng)
            out = jitter(out, self.config.variation, rng)
            if request.progress is not None:
                request.progress(1, 1)
            return Image.fromarray(out, "RGB")
        raise GenerationError(f"pool folder {self.folder}: none of its {len(self.files)} images could be read")

    def _load(self, path: Path, size: tuple[int, int]) -> Image.Image | None:
        if path in self._bad:
            return None
        try:
            with Image.open(path) as im:
                # JPEG can decode at 1/2, 1/4, 1/8 scale: enough pixels for the largest crop, no more
                side = int(max(size) * MAX_ZOOM) + 1
                im.draft("RGB", (side, side))
                return ImageOps.exif_transpose(im).convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            self._bad.add(path)
            runlog.warn(f"pool: skipped unreadable image {path}: {exc}")
            return None


def _crop_scale_flip(picture: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    tw, th = size
    w, h = picture.size
    # the largest window of the target's aspect that fits, then zoomed in by a random factor
    fit = min(w / tw, h / th)
    zoom = rng.uniform(1.0, MAX_ZOOM)
    cw = min(w, max(1, round(tw * fit / zoom)))
    ch = min(h, max(1, round(th * fit / zoom)))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    crop = picture.resize((tw, th), Image.Resampling.LANCZOS, box=(x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop)
