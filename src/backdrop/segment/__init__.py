"""Stage 1, segment: image -> foreground mask (mode L, 255 = foreground)."""

from __future__ import annotations

from ..registry import Registry
from ..stages import Segmenter  # noqa: F401 - the stage's contract (backdrop.stages)

SEGMENTERS = Registry(
    "segment",
    {
        "classical": ".segment.classical:ClassicalSegmenter",
        "rembg": ".segment.rembg:RembgSegmenter",
    },
    {
        "classical": "no weights: border background model, colour/texture distance, Otsu, GrabCut",
        "rembg": "rembg sessions (ISNet, U2-Net, BiRefNet, ...) on onnxruntime",
    },
)
