"""How a diffusion pipeline is set up, before any weights load: the model profile (SD 1.5, SDXL,
Turbo, LCM: default steps, guidance, sampler, native size), LoRA specs and files, generation
sizes, the load plan for a device (dtype, offload, attention) and the batch size that fits it.
The generators themselves are :mod:`backdrop.generate.diffusion`, which re-exports these names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from .. import hf
from ..config import GenerateConfig
from ..errors import ConfigError, ModelCorruptError, ModelNotFoundError

log = logging.getLogger("backdrop.generate.diffusion")

# scheduler names accepted by GenerateConfig.scheduler -> diffusers class ("default": the profile's)
SCHEDULERS: dict[str, Optional[str]] = {
    "default": None,
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lcm": "LCMScheduler",
}

LORA_FILE = "pytorch_lora_weights.safetensors"  # the file name diffusers saves and the Hub LoRAs use


# -- model profiles ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelProfile:
    """Defaults for one model family; the user's options override each of them."""

    name: str
    family: str  # the latent space / architecture: "sd15" (SD 1.x, 2.x, SD-Turbo) or "sdxl"
    steps: int  # denoising steps
    guidance: float  # CFG scale (<= 1: no CFG, one UNet pass per step instead of two)
    scheduler: str  # a SCHEDULERS name; "default": the model's own
    size: int  # native short side, pixels
    note: str = ""

    @property
    def tiny_vae(self) -> str:
        """The store name of the AutoencoderTiny for this family."""
        return "taesdxl" if self.family == "sdxl" else "taesd"

    @property
    def lcm_lora(self) -> Optional[str]:
        """The store name of this family's LCM-LoRA (None: the model samples fast already)."""
        if self.name in ("sd-turbo", "sdxl-turbo", "lcm") or self.name.endswith("+lcm-lora"):
            return None
        return "lcm-lora-sdxl" if self.family == "sdxl" else "lcm-lora-sdv1-5"

    def with_lcm_lora(self) -> "ModelProfile":
        """The profile once an LCM-LoRA is fused: LCM sampler, 4 steps, no CFG."""
        if self.name.endswith("+lcm-lora"):
            return self
        return replace(self, name=f"{self.name}+lcm-lora", steps=4, guidance=1.0, scheduler="lcm",
                       note="LCM-LoRA: LCM sampler, 4 steps, no CFG")


PROFILES: dict[str, ModelProfile] = {
    "sd15": ModelProfile("sd15", "sd15", 30, 7.5, "default", 512, "SD 1.x / 2.x: 30 steps, CFG 7.5, 512 px"),
    "sdxl": ModelProfile("sdxl", "sdxl", 30, 5.0, "default", 1024, "SDXL: 30 steps, CFG 5, 1024 px"),
    "sd-turbo": ModelProfile("sd-turbo", "sd15", 1, 0.0, "default", 512, "SD-Turbo: 1 step, no CFG, 512 px"),
    "sdxl-turbo": ModelProfile("sdxl-turbo", "sdxl", 1, 0.0, "default", 512, "SDXL-Turbo: 1 step, no CFG, 512 px"),
    # LCM-distilled UNets embed the guidance scale (w) instead of running CFG: 8 costs nothing extra
    "lcm": ModelProfile("lcm", "sd15", 4, 8.0, "lcm", 512, "LCM-distilled: LCM sampler, 4 steps, guidance embedded"),
}


def guess_profile(model: str) -> ModelProfile:
    """A first guess from the model's name alone (the loaded model's config decides later).

    >>> guess_profile("stabilityai/sdxl-turbo").name, guess_profile("sd15").name
    ('sdxl-turbo', 'sd15')
    """
    text = os.fspath(model).lower()
    sdxl = bool(re.search(r"sdxl|xl-base|stable-diffusion-xl", text))
    if "turbo" in text:
        return PROFILES["sdxl-turbo" if sdxl else "sd-turbo"]
    if re.search(r"(^|[^a-z])lcm([^a-z]|$)", text) and "lora" not in text:
        return replace(PROFILES["lcm"], family="sdxl", size=1024) if sdxl else PROFILES["lcm"]
    return PROFILES["sdxl" if sdxl else "sd15"]


