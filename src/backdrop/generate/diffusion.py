"""Diffusion generators (diffusers): text-to-image, inpainting and img2img, for any SD-family model.

Three backends share one base class; each loads its pipeline once per instance (at the first
call, or eagerly with ``load()``) and reuses it for every image and variant:

- ``sd-txt2img`` (:class:`Txt2ImgGenerator`): a new scene from the prompt alone;
- ``sd-inpaint`` (:class:`InpaintGenerator`): the input image is the init image and the mask
  given to the pipeline is the *background* (the inverse of the foreground), so a new
  background is painted around the kept object;
- ``sd-img2img`` (:class:`Img2ImgGenerator`): the clean background moved towards the prompt
  by ``strength`` (0 keeps it, 1 ignores it).

**Any diffusers model.** Pipelines come from diffusers' AutoPipeline classes, so an SD 1.5,
SD 2.x, SDXL, SD-Turbo / SDXL-Turbo or LCM-distilled model (Hub id, local folder or store name)
loads in the pipeline class that fits its ``model_index.json``. A **model profile**
(:data:`PROFILES`) read from the loaded model (SDXL: a second text encoder / ``text_time``
embedding; LCM: an LCM scheduler or a guidance-embedding UNet; Turbo: trailing timesteps or the
name) gives the defaults for what the user left unset: steps, guidance, sampler, native size.

**LoRA** (``config.lora``: ``PATH_OR_ID[:SCALE]``, a ``.safetensors`` file, a folder, a Hub id or
a store name) are loaded through diffusers/peft and fused into the weights (no per-step cost).
An LCM-LoRA (by name, or by "lcm" in its safetensors metadata) switches to the LCM sampler, few
steps and no CFG; ``lcm`` names the family's own LCM-LoRA from the store. **Tiny VAE**
(``config.tiny_vae``): AutoencoderTiny (TAESD / TAESDXL; ``auto`` picks the family's) decodes
latents about 14x cheaper than the full VAE. ``vae_tiling`` decodes large images in tiles.

**Batches.** ``generate_batch(requests)`` makes the variants of one image in as few pipeline
calls as ``max_batch()`` allows: the prompt is encoded once per call and each variant keeps its
own ``torch.Generator``, so variant k is the image a single call with its seed makes (the same
up to floating-point noise of a batched matrix product; the tests bound it).

Generation runs at the input's aspect ratio with the short side ``config.short_side`` (default:
the profile's native size; both sides multiples of 8); the result is resized back to the input
size (LANCZOS). On CUDA the weights are fp16, attention is PyTorch's SDPA, the UNet is
channels-last (and ``torch.compile``-d with ``compile``); ``offload`` enables model or
sequential CPU offload. The safety checker is not loaded: these are backgrounds for training data.

The Streamlit studio uses the same machinery for plain text-to-image::

    from backdrop.config import GenerateConfig
    from backdrop.types import Prompt
    from backdrop.generate.diffusion import load_txt2img

    gen = load_txt2img(GenerateConfig(model="/models/sd15", lora=("lcm",), tiny_vae="auto"))
    images = gen.generate(Prompt("a misty forest", "blurry"), seed=7, width=768, height=512,
                          num_images=2, progress=lambda step, total: ...)
    gen.describe()   # {"model": ..., "profile": "sd15+lcm-lora", "steps": 4, "sampler": "LCM", ...}

Image ``k`` (0-based) of ``generate`` uses seed ``seed + k``, so it equals a single-image call
with that seed.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from PIL import Image

from .. import hf, runlog
from ..config import GenerateConfig
from ..devices import generator_device, pick_device, pick_dtype, torch_threads
from ..errors import ConfigError, GenerationError, ModelCorruptError
from ..registry import has_module, require
from ..types import GenerateRequest, ProgressCallback, Prompt
from ..stages import Generator
from .sd_setup import (  # noqa: F401 - re-exported: the setup of a pipeline lives there
    LORA_FILE,
    PROFILES,
    SCHEDULERS,
    LoadPlan,
    LoadedLora,
    LoraSpec,
    ModelProfile,
    a1111_lora_hash,
    auto_batch,
    detect_profile,
    dtype_keyword,
    generation_size,
    guess_profile,
    is_lcm_lora,
    load_plan,
    lora_missing,
    lora_name,
    resolve_lora,
    round8,
    safetensors_metadata,
)

log = logging.getLogger(__name__)

EXTRA = "diffusion"
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_INPAINT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"

# diffusers scheduler class -> the sampler name AUTOMATIC1111 writes (where it has one)
A1111_SAMPLERS = {
    "PNDMScheduler": "PLMS",
    "DDIMScheduler": "DDIM",
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DPMSolverMultistepScheduler": "DPM++ 2M",
    "DPMSolverSinglestepScheduler": "DPM++ SDE",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "KDPM2DiscreteScheduler": "DPM2",
    "KDPM2AncestralDiscreteScheduler": "DPM2 a",
    "UniPCMultistepScheduler": "UniPC",
    "LCMScheduler": "LCM",
}

_NO_WEIGHTS_HINT = "or use --generator texture (no weights)"


# -- the generators ----------------------------------------------------------------------------------


class _DiffusionGenerator(Generator):
    """Shared base: loading, profile, LoRA, tiny VAE, scheduler, device/dtype, seeding, batching."""

    name = ""
    generative = True
    uses_prompt = True  # the pipeline needs caption + refine (or --prompt) for this generator
    batched = True  # generate_batch: several seeds per pipeline call
    uses_gpu = True  # worth a GPU per worker where there is one
    default_model = DEFAULT_MODEL
    auto_class = "AutoPipelineForText2Image"
    task = "text-to-image"

    def __init__(self, config: GenerateConfig):
        if config.scheduler not in SCHEDULERS:
            raise ConfigError(
                f"generate.scheduler: expected one of {', '.join(SCHEDULERS)}, got {config.scheduler!r}"
            )
        self.loras = [LoraSpec.parse(text) for text in config.lora]  # ConfigError on a bad spec, now
        self.config = config
        self.model = hf.canonical(config.model or self.default_model)
        self._pipe: Any = None
        self._device: str | None = None
        self.profile: ModelProfile = PROFILES[config.profile] if config.profile != "auto" else guess_profile(self.model)
        self._loaded_loras: list[LoadedLora] = []
        self._tiny_vae: Optional[str] = None
        self._plan: Optional[LoadPlan] = None
        self._size: str | None = None
        self._batch: Optional[int] = None
        self._ov: Any = None  # the OpenVINO runtime (ov_runtime.OVRuntime) when runtime "openvino" is in use
        self._lock = threading.RLock()

    # -- effective settings: the user's where given, else the profile's ---------------------------
    @property
    def steps(self) -> int:
        return self.config.steps if self.config.steps is not None else self.profile.steps

    @property
    def guidance(self) -> float:
        return self.config.guidance if self.config.guidance is not None else self.profile.guidance

    @property
    def short_side(self) -> int:
        return self.config.short_side if self.config.short_side is not None else self.profile.size

    @property
    def scheduler_name(self) -> str:
        return self.config.scheduler if self.config.scheduler != "default" else self.profile.scheduler

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
        if config.lora and not has_module("peft"):
            return f"LoRA needs the 'peft' package: pip install 'backdrop[{EXTRA}]'"
        if config.runtime == "openvino" and not has_module("openvino"):
            return "runtime openvino needs the 'openvino' package: pip install 'backdrop[openvino]'"
        try:
            pick_device(config.device)
            specs = [LoraSpec.parse(text) for text in config.lora]
        except ConfigError as exc:
            return str(exc)
        model = config.model or cls.default_model
        reason = hf.missing_reason(model, "model_index.json")
        if reason:
            return reason
        # what the name says of the family (the loaded model's config decides at load time)
        profile = PROFILES[config.profile] if config.profile != "auto" else guess_profile(hf.canonical(model))
        for spec in specs:
            source = profile.lcm_lora if spec.source == "lcm" else spec.source
            if source and (reason := lora_missing(source)):
                return reason
        if config.tiny_vae:
            source = profile.tiny_vae if config.tiny_vae == "auto" else config.tiny_vae
            if reason := hf.missing_reason(source, "config.json"):
                return f"tiny VAE: {reason}"
        return None

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def load(self) -> Any:
        """Load the diffusers pipeline now (once); later calls return the same object."""
        with self._lock:
            if self._pipe is None:
                self._pipe = self._load()
            return self._pipe

    def _component_kwargs(self) -> dict[str, Any]:
        """Keywords only for pipelines that have those components (SDXL has no safety checker)."""
        name = hf.resolve(self.model, "model_index.json")
        index = Path(name) / "model_index.json" if hf.looks_local(name) else hf.cached_file(name, "model_index.json")
        try:
            components = json.loads(Path(index).read_text(encoding="utf-8")) if index else None
        except (OSError, ValueError):
            components = None  # from_pretrained reports a broken folder in its own words
        if isinstance(components, dict) and "safety_checker" not in components:
            return {}
        return {"safety_checker": None, "requires_safety_checker": False}

    def _load(self) -> Any:
        require("torch", EXTRA, "Stable Diffusion")
        diffusers = require("diffusers", EXTRA, "Stable Diffusion")
        require("transformers", EXTRA, "Stable Diffusion")
        device = pick_device(self.config.device, EXTRA)
        dtype = pick_dtype(device, self.config.dtype, EXTRA)
        if device == "cpu":
            torch_threads(self.config.threads)
        plan = load_plan(self.config, device, str(dtype).replace("torch.", ""))
        if self.config.runtime == "openvino" and device == "cpu":  # before minutes of loading, not after
            require("openvino", "openvino", "--runtime openvino")
        cls = getattr(diffusers, self.auto_class)
        pipe = hf.load_pretrained(
            cls.from_pretrained,
            self.model,
            "Stable Diffusion",
            _NO_WEIGHTS_HINT,
            index_file="model_index.json",
            **{dtype_keyword(): dtype},
            **self._component_kwargs(),
        )
        if getattr(pipe, "safety_checker", None) is None and hasattr(pipe, "safety_checker"):
            log.info("safety checker disabled (safety_checker=None) for %s: outputs are not filtered", self.model)
            runlog.note("generate.safety_checker", "disabled")

        if self.config.profile == "auto":
            self.profile = detect_profile(pipe, self.model)
        self._load_loras(pipe)
        self._set_scheduler(pipe, diffusers)
        self._set_tiny_vae(pipe, diffusers, dtype)
        self._ov = self._openvino(pipe, device) if self.config.runtime == "openvino" else None
        self._place(pipe, plan)
        pipe.set_progress_bar_config(disable=True)
        self._device, self._plan = device, plan
        log.info("loaded %s (%s, profile %s) on %s as %s%s", self.model, type(pipe).__name__, self.profile.name,
                 device, plan.dtype, f", UNet and VAE decoder in OpenVINO ({self._ov.precision})" if self._ov else "")
        runlog.note("generate.device", device)
        return pipe

    def _openvino(self, pipe: Any, device: str) -> Any:
        """Swap the UNet and VAE decoder for OpenVINO models (after LoRAs and tiny VAE); None off the CPU."""
        if device != "cpu":
            # OpenVINO's gain is on the CPU; on a GPU torch fp16 is the fast path: keep it, say so once
            log.warning("runtime openvino runs on the CPU only; the device is %s, so torch runs the UNet", device)
            runlog.note("generate.runtime", f"torch (openvino is CPU-only; device {device})")
            return None
        from . import ov_runtime

        identity = ov_runtime.source_identity(self.model, "model_index.json", ("model_index.json", "unet", "vae"))
        parts = {
            "model": identity,
            "lora": [[lo.hash, lo.scale] for lo in self._loaded_loras],
            "tiny_vae": ov_runtime.source_identity(self._tiny_vae, "config.json") if self._tiny_vae else None,
            "dtype": str(pipe.unet.dtype),
        }
        import torch

        # the threads of the torch UNet it replaces (--threads / BACKDROP_THREADS, else torch's own choice);
        # tiled decoding calls the decoder at many tile shapes: that stays in torch
        rt = ov_runtime.OVRuntime(pipe, parts, precision=self.config.openvino_precision,
                                  threads=torch.get_num_threads(), decoder=not self.config.vae_tiling)
        runlog.note("generate.runtime", "openvino")
        return rt

    def _load_loras(self, pipe: Any) -> None:
        specs = []
        for spec in self.loras:
            if spec.source == "lcm":  # the family's LCM-LoRA
                if self.profile.lcm_lora is None:
                    log.info("lora 'lcm': %s samples in few steps already; no LCM-LoRA loaded", self.profile.name)
                    continue
                spec = LoraSpec(self.profile.lcm_lora, spec.scale)
            specs.append(spec)
        if not specs:
            return
        require("peft", EXTRA, "LoRA")
        names, scales, loaded = [], [], []
        for i, spec in enumerate(specs):
            file = resolve_lora(spec.source)
            meta = safetensors_metadata(file)
            lora = LoadedLora(source=spec.source, file=str(file), name=lora_name(spec.source, file),
                              scale=spec.scale, hash=a1111_lora_hash(file), lcm=is_lcm_lora(spec.source, file, meta))
            adapter = f"lora{i}"
            try:
                pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=adapter)
            except (ValueError, KeyError, RuntimeError, OSError) as exc:
                raise ModelCorruptError(
                    f"LoRA {spec.source} does not fit {self.model} ({self.profile.family}): {hf.one_line(exc, 160)}"
                ) from exc
            names.append(adapter)
            scales.append(spec.scale)
            loaded.append(lora)
        pipe.set_adapters(names, adapter_weights=scales)
        # fused: the LoRA costs nothing per step (the adapters' extra matmuls are gone)
        pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        pipe.unload_lora_weights()
        self._loaded_loras = loaded
        if any(lora.lcm for lora in loaded):
            self.profile = self.profile.with_lcm_lora()
        log.info("LoRA fused: %s", ", ".join(lora.tag() for lora in loaded))

    def _set_scheduler(self, pipe: Any, diffusers: Any) -> None:
        chosen = SCHEDULERS[self.scheduler_name]
        if chosen and type(pipe.scheduler).__name__ != chosen:
            pipe.scheduler = getattr(diffusers, chosen).from_config(pipe.scheduler.config)

    def _set_tiny_vae(self, pipe: Any, diffusers: Any, dtype: Any) -> None:
        choice = self.config.tiny_vae
        if not choice:
            return
        source = self.profile.tiny_vae if choice == "auto" else choice
        tiny = hf.load_pretrained(diffusers.AutoencoderTiny.from_pretrained, source, "tiny VAE",
                                  "or leave --tiny-vae out (the full VAE)", **{dtype_keyword(): dtype})
        want = getattr(pipe.vae.config, "latent_channels", None)
        got = getattr(tiny.config, "latent_channels", None)
        if want is not None and got is not None and want != got:
            raise ConfigError(f"tiny VAE {source} makes {got}-channel latents, {self.model} {want}: "
                              f"use the one for its family ({self.profile.tiny_vae})")
        pipe.register_modules(vae=tiny)  # sets pipe.vae and its entry in the pipeline's config
        self._tiny_vae = source

    def _place(self, pipe: Any, plan: LoadPlan) -> None:
        import torch

        if plan.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        if plan.offload == "sequential":
            require("accelerate", EXTRA, "sequential CPU offload")
            pipe.enable_sequential_cpu_offload()
        elif plan.offload == "model":
            require("accelerate", EXTRA, "model CPU offload")
            pipe.enable_model_cpu_offload()
        else:
            pipe.to(plan.device)
        if plan.compile:
            pipe.unet = torch.compile(pipe.unet, mode="reduce-overhead", fullgraph=True)
        vae = pipe.vae
        if plan.vae_slicing and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        if plan.vae_tiling and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
        if plan.attention_slicing:
            pipe.enable_attention_slicing()

    def unload(self) -> None:
        """Drop the loaded pipeline (frees its memory); the next call loads it again."""
        with self._lock:
            self._pipe = None
            self._ov = None
            gc.collect()
            if self._device == "cuda" and has_module("torch"):
                import torch

                torch.cuda.empty_cache()

    # -- running ------------------------------------------------------------------------------
    def max_batch(self, width: int = 512, height: int = 512) -> int:
        """Variants per pipeline call: ``config.batch_size``, or :func:`auto_batch` for the device."""
        if self.config.batch_size > 0:
            return self.config.batch_size
        device = self._device or pick_device(self.config.device, EXTRA)
        free = None
        if device == "cuda":
            import torch

            free = torch.cuda.mem_get_info()[0]
        return auto_batch(device, width, height, cfg=self.guidance > 1, free_bytes=free, family=self.profile.family)

    @property
    def batch_size(self) -> int:
        """Variants per call at SD's 512x512 (``generate_batch`` splits longer lists itself)."""
        return self.max_batch()

    def _generators(self, seeds: list[int]) -> list[Any]:
        import torch

        where = generator_device(self._device or "cpu")
        return [torch.Generator(where).manual_seed(int(s)) for s in seeds]

    @staticmethod
    def _callback(progress: ProgressCallback | None, done: int = 0, calls: int = 1) -> Callable[..., dict] | None:
        if progress is None:
            return None

        def on_step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
            total = max(getattr(pipe, "num_timesteps", None) or 0, step + 1)
            progress(done * total + step + 1, total * calls)
            return callback_kwargs

        return on_step_end

    def _call_kwargs(self, pipe: Any, wanted: dict[str, Any]) -> dict[str, Any]:
        """Only what this pipeline class takes (LCM pipelines have no negative prompt)."""
        import inspect

        params = inspect.signature(pipe.__call__).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return wanted
        return {k: v for k, v in wanted.items() if k in params}

    def _run(
        self,
        prompt: Prompt,
        seeds: list[int],
        progress: ProgressCallback | None,
        done: int = 0,
        calls: int = 1,
        **inputs: Any,
    ) -> list[Image.Image]:
        pipe = self.load()
        with self._lock:
            kwargs = self._call_kwargs(pipe, dict(
                prompt=prompt.positive,
                negative_prompt=prompt.negative or None,
                # one prompt, encoded once, repeated for every variant of the call
                num_images_per_prompt=len(seeds),
                num_inference_steps=self.steps,
                guidance_scale=self.guidance,
                generator=self._generators(seeds),
                callback_on_step_end=self._callback(progress, done, calls),
                output_type="pil",
                **inputs,
            ))
            try:
                out = pipe(**kwargs)
            except (RuntimeError, ValueError) as exc:
                import torch

                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    raise GenerationError(
                        f"{self.name}: out of GPU memory at {self._size} with {len(seeds)} image(s) per call; "
                        "try --batch-size 1, --offload, or a smaller short side"
                    ) from exc
                raise GenerationError(f"{self.name} failed with {self.model}: {hf.one_line(exc)}") from exc
        return [im.convert("RGB") for im in out.images]

    def _inputs(self, request: GenerateRequest, width: int, height: int) -> dict[str, Any]:
        raise NotImplementedError

    def _skip(self, request: GenerateRequest) -> bool:
        """True when there is nothing to denoise (img2img at strength 0): no model is loaded."""
        return False

    def _kept(self, request: GenerateRequest) -> Image.Image:
        return request.background.convert("RGB").resize(request.image.size, Image.LANCZOS)

    def __call__(self, request: GenerateRequest) -> Image.Image:
        """One new background for ``request``, RGB at ``request.image.size``."""
        return self.generate_batch([request])[0]

    def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[Image.Image]:
        """The variants of one image (same image, mask and prompt; one seed each), in order.

        Runs ``ceil(len / max_batch())`` pipeline calls, each with one ``torch.Generator`` per
        variant and the prompt encoded once. Requests that differ in image or prompt are made
        in separate calls. Each result is RGB at its request's image size.
        """
        requests = list(requests)
        if not requests:
            return []
        first = requests[0]
        if self._skip(first):
            return [self._kept(r) for r in requests]
        same = [r for r in requests if r.prompt == first.prompt and _same_image(r.image, first.image)
                and _same_image(r.mask, first.mask) and _same_image(r.background, first.background)]
        if len(same) != len(requests):  # not one image's variants: each group on its own
            return [self.generate_batch([r])[0] for r in requests]
        self.load()
        width, height = generation_size(*first.image.size, self.short_side)
        self._size = f"{width}x{height}"
        inputs = self._inputs(first, width, height)
        per_call = max(1, self.max_batch(width, height))
        self._batch = min(per_call, len(requests))
        chunks = [requests[i:i + per_call] for i in range(0, len(requests), per_call)]
        images: list[Image.Image] = []
        for k, chunk in enumerate(chunks):
            images += self._run(first.prompt, [r.seed for r in chunk], first.progress, k, len(chunks), **inputs)
        return [im if im.size == r.image.size else im.resize(r.image.size, Image.LANCZOS)
                for im, r in zip(images, requests)]

    def describe(self) -> dict[str, Any]:
        """What goes into run.json and the A1111 fields: model, profile, steps, sampler, CFG, size, LoRA."""
        scheduler = (type(self._pipe.scheduler).__name__ if self._pipe is not None
                     else SCHEDULERS[self.scheduler_name] or "default")
        info: dict[str, Any] = {
            "model": self.model,
            "profile": self.profile.name,
            "steps": self.steps,
            # the A1111 sampler name where there is one (the studio may swap the scheduler after loading)
            "sampler": A1111_SAMPLERS.get(scheduler, scheduler),
            "scheduler": scheduler,
            "cfg_scale": self.guidance,
            "size": self._size,
        }
        if self._batch:
            info["batch_size"] = self._batch
        if self._tiny_vae:
            info["vae"] = self._tiny_vae
        if self._plan is not None:
            info["device"], info["dtype"] = self._plan.device, self._plan.dtype
            info["runtime"] = "torch"
            if self._plan.offload:
                info["offload"] = self._plan.offload
            if self._plan.compile:
                info["compile"] = True
        if self._ov is not None:
            info.update(self._ov.describe())
        if self._loaded_loras:
            info["lora"] = [{"name": lo.name, "scale": lo.scale, "hash": lo.hash, "source": lo.source,
                             "lcm": lo.lcm} for lo in self._loaded_loras]
        extra = a1111_extra(info)
        if extra:
            info["a1111"] = extra
        return info


