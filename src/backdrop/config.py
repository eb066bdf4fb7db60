"""Typed configuration: one frozen dataclass per stage, and PipelineConfig holding them.

Configs are never silently rewritten: a bad value raises ConfigError saying what was expected,
what came and how to fix it. They round-trip through plain dicts, JSON and TOML.

>>> cfg = PipelineConfig(variants=2, generate=GenerateConfig(backend="texture"))
>>> PipelineConfig.from_dict(cfg.to_dict()) == cfg
True
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Optional

from .errors import ConfigError

Device = Literal["auto", "cpu", "cuda", "mps"]
Scheduler = Literal["default", "ddim", "pndm", "euler", "euler-a", "dpm++", "lms", "unipc", "lcm"]
# model families with their own defaults (steps, guidance, sampler, size); "auto": read from the model
Profile = Literal["auto", "sd15", "sdxl", "sd-turbo", "sdxl-turbo", "lcm"]
RandomStyle = Literal["auto", "any", "microscopy", "studio", "outdoor"]
RANDOM_STYLES: tuple[str, ...] = typing.get_args(RandomStyle)


@dataclass(frozen=True)
class SegmentConfig:
    backend: str = "auto"  # registry name; "auto": rembg + embedded ISNet when present, else classical
    model: str = "isnet-general-use"  # rembg model name, a model-store name, or a path to an .onnx file
    alpha_matting: bool = False  # rembg: refine the mask edge with alpha matting
    device: Device = "auto"  # rembg: onnxruntime provider; "cuda" fails loudly when CUDA is absent
    threshold: int = 128  # rembg: alpha at or above this is foreground (binary mask)
    grabcut: bool = True  # classical: refine the first mask with GrabCut
    keep_components: int = 0  # classical: keep only the N largest objects (0 = all large enough)
    size: int = 1024  # rembg with an ISNet file: the model's input side (a multiple of 32; smaller is faster)
    # rembg with an ISNet file: what runs it. "auto": OpenVINO on the CPU when installed (the same mask,
    # IoU loss 0.0001, for ~2.3x less CPU in bench_isnet.py), else onnxruntime
    runtime: Literal["auto", "onnxruntime", "openvino"] = "auto"


@dataclass(frozen=True)
class InpaintConfig:
    backend: str = "telea"  # a name in backdrop.inpaint.INPAINTERS
    radius: int = 5  # cv2.inpaint neighbourhood radius, in pixels
    dilate: int = 7  # grow the mask by this many pixels first so the object's halo is removed too
    max_side: int = 768  # holes are filled at most at this resolution, then upsampled inside the hole only


@dataclass(frozen=True)
class CaptionConfig:
    backend: str = "describe"  # a name in backdrop.caption.CAPTIONERS
    model: str = "microsoft/git-large-coco"  # git: model id or local folder (GIT or BLIP captioners)
    max_tokens: int = 30  # git: longest caption, in tokens
    device: Device = "auto"


@dataclass(frozen=True)
class RefineConfig:
    backend: str = "auto"  # registry name; "auto": llama-cpp + SmolLM2 when present, else template
    style: str = "photographic"  # style preset name (see `backdrop styles`)
    styles_file: Optional[str] = None  # extra TOML/JSON presets merged over the bundled ones
    model: str = "mistral-7b-instruct-v0.1.Q4_0.gguf"  # llama-cpp/gpt4all: GGUF file name or path
    model_path: Optional[str] = None  # folder searched for `model` (default: the model store)
    temperature: float = 0.2  # LLM sampling temperature
    seed: int = 0  # LLM sampling seed, for reproducible prompts
    max_tokens: int = 80  # longest LLM answer, in tokens
    allow_download: bool = False  # gpt4all: may it download the model
    threads: int = 0  # llama-cpp/gpt4all CPU threads; 0: $BACKDROP_THREADS, else free physical cores


@dataclass(frozen=True)
class GenerateConfig:
    backend: str = "texture"  # a name in backdrop.generate.GENERATORS (`backdrop backends` lists them)
    model: Optional[str] = None  # sd-*: model id, local folder or store name (None: the backend's default)
    profile: Profile = "auto"  # sd-*: model family whose defaults fill unset steps/guidance/scheduler/size
    steps: Optional[int] = None  # sd-*: denoising steps (None: the profile's, e.g. 30 for SD 1.5, 1 for Turbo)
    guidance: Optional[float] = None  # sd-*: classifier-free guidance scale (None: the profile's; <=1: no CFG)
    scheduler: Scheduler = "default"  # sd-*: the profile's sampler (the model's own, LCM for LCM), or one by name
    short_side: Optional[int] = None  # sd-*: generation short side, multiple of 8 (None: 512 SD 1.5, 1024 SDXL)
    strength: float = 0.6  # sd-img2img: how far from the clean background to move (0..1)
    lora: tuple[str, ...] = ()  # sd-*: LoRAs "PATH_OR_ID[:SCALE]" ("lcm": the family's LCM-LoRA); LCM-LoRA -> LCM sampling
    tiny_vae: Optional[str] = None  # sd-*: AutoencoderTiny decoder (id, folder, store name; "auto": TAESD/TAESDXL)
    vae_tiling: bool = False  # sd-*: decode in tiles (large images in little memory)
    batch_size: int = 0  # sd-*: variants per pipeline call (0: auto for the device)
    device: Device = "auto"  # sd-*: CUDA (fp16) when present, else CPU (fp32)
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    offload: bool = False  # sd-*: CPU offload for small GPUs (see offload_mode)
    offload_mode: Literal["model", "sequential"] = "model"  # sd-*: whole models (fast) or layer by layer (least memory)
    compile: bool = False  # sd-*: torch.compile the UNet (CUDA; slow first call)
    attention_slicing: bool = False  # sd-*: lower peak memory at some speed cost
    threads: int = 0  # sd-*: torch CPU threads; 0: $BACKDROP_THREADS, else torch's own choice
    runtime: Literal["torch", "openvino"] = "torch"  # sd-*: UNet + VAE decoder in torch, or OpenVINO IR (CPU only; cached)
    openvino_precision: Literal["auto", "f32"] = "auto"  # runtime openvino: the CPU's default (bf16 with AMX/AVX512-BF16) or f32
    backgrounds: Optional[str] = None  # pool: folder of background images
    patch: int = 48  # texture: patch size in pixels (at working resolution)
    variation: float = 0.08  # texture/pool: colour and brightness jitter (0 = none)
    random_style: RandomStyle = "auto"  # random: palette/families; auto: from style words in the prompt, else any

    def __post_init__(self) -> None:
        if isinstance(self.lora, list):  # JSON/TOML give lists; keep the frozen config hashable
            object.__setattr__(self, "lora", tuple(self.lora))


@dataclass(frozen=True)
class CompositeConfig:
    # width of a soft edge, in pixels, outside the kept foreground. 0 (a paste exactly along the mask;
    # a soft mask's own alpha still blends): issue #10's benchmark showed any band makes augmented
    # images tell-tale (their objects' edges differ from real ones), and a model learns that as a
    # cue: with 2 px `random`'s OOD accuracy was 81.2 / 66.6 % (swapped / novel), with 0 px 91.9 / 74.1 %
    feather: int = 0
    harmonize: bool = False  # match the edge's colour to the new background (the edge only)


@dataclass(frozen=True)
class ChecksConfig:
    object_copy: bool = True  # fail a background that shows a copy of the kept object (template match, cheap)
    salient_object: bool = False  # fail a background in which a segmenter finds a new object (slower)
    too_close: bool = True  # fail a background whose colours match the old one's (the class cue survives)
    near_duplicate: bool = True  # fail a background that repeats an earlier variant of the same image
    copy_threshold: float = 0.85  # object_copy: fail at this normalised correlation (1 = exact copy)
    salient_threshold: float = 0.3  # salient_object: fail at a new component this large (share of the object's area)
    close_threshold: float = 0.75  # too_close: fail at this colour-histogram similarity (1 = same colours)
    duplicate_threshold: float = 0.97  # near_duplicate: fail at this thumbnail similarity (1 = identical)
    segmenter: str = "classical"  # salient_object: segment backend run on the new background (classical, rembg)
    segment_model: str = "isnet-medium"  # salient_object with rembg: model name, store name or .onnx path
    retries: int = 2  # a failing variant is regenerated with the next seed up to this many times
    on_fail: Literal["keep", "drop"] = "keep"  # still failing after the retries: keep it (with a warning) or drop it


@dataclass(frozen=True)
class PipelineConfig:
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    inpaint: InpaintConfig = field(default_factory=InpaintConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)
    variants: int = 1  # new backgrounds per input image
    seed: Optional[int] = None  # variant k (1-based) uses seed + k - 1; None: drawn once and recorded
    prompt: Optional[str] = None  # a fixed prompt: skips caption and refine
    negative: Optional[str] = None  # a negative prompt that replaces the style's
    max_pixels: int = 60_000_000  # inputs larger than this are refused before decoding
    checks: ChecksConfig = field(default_factory=ChecksConfig)  # checks on every generated background

    def __post_init__(self) -> None:
        validate(self)

    # -- round trips -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PipelineConfig":
        return _from_dict(cls, data, "config")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_file(cls, path: str | Path) -> "PipelineConfig":
        """Load a config from a .json or .toml file (keys as in ``to_dict``; missing ones default)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            if path.suffix.lower() == ".toml":
                data = _toml().loads(text)
            else:
                data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"config file {path} is not valid {path.suffix[1:] or 'JSON'}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a table/object at the top")
        return cls.from_dict(data)

    def with_overrides(self, **stages: dict[str, Any]) -> "PipelineConfig":
        """A copy with some stage fields replaced: ``cfg.with_overrides(generate={"steps": 4})``."""
        changes: dict[str, Any] = {}
        for key, value in stages.items():
            current = getattr(self, key)
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                changes[key] = _from_dict(type(current), {**dataclasses.asdict(current), **value}, key)
            else:
                changes[key] = value
        return replace(self, **changes)


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # pragma: no cover

    return tomli


