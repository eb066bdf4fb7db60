"""Stage 5, generate: GenerateRequest -> one new background (RGB, the input's size).

A generator subclasses :class:`backdrop.stages.Generator`, whose table lists what it declares
(generative, uses_prompt, uses_background, batched, ...), and is registered here by name.
"""

from __future__ import annotations

from ..registry import Registry
from ..stages import Generator  # noqa: F401 - the stage's contract (backdrop.stages)

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