def a1111_extra(described: dict[str, Any]) -> dict[str, Any]:
    """The extra A1111 ``parameters`` fields for a generator's ``describe()``: ``Lora hashes`` and
    ``VAE`` where they apply, and the ``<lora:name:scale>`` tags A1111 keeps in the prompt text
    (under ``"prompt_suffix"``, for the caller to append to the prompt it records).

    >>> a1111_extra({"lora": [{"name": "lcm-lora-sdv1-5", "scale": 1.0, "hash": "abc123abc123"}]})["Lora hashes"]
    'lcm-lora-sdv1-5: abc123abc123'
    """
    out: dict[str, Any] = {}
    loras = described.get("lora") or []
    if loras:
        out["Lora hashes"] = ", ".join(f"{lo['name']}: {lo['hash']}" for lo in loras)
        out["prompt_suffix"] = " " + " ".join(f"<lora:{lo['name']}:{lo['scale']:g}>" for lo in loras)
    if described.get("vae"):
        out["VAE"] = Path(str(described["vae"])).name
    return out


def _same_image(a: Image.Image, b: Image.Image) -> bool:
    return a is b or (a.size == b.size and a.mode == b.mode and a.tobytes() == b.tobytes())


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
        width, height = round8(int(width), "width"), round8(int(height), "height")
        self._size = f"{width}x{height}"
        self.load()
        seeds = [int(seed) + k for k in range(num_images)]
        per_call = max(1, self.max_batch(width, height))
        self._batch = min(per_call, num_images)
        chunks = [seeds[i:i + per_call] for i in range(0, num_images, per_call)]
        images: list[Image.Image] = []
        for k, chunk in enumerate(chunks):
            images += self._run(prompt, chunk, progress, k, len(chunks), width=width, height=height)
        return images