def _from_dict(cls: type, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _from_dict(hint, value, f"{where}.{name}")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def _check_type(where: str, value: Any, hint: Any) -> None:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    else:
        return
    if not ok:
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r} ({type(value).__name__})")


_RANGES: dict[str, tuple[float, float]] = {
    "variants": (1, 1000),
    "seed": (0, 2**32 - 1),
    "max_pixels": (1, 2**40),
    "segment.threshold": (1, 255),
    "segment.keep_components": (0, 1000),
    "inpaint.radius": (1, 100),
    "inpaint.dilate": (0, 200),
    "inpaint.max_side": (64, 16384),
    "caption.max_tokens": (1, 512),
    "refine.temperature": (0.0, 5.0),
    "refine.seed": (0, 2**32 - 1),
    "refine.max_tokens": (1, 1024),
    "refine.threads": (0, 1024),
    "generate.steps": (1, 1000),
    "generate.guidance": (0.0, 50.0),
    "generate.short_side": (64, 4096),
    "generate.strength": (0.0, 1.0),
    "generate.patch": (8, 512),
    "generate.variation": (0.0, 1.0),
    "generate.batch_size": (0, 64),
    "generate.threads": (0, 1024),
    "composite.feather": (0, 64),
    "checks.copy_threshold": (0.0, 1.0),
    "checks.salient_threshold": (0.0, 100.0),
    "checks.close_threshold": (0.0, 1.0),
    "checks.duplicate_threshold": (0.0, 1.0),
    "checks.retries": (0, 20),
}


