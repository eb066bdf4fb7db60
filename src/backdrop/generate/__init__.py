"""Stage 5, generate: GenerateRequest -> one new background (RGB, the input's size).

A generator class also says how its output is to be labelled:

- ``generative``: True when a trained model made the pixels (IPTC source types differ);
- ``describe() -> dict``: what goes into the image metadata (Steps, Sampler, CFG scale, Model);
- ``uses_prompt``: False when the generator ignores the prompt (the pipeline may skip caption/refine).
"""

from __future__ import annotations

from typing import Any, Protocol

from PIL import Image

from ..registry import Registry
from ..types import GenerateRequest


class Generator(Protocol):
    name: str
    generative: bool

    def __call__(self, request: GenerateRequest) -> Image.Image: ...

    def describe(self) -> dict[str, Any]: ...


GENERATORS = Registry(
    "generate",
    {
        "texture": ".generate.texture:TextureGenerator",
        "random": ".generate.random:RandomGenerator",
        "pool": ".generate.pool:PoolGenerator",
        "sd-txt2img": ".generate.diffusion:Txt2ImgGenerator",
        "sd-inpaint": ".generate.diffusion:InpaintGenerator",
        "sd-img2img": ".generate.diffusion:Img2ImgGenerator",
    },
    {
        "texture": "no weights: patch-based texture synthesis from the real background pixels",
        "random": "no weights: seeded procedural backgrounds (domain randomisation), new colours and textures",
        "pool": "no weights: backgrounds drawn from a folder you give (crop, scale, flip)",
        "sd-txt2img": "Stable Diffusion text-to-image (diffusers)",
        "sd-inpaint": "Stable Diffusion inpainting around the kept object (diffusers)",
        "sd-img2img": "Stable Diffusion img2img on the clean background (diffusers)",
    },
)