def detect_profile(pipe: Any, model: str) -> ModelProfile:
    """The profile of a loaded pipeline, from its components' configs (and its name for Turbo)."""
    unet = getattr(pipe, "unet", None)
    ucfg = getattr(unet, "config", None)
    sdxl = getattr(pipe, "text_encoder_2", None) is not None or getattr(ucfg, "addition_embed_type", None) == "text_time"
    family = "sdxl" if sdxl else "sd15"
    scfg = getattr(getattr(pipe, "scheduler", None), "config", {}) or {}
    spacing = scfg.get("timestep_spacing") if hasattr(scfg, "get") else None
    sched = type(getattr(pipe, "scheduler", None)).__name__
    if getattr(ucfg, "time_cond_proj_dim", None) is not None or sched == "LCMScheduler" \
            or type(pipe).__name__.startswith("LatentConsistency"):
        base = PROFILES["lcm"]
        return replace(base, family=family, size=1024 if sdxl else 512)
    if "turbo" in os.fspath(model).lower() or spacing == "trailing":
        return PROFILES["sdxl-turbo" if sdxl else "sd-turbo"]
    return PROFILES[family]


# -- LoRA -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSpec:
    """One ``--lora PATH_OR_ID[:SCALE]`` as given."""

    source: str
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "LoraSpec":
        """``"path/x.safetensors:0.8"`` -> source and scale (default 1.0).

        >>> LoraSpec.parse("latent-consistency/lcm-lora-sdv1-5:0.5")
        LoraSpec(source='latent-consistency/lcm-lora-sdv1-5', scale=0.5)
        >>> LoraSpec.parse("C:\\\\loras\\\\a.safetensors").scale
        1.0
        """
        text = text.strip()
        head, sep, tail = text.rpartition(":")
        if sep and head and re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)", tail):
            return cls(head, float(tail))
        if not text:
            raise ConfigError("generate.lora: expected PATH_OR_ID[:SCALE], got an empty string")
        return cls(text, 1.0)


