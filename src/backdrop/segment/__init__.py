"""Stage 1, segment: image -> foreground mask (mode L, 255 = foreground)."""

from __future__ import annotations

from typing import Protocol

from PIL import Image

from ..registry import Registry


class Segmenter(Protocol):
    name: str

    def __call__(self, image: Image.Image) -> Image.Image: ...


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
