"""Stage 3, caption: clean background -> a sentence describing it."""

from __future__ import annotations

from ..registry import Registry
from ..stages import Captioner  # noqa: F401 - the stage's contract (backdrop.stages)

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
