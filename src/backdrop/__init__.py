"""backdrop: new, realistic backgrounds for images, and a local text-to-image studio.

>>> from backdrop import Pipeline, PipelineConfig
>>> pipe = Pipeline.from_config(PipelineConfig())      # doctest: +SKIP
>>> result = pipe("examples/micrograph.png")           # doctest: +SKIP
>>> result.variants[0].composite.save("new.png")       # doctest: +SKIP
"""

from __future__ import annotations

from .version import __version__
from .config import (
    CaptionConfig,
    CompositeConfig,
    GenerateConfig,
    InpaintConfig,
    PipelineConfig,
    RefineConfig,
    SegmentConfig,
)
from .engine import augment
from .errors import BackdropError
from .items import Pipeline
from .types import Prompt, Result, Variant

__all__ = [
    "BackdropError",
    "CaptionConfig",
    "CompositeConfig",
    "GenerateConfig",
    "InpaintConfig",
    "Pipeline",
    "PipelineConfig",
    "Prompt",
    "RefineConfig",
    "Result",
    "SegmentConfig",
    "Variant",
    "__version__",
    "augment",
]