@dataclass(frozen=True)
class LoadedLora:
    """A LoRA as loaded: where it came from, its A1111 name and short hash, and whether it is LCM."""

    source: str
    file: str
    name: str
    scale: float
    hash: str  # AUTOMATIC1111's short "addnet" hash: sha256 of the tensors (header skipped), 12 hex
    lcm: bool

    def tag(self) -> str:
        return f"<lora:{self.name}:{self.scale:g}>"


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` table of a .safetensors file (empty when it has none)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) != 8:
            raise ModelCorruptError(f"LoRA file {path} is not a safetensors file (too short)")
        size = int.from_bytes(head, "little")
        if size <= 0 or size > 100_000_000:
            raise ModelCorruptError(f"LoRA file {path} is not a safetensors file (bad header)")
        try:
            header = json.loads(fh.read(size))
        except ValueError as exc:
            raise ModelCorruptError(f"LoRA file {path} is not a safetensors file ({exc})") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in (meta or {}).items()}


def a1111_lora_hash(path: str | os.PathLike) -> str:
    """AUTOMATIC1111's LoRA short hash: sha256 of the file after its safetensors header, 12 hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        fh.seek(8 + size)
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


_LCM_WORD = re.compile(r"(^|[^a-z])lcm([^a-z]|$)|latent[ _-]?consistency", re.I)


def is_lcm_lora(source: str, file: str | os.PathLike, metadata: dict[str, str] | None = None) -> bool:
    """An LCM-LoRA by its name (``lcm-lora-sdv1-5``, ``latent-consistency/...``) or its metadata."""
    if _LCM_WORD.search(os.fspath(source)) or _LCM_WORD.search(Path(file).name):
        return True
    meta = safetensors_metadata(file) if metadata is None else metadata
    return any(_LCM_WORD.search(k) or _LCM_WORD.search(v[:2000]) for k, v in meta.items())


def lora_from_folder(folder: Path, what: str) -> Path:
    if (folder / LORA_FILE).is_file():
        return folder / LORA_FILE
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ModelNotFoundError(f"LoRA folder {folder} holds no .safetensors file ({what})")
    raise ConfigError(f"LoRA folder {folder} holds {len(found)} .safetensors files; name one of them")


def resolve_lora(source: str) -> Path:
    """The .safetensors file of a LoRA given as a file, a folder, a store name or a Hub id."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return lora_from_folder(path, source)

    def fetch(name: str, **kw: Any) -> Path:
        folder = Path(name)
        if folder.is_dir():
            return lora_from_folder(folder, source)
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(name, LORA_FILE, **kw))

    try:
        return hf.load_pretrained(fetch, source, "LoRA", index_file=LORA_FILE)
    except ModelCorruptError as exc:  # a folder whose file is not where the hub layout puts it
        raise ModelNotFoundError(str(exc)) from exc


def lora_missing(source: str) -> Optional[str]:
    """None when the LoRA ``source`` is here (file, folder, pulled store entry, cached Hub id)."""
    path = Path(source).expanduser()
    if path.is_file() or path.is_dir():
        return None
    reason = hf.missing_reason(source, LORA_FILE)
    return f"LoRA: {reason}" if reason else None


def lora_name(source: str, file: Path) -> str:
    if file.name != LORA_FILE:
        return file.stem
    spec = hf.store_spec(source)
    if spec is not None:
        return spec.name
    return Path(source.rstrip("/\\")).name or file.parent.name


# -- tiny VAE -------------------------------------------------------------------------------------


def dtype_keyword() -> str:
    """diffusers renamed from_pretrained's ``torch_dtype`` to ``dtype``; use whichever it knows."""
    try:
        from diffusers.utils import deprecation_utils

        return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    except ImportError:
        return "torch_dtype"


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


def round8(value: int, what: str) -> int:
    if value < 64:
        raise ConfigError(f"{what}: expected at least 64 pixels, got {value}")
    return value // 8 * 8


# -- how a pipeline is set up on a device ----------------------------------------------------------


@dataclass(frozen=True)
class LoadPlan:
    """What loading does on a device, decided in one place (tested on the CPU for CUDA too)."""

    device: str
    dtype: str  # torch dtype name
    offload: Optional[str]  # None, "model" or "sequential" (CUDA only)
    channels_last: bool  # UNet/VAE in channels-last memory format (faster convolutions on CUDA)
    compile: bool  # torch.compile the UNet
    vae_slicing: bool  # decode a batch one image at a time (peak memory of one image)
    vae_tiling: bool
    attention_slicing: bool
    fuse_lora: bool  # fuse LoRA weights into the model (no per-step cost)


def load_plan(config: GenerateConfig, device: str, dtype: str) -> LoadPlan:
    """The set-up for ``device``: fp16/SDPA/channels-last/compile/offload on CUDA, plain fp32 on CPU.

    >>> load_plan(GenerateConfig(offload=True), "cuda", "float16").offload
    'model'
    >>> load_plan(GenerateConfig(offload=True), "cpu", "float32").offload is None
    True
    """
    cuda = device == "cuda"
    if config.offload and not cuda:
        log.info("offload asked for but the device is %s: ignored (it only helps on CUDA)", device)
    if config.compile and not cuda:
        log.info("compile asked for on %s: torch.compile's CPU gain is small and its first call slow; ignored", device)
    return LoadPlan(
        device=device,
        dtype=dtype,
        offload=config.offload_mode if (config.offload and cuda) else None,
        channels_last=cuda,
        # sequential offload moves weights layer by layer: a compiled graph would be rebuilt
        compile=bool(config.compile and cuda and config.offload_mode != "sequential"),
        vae_slicing=True,  # free on every device; keeps a batch's decode equal to one image's
        vae_tiling=config.vae_tiling,
        attention_slicing=config.attention_slicing,
        fuse_lora=True,
    )


def auto_batch(device: str, width: int, height: int, cfg: bool, free_bytes: Optional[int] = None,
               family: str = "sd15") -> int:
    """Variants per pipeline call when the user left it to us.

    CPU: 4 at 512x512 (fewer for larger images): one call with 4 generators shares the prompt
    encoding and the per-call overhead, and stays within a few GiB. CUDA: as many as the free
    memory holds at about 0.8 GiB per 512x512 image and UNet pass (fp16; SDXL x2), at most 8.
    MPS: 1 (batched MPS kernels gain little and memory is shared with the system).

    >>> auto_batch("cpu", 512, 512, cfg=True)
    4
    >>> auto_batch("cuda", 512, 512, cfg=True, free_bytes=8 << 30)
    4
    """
    area = max(1.0, width * height / (512 * 512))
    if device == "mps":
        return 1
    if device == "cuda":
        per_image = 0.8 * (1 << 30) * area * (2 if cfg else 1) * (2 if family == "sdxl" else 1)
        if free_bytes is None:
            return 1
        return max(1, min(8, int(free_bytes * 0.8 // per_image)))
    return max(1, min(8, int(4 / area)))
