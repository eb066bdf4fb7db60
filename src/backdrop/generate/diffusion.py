"""Stable Diffusion generators (diffusers): text-to-image, inpainting and img2img.

Three backends share one base class; each loads its pipeline once per instance (at the first
call, or eagerly with ``load()``) and reuses it for every image and variant:

- ``sd-txt2img`` (:class:`Txt2ImgGenerator`): a new scene from the prompt alone;
- ``sd-inpaint`` (:class:`InpaintGenerator`): the input image is the init image and the mask
  given to the pipeline is the *background* (the inverse of the foreground), so a new
  background is painted around the kept object;
- ``sd-img2img`` (:class:`Img2ImgGenerator`): the clean background moved towards the prompt
  by ``strength`` (0 keeps it, 1 ignores it).

Generation runs at the input's aspect ratio with the short side ``config.short_side`` (both
sides multiples of 8); the result is resized back to the input size (LANCZOS). One
``torch.Generator(device).manual_seed(request.seed)`` per call: the same seed gives the same
image on the same machine. On CUDA the weights are fp16 and attention is PyTorch's SDPA;
``offload`` enables model CPU offload and ``attention_slicing`` attention slicing. The safety
checker is not loaded (``safety_checker=None``): these are backgrounds for training data.

The Streamlit studio uses the same machinery for plain text-to-image::

    from backdrop.config import GenerateConfig
    from backdrop.types import Prompt
    from backdrop.generate.diffusion import load_txt2img

    gen = load_txt2img(GenerateConfig(model="/models/sd15", steps=25))   # loads once
    images = gen.generate(Prompt("a misty forest", "blurry"), seed=7, width=768, height=512,
                          num_images=2, progress=lambda step, total: ...)
    gen.describe()   # {"model": ..., "steps": 25, "sampler": "PNDMScheduler", "cfg_scale": 7.5, "size": "768x512"}

Image ``k`` (0-based) of ``generate`` uses seed ``seed + k``, so it equals a single-image call
with that seed. ``text_to_image(prompt, negative, config=..., seed=..., width=..., height=...)``
is a one-call shortcut that keeps the last loaded pipeline for the next call.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any, Callable, Optional

from PIL import Image

from .. import hf, runlog
from ..config import GenerateConfig
from ..devices import generator_device, pick_device, pick_dtype
from ..errors import ConfigError, GenerationError
from ..registry import has_module, require
from ..types import GenerateRequest, ProgressCallback, Prompt

log = logging.getLogger(__name__)

EXTRA = "diffusion"
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_INPAINT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"

# scheduler names accepted by GenerateConfig.scheduler -> diffusers class ("default": the model's own)
SCHEDULERS: dict[str, Optional[str]] = {
    "default": None,
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}

_NO_WEIGHTS_HINT = "or use --generator texture (no weights)"


def generation_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The input's aspect ratio with the short side ``short_side``, both sides multiples of 8.

    >>> generation_size(1000, 500, 512)
    (1024, 512)
    >>> generation_size(300, 400, 64)
    (64, 88)
    """
    if width <= 0 or height <= 0:
        raise ConfigError(f"image size must be positive, got {width}x{height}")
    short = max(8, short_side // 8 * 8)
    if width <= height:
        return short, max(8, round(short * height / width / 8) * 8)
    return max(8, round(short * width / height / 8) * 8), short


def _round8(value: int, what: str) -> int:
    if value < 64:
        raise ConfigError(f"{what}: expected at least 64 pixels, got {value}")
    return value // 8 * 8


def _dtype_keyword() -> str:
    """diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype``; use whichever it knows."""
    try:
        from diffusers.utils import deprecation_utils

        return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    except ImportError:
        return "torch_dtype"


class _DiffusionGenerator:
    """Shared base: loading, scheduler, device/dtype, seeding, progress, resizing back."""

    name = ""
    generative = True
    default_model = DEFAULT_MODEL
    pipeline_class = "StableDiffusionPipeline"

    def __init__(self, config: GenerateConfig):
        if config.scheduler not in SCHEDULERS:
            raise ConfigError(
                f"generate.scheduler: expected one of {', '.join(SCHEDULERS)}, got {config.scheduler!r}"
            )
        self.config = config
        self.model = hf.canonical(config.model or self.default_model)
        self._pipe: Any = None
        self._device: str | None = None
        self._sampler: str | None = SCHEDULERS[config.scheduler]
        self._size: str | None = None
        self._lock = threading.RLock()

    # -- availability and loading -----------------------------------------------------------
    @classmethod
    def availability(cls, config: GenerateConfig) -> str | None:
        """None when this backend can run here, else one line saying why not."""
        for module in ("torch", "diffusers", "transformers"):
            if not has_module(module):
                return f"needs the '{module}' package: pip install 'backdrop[{EXTRA}]'"
        if config.scheduler not in SCHEDULERS:
            return f"unknown scheduler {config.scheduler!r}; choose one of {', '.join(SCHEDULERS)}"
        if config.offload and not has_module("accelerate"):
            return f"offload needs the 'accelerate' package: pip install 'backdrop[{EXTRA}]'"
        try:
            pick_device(config.device)
        except ConfigError as exc:
            return str(exc)
        return hf.missing_reason(config.model or cls.default_model, "model_index.json")

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def load(self) -> Any:
        """Load the diffusers pipeline now (once); later calls return the same object."""
        with self._lock:
            if self._pipe is None:
                self._pipe = self._load()
            return self._pipe

    def _load(self) -> Any:
        require("torch", EXTRA, "Stable Diffusion")
        diffusers = require("diffusers", EXTRA, "Stable Diffusion")
        require("transformers", EXTRA, "Stable Diffusion")
        device = pick_device(self.config.device, EXTRA)
        dtype = pick_dtype(device, self.config.dtype, EXTRA)
        cls = getattr(diffusers, self.pipeline_class)
        pipe = hf.load_pretrained(
            cls.from_pretrained,
            self.model,
            "Stable Diffusion",
            _NO_WEIGHTS_HINT,
            index_file="model_index.json",
            **{_dtype_keyword(): dtype},
            safety_checker=None,
            requires_safety_checker=False,
        )
        log.info("safety checker disabled (safety_checker=None) for %s: outputs are not filtered", self.model)
        runlog.note("generate.safety_checker", "disabled")

        chosen = SCHEDULERS[self.config.scheduler]
        if chosen:
            pipe.scheduler = getattr(diffusers, chosen).from_config(pipe.scheduler.config)
        self._sampler = type(pipe.scheduler).__name__

        if self.config.offload and device == "cuda":
            require("accelerate", EXTRA, "model CPU offload")
            pipe.enable_model_cpu_offload()
        else:
            if self.config.offload:
                log.info("offload asked for but the device is %s: ignored (it only helps on CUDA)", device)
            pipe.to(device)
        if self.config.attention_slicing:
            pipe.enable_attention_slicing()
        pipe.set_progress_bar_config(disable=True)
        self._device = device
        log.info("loaded %s (%s) on %s as %s", self.model, self.pipeline_class, device, str(dtype).replace("torch.", ""))
        runlog.note("generate.device", device)
        return pipe

    def unload(self) -> None:
        """Drop the loaded pipeline (frees its memory); the next call loads it again."""
        with self._lock:
            self._pipe = None
            gc.collect()
            if self._device == "cuda" and has_module("torch"):
                import torch

                torch.cuda.empty_cache()

    # -- running ------------------------------------------------------------------------------
    def _generators(self, seeds: list[int]) -> list[Any]:
        import torch

        where = generator_device(self._device or "cpu")
        return [torch.Generator(where).manual_seed(int(s)) for s in seeds]

    @staticmethod
    def _callback(progress: ProgressCallback | None) -> Callable[..., dict] | None:
        if progress is None:
            return None

        def on_step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
            total = getattr(pipe, "num_timesteps", None) or 0
            progress(step + 1, max(total, step + 1))
            return callback_kwargs

        return on_step_end

    def _run(
        self,
        prompt: Prompt,
        seeds: list[int],
        progress: ProgressCallback | None,
        **inputs: Any,
    ) -> list[Image.Image]:
        pipe = self.load()
        with self._lock:
            try:
                out = pipe(
                    prompt=[prompt.positive] * len(seeds),
                    negative_prompt=[prompt.negative] * len(seeds) if prompt.negative else None,
                    num_inference_steps=self.config.steps,
                    guidance_scale=self.config.guidance,
                    generator=self._generators(seeds),
                    callback_on_step_end=self._callback(progress),
                    output_type="pil",
                    **inputs,
                )
            except (RuntimeError, ValueError) as exc:
                import torch

                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    raise GenerationError(
                        f"{self.name}: out of GPU memory at {self._size}; try --offload, attention slicing "
                        "or a smaller short side"
                    ) from exc
                raise GenerationError(f"{self.name} failed with {self.model}: {hf.one_line(exc)}") from exc
        return [im.convert("RGB") for im in out.images]

    def _inputs(self, request: GenerateRequest, width: int, height: int) -> dict[str, Any]:
        raise NotImplementedError

    def __call__(self, request: GenerateRequest) -> Image.Image:
        """One new background for ``request``, RGB at ``request.image.size``."""
        width, height = generation_size(*request.image.size, self.config.short_side)
        self._size = f"{width}x{height}"
        inputs = self._inputs(request, width, height)
        if inputs is None:  # nothing to do (img2img with strength 0)
            return request.background.convert("RGB").resize(request.image.size, Image.LANCZOS)
        image = self._run(request.prompt, [request.seed], request.progress, **inputs)[0]
        if image.size != request.image.size:
            image = image.resize(request.image.size, Image.LANCZOS)
        return image

    def describe(self) -> dict[str, Any]:
        """What goes into the image metadata: model, steps, sampler, CFG scale, generation size."""
        return {
            "model": self.model,
            "steps": self.config.steps,
            # the loaded pipeline's scheduler, in case a caller (the studio) swapped it since loading
            "sampler": type(self._pipe.scheduler).__name__ if self._pipe is not None else (self._sampler or "default"),
            "cfg_scale": self.config.guidance,
            "size": self._size,
        }


class Txt2ImgGenerator(_DiffusionGenerator):
    """``sd-txt2img``: a new background from the prompt alone (the input only sets the aspect).

    >>> gen = Txt2ImgGenerator(GenerateConfig(backend="sd-txt2img", steps=20))  # doctest: +SKIP
    >>> background = gen(request)                                                # doctest: +SKIP
    """

    name = "sd-txt2img"

    def _inputs(self, request: GenerateRequest, width: int, height: int) -> dict[str, Any]:
        return {"width": width, "height": height}

    def generate(
        self,
        prompt: Prompt | str,
        seed: int,
        width: int,
        height: int,
        num_images: int = 1,
        progress: ProgressCallback | None = None,
    ) -> list[Image.Image]:
        """Plain text-to-image for the studio: ``num_images`` images, image k with seed ``seed + k``.

        ``width`` and ``height`` are rounded down to multiples of 8 (at least 64 each).
        """
        if isinstance(prompt, str):
            prompt = Prompt(prompt)
        if num_images < 1:
            raise ConfigError(f"num_images: expected at least 1, got {num_images}")
        width, height = _round8(int(width), "width"), _round8(int(height), "height")
        self._size = f"{width}x{height}"
        seeds = [int(seed) + k for k in range(num_images)]
        return self._run(prompt, seeds, progress, width=width, height=height)


class InpaintGenerator(_DiffusionGenerator):
    """``sd-inpaint``: the background (inverse of the mask) repainted around the kept object."""

    name = "sd-inpaint"
    default_model = DEFAULT_INPAINT_MODEL
    pipeline_class = "StableDiffusionInpaintPipeline"

    def _inputs(self, request: GenerateRequest, width: int, height: int) -> dict[str, Any]:
        from PIL import ImageOps

        init = request.image.convert("RGB").resize((width, height), Image.LANCZOS)
        # white = repaint: everything that is not foreground
        repaint = ImageOps.invert(request.mask.convert("L")).resize((width, height), Image.BILINEAR)
        return {"image": init, "mask_image": repaint, "width": width, "height": height}


class Img2ImgGenerator(_DiffusionGenerator):
    """``sd-img2img``: the clean background moved towards the prompt by ``config.strength``."""

    name = "sd-img2img"
    pipeline_class = "StableDiffusionImg2ImgPipeline"

    def _inputs(self, request: GenerateRequest, width: int, height: int) -> dict[str, Any] | None:
        if int(self.config.steps * self.config.strength) < 1:
            runlog.warn(
                f"sd-img2img: strength {self.config.strength} with {self.config.steps} steps leaves no "
                "denoising step; the clean background is used unchanged"
            )
            return None
        init = request.background.convert("RGB").resize((width, height), Image.LANCZOS)
        return {"image": init, "strength": self.config.strength}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "strength": self.config.strength}


# -- the studio's entry points ------------------------------------------------------------------


def load_txt2img(config: GenerateConfig) -> Txt2ImgGenerator:
    """A loaded text-to-image generator for ``config`` (model, steps, scheduler, device, ...)."""
    gen = Txt2ImgGenerator(config)
    gen.load()
    return gen


_last: dict[str, Any] = {}  # text_to_image keeps one loaded generator, keyed by its config


def text_to_image(
    prompt: str,
    negative: str = "",
    *,
    config: GenerateConfig,
    seed: int,
    width: int,
    height: int,
    progress: ProgressCallback | None = None,
) -> Image.Image:
    """One text-to-image picture; the pipeline stays loaded for the next call with the same config.

    >>> text_to_image("a misty forest", "blurry", config=GenerateConfig(steps=20),
    ...               seed=1, width=512, height=512)  # doctest: +SKIP
    """
    if _last.get("config") != config:
        _last.clear()
        _last["generator"] = load_txt2img(config)
        _last["config"] = config
    return _last["generator"].generate(Prompt(prompt, negative), seed, width, height, 1, progress)[0]