def validate(cfg: PipelineConfig) -> None:
    """Check types, Literal choices and ranges of every field; raise ConfigError on the first bad one."""
    _validate_dc(cfg, "")
    if cfg.segment.size % 32 or not 128 <= cfg.segment.size <= 2048:
        raise ConfigError(f"segment.size: expected a multiple of 32 from 128 to 2048, got {cfg.segment.size}")
    if cfg.generate.short_side is not None and cfg.generate.short_side % 8:
        raise ConfigError(f"generate.short_side: expected a multiple of 8, got {cfg.generate.short_side}")


def _validate_dc(obj: Any, prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        where = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            if not isinstance(value, hints[f.name]):
                raise ConfigError(f"{where}: expected {hints[f.name].__name__}, got {type(value).__name__}")
            _validate_dc(value, where + ".")
            continue
        _check_type(where, value, hints[f.name])
        bounds = _RANGES.get(where)
        if bounds and value is not None and not (bounds[0] <= value <= bounds[1]):
            raise ConfigError(f"{where}: expected a value from {bounds[0]} to {bounds[1]}, got {value!r}")


# -- presets -----------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # What a plain `backdrop run` uses: the best that is present here, weight-free otherwise.
    "default": {},
    # Weight-free everywhere: runs on any machine, no models at all.
    "offline": {
        "segment": {"backend": "classical"},
        "inpaint": {"backend": "telea"},
        "caption": {"backend": "describe"},
        "refine": {"backend": "template"},
        "generate": {"backend": "texture"},
    },
    # The original design: rembg + OpenCV + GIT + GPT4All (Mistral 7B) + Stable Diffusion 1.5.
    "seed": {
        "segment": {"backend": "rembg", "model": "isnet-general-use"},
        "inpaint": {"backend": "telea"},
        "caption": {"backend": "git", "model": "microsoft/git-large-coco"},
        "refine": {"backend": "gpt4all", "model": "mistral-7b-instruct-v0.1.Q4_0.gguf"},
        "generate": {"backend": "sd-txt2img", "model": "stable-diffusion-v1-5/stable-diffusion-v1-5"},
    },
    # Seconds per image on a CPU: the family's LCM-LoRA ("lcm": lcm-lora-sdv1-5 / lcm-lora-sdxl; none for
    # Turbo and LCM models), the profile's few steps, no CFG, the tiny VAE decoder (TAESD / TAESDXL).
    "fast": {
        "generate": {"backend": "sd-txt2img", "lora": ("lcm",), "tiny_vae": "auto", "steps": None,
                     "guidance": None, "scheduler": "default"},
    },
    # The family's recommended sampling (profile's steps and guidance) with the full VAE.
    "quality": {
        "generate": {"backend": "sd-txt2img", "tiny_vae": None, "steps": None, "guidance": None,
                     "scheduler": "dpm++"},
    },
}


def register_preset(name: str, overrides: dict[str, dict[str, Any]], *, replace: bool = False) -> None:
    """Add a named config (``--preset NAME``): stage -> field overrides, as in :data:`PRESETS`."""
    if name in PRESETS and not replace:
        raise ConfigError(f"preset {name!r} already exists")
    PRESETS[name] = overrides


def preset(name: str, base: PipelineConfig | None = None) -> PipelineConfig:
    """The named preset applied over ``base`` (default config when None)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return (base or PipelineConfig()).with_overrides(**PRESETS[name])
