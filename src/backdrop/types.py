"""Values that travel between stages (see shared/DESIGN.md, "The flow").

Images are ``PIL.Image`` in mode RGB; masks are mode ``L`` of the same size, 255 = foreground.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from PIL import Image

# called as progress(step, total) by long-running backends (diffusion steps, texture rows)
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class Prompt:
    """A positive and a negative prompt.

    >>> Prompt("a sandy beach", "blurry").positive
    'a sandy beach'
    """

    positive: str
    negative: str = ""


@dataclass(frozen=True)
class GenerateRequest:
    """Everything a generator may use to make one new background.

    ``image`` is the original input, ``mask`` its foreground (255), ``background`` the clean,
    inpainted background. ``known`` is 255 where the background pixels are real (not inpainted):
    generators that copy pixels sample only there. The result must be RGB at ``image.size``.
    """

    image: Image.Image
    mask: Image.Image
    background: Image.Image
    known: Image.Image
    prompt: Prompt
    seed: int
    progress: Optional[ProgressCallback] = None
    # a data set run's running number of this (image, variant): generators that draw from a
    # finite pool use it to spread their picks (no pick again while unused ones remain)
    slot: Optional[int] = None
    # the image's identity in its set (its path relative to the set's root): generators that draw
    # from the set itself (swap) use it to find the image's class and never pick the image itself
    item: Optional[str] = None


@dataclass(frozen=True)
class Variant:
    index: int  # 1-based
    seed: int
    background: Image.Image
    composite: Image.Image


@dataclass
class Result:
    """What one run of the pipeline on one image made."""

    image: Image.Image  # the input, upright RGB
    mask: Image.Image
    background: Image.Image  # the clean (inpainted) background
    caption: str
    prompt: Prompt
    variants: list[Variant]
    timings: dict[str, float]  # seconds per stage
    config: Any  # the PipelineConfig that made it
    backends: dict[str, dict[str, Any]]  # stage -> {"name": ..., plus what the backend reports}
    warnings: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)  # what backends recorded (fallbacks, providers)
    source: dict[str, Any] = field(default_factory=dict)  # input file facts (path, size, mode, ...)
    base_seed: int = 0