class InpaintGenerator(_DiffusionGenerator):
    """``sd-inpaint``: the background (inverse of the mask) repainted around the kept object."""

    name = "sd-inpaint"
    default_model = DEFAULT_INPAINT_MODEL
    auto_class = "AutoPipelineForInpainting"
    task = "inpainting"

    def _inputs(self, request: GenerateRequest, width: int, height: int) -> dict[str, Any]:
        from PIL import ImageOps

        init = request.image.convert("RGB").resize((width, height), Image.LANCZOS)
        # white = repaint: everything that is not foreground
        repaint = ImageOps.invert(request.mask.convert("L")).resize((width, height), Image.BILINEAR)
        return {"image": init, "mask_image": repaint, "width": width, "height": height,
                # Turbo/LCM profiles take few steps: denoise the whole background in all of them
                "strength": 1.0}


class Img2ImgGenerator(_DiffusionGenerator):
    """``sd-img2img``: the clean background moved towards the prompt by ``config.strength``."""

    name = "sd-img2img"
    auto_class = "AutoPipelineForImage2Image"
    task = "image-to-image"

    @property
    def steps(self) -> int:
        if self.config.steps is not None:
            return self.config.steps
        # img2img runs steps x strength of them: a 1-step profile needs more for one to remain
        if self.config.strength <= 0:
            return self.profile.steps
        return max(self.profile.steps, math.ceil(1 / self.config.strength - 1e-9))

    def _skip(self, request: GenerateRequest) -> bool:
        if int(self.steps * self.config.strength) < 1:
            runlog.warn(
                f"sd-img2img: strength {self.config.strength} with {self.steps} steps leaves no "
                "denoising step; the clean background is used unchanged"
            )
            return True
        return False

    def _inputs(self, request: GenerateRequest, width: int, height: int) -> dict[str, Any]:
        init = request.background.convert("RGB").resize((width, height), Image.LANCZOS)
        return {"image": init, "strength": self.config.strength}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "strength": self.config.strength}


# -- the studio's entry points ------------------------------------------------------------------


def load_txt2img(config: GenerateConfig) -> Txt2ImgGenerator:
    """A loaded text-to-image generator for ``config`` (model, steps, scheduler, LoRA, device, ...)."""
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
