"""Stage 5, generate: GenerateRequest -> one new background (RGB, the input's size).

A generator subclasses :class:`backdrop.stages.Generator`, whose table lists what it declares
(generative, uses_prompt, uses_background, batched, ...), and is registered here by name.
``needs_set`` (swap) generators draw from the set's other images: the engine builds the donor store
in a first pass and calls ``bind_set(store, variants=, base_seed=)``.

Besides the names below, a *mix* of them is a generator: ``swap+random`` (equal shares) or
``swap:0.7,random:0.3``; each variant's part is drawn from its seed (:mod:`.mix`).
"""

from __future__ import annotations

from ..registry import Registry
from ..stages import Generator  # noqa: F401 - the stage's contract (backdrop.stages)


class _GeneratorRegistry(Registry):
    """The generators' registry: a mix of registered names (``swap+random``) is a name too."""

    def check_name(self, name: str) -> None:
        from .mix import parse_mix

        spec = parse_mix(name)
        for part in ([name] if spec is None else [n for n, _ in spec]):
            super().check_name(part)

    def load(self, name: str) -> type:
        from .mix import mix_class, parse_mix

        spec = parse_mix(name)
        if spec is None:
            return super().load(name)
        self.check_name(name)
        return mix_class(spec, [super(_GeneratorRegistry, self).load(n) for n, _ in spec], self)

    def single_image_names(self) -> list[str]:
        """The generators that work on one image alone: not those drawing from a set (swap), which
        need a batch (``backdrop augment`` / ``run`` over several images)."""
        return [n for n in self.names() if not self.capability(n, "needs_set")]


# ``backdrop augment``'s and ``backdrop.augment()``'s generator when none is named (and no pool folder
# or SD model is given): chosen by benchmarks/augmentation_value.py (README, "Which generator to use")
AUGMENT_DEFAULT = "swap"

GENERATORS = _GeneratorRegistry(
    "generate",
    {
        "texture": ".generate.texture:TextureGenerator",
        "random": ".generate.random:RandomGenerator",
        "pool": ".generate.pool:PoolGenerator",
        "swap": ".generate.swap:SwapGenerator",
        "sd-txt2img": ".generate.diffusion:Txt2ImgGenerator",
        "sd-inpaint": ".generate.diffusion:InpaintGenerator",
        "sd-img2img": ".generate.diffusion:Img2ImgGenerator",
    },
    {
        "texture": "no weights: patch-based texture synthesis from the real background pixels",
        "random": "no weights: seeded procedural backgrounds (domain randomisation), new colours and textures",
        "pool": "no weights: backgrounds drawn from a folder you give (crop, scale, flip)",
        "swap": "no weights: the clean background of another image of the set, of another class first (augment, run)",
        "sd-txt2img": "Stable Diffusion text-to-image (diffusers)",
        "sd-inpaint": "Stable Diffusion inpainting around the kept object (diffusers)",
        "sd-img2img": "Stable Diffusion img2img on the clean background (diffusers)",
    },
)
