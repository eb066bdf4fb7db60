"""Stage 3, caption: clean background -> a sentence describing it."""

from __future__ import annotations

from typing import Protocol

from PIL import Image

from ..registry import Registry


class Captioner(Protocol):
    name: str

    def __call__(self, image: Image.Image) -> str: ...


CAPTIONERS = Registry(
    "caption",
    {
        "describe": ".caption.describe:DescribeCaptioner",
        "git": ".caption.git:GitCaptioner",
    },
    {
        "describe": "no weights: colours by name, brightness, contrast, texture",
        "git": "Microsoft GIT (or BLIP) image captioning through transformers",
    },
)
