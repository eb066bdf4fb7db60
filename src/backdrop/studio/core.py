"""What the studio does, without Streamlit: model resolution, saving with metadata, names, zips.

The Streamlit script (``app.py``) only draws widgets and calls these functions, so they are
usable and testable on their own.

>>> safe_name("../../etc/passwd")
'passwd'
>>> safe_name("")
'image'
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
import os
import re
import threading
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from PIL import Image

from ..config import GenerateConfig
from ..errors import BackdropError
from ..metadata import encode_image

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
MODEL_ENV = "BACKDROP_STUDIO_MODEL"  # overrides the default text-to-image model (id, store name or folder)
OUTPUT_ENV = "BACKDROP_OUTPUT_DIR"  # overrides the default output folder
DEFAULT_OUTPUT = "generated_images"
MAX_UPLOAD_MB = 50  # uploads larger than this are refused (also passed to streamlit as server.maxUploadSize)
MAX_PIXELS = 40_000_000  # uploads with more pixels are refused before decoding
WATERMARK_TEXT = "backdrop"

# One generation at a time in this process, whatever the number of browser sessions: the models
# are shared (loaded once) and a second run beside the first would only halve the speed of both.
GENERATION_LOCK = threading.Lock()

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def default_model() -> str:
    return os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL


def default_output_dir() -> str:
    return os.environ.get(OUTPUT_ENV, "").strip() or DEFAULT_OUTPUT


def safe_name(text: str | None, fallback: str = "image", limit: int = 40) -> str:
    """A file-name-safe stem from user text (an upload's name): no folders, no dots first, ASCII only.

    >>> safe_name("My photo (1).PNG")
    'My_photo_1_.PNG'
    """
    stem = Path(str(text or "").replace("\\", "/")).name
    stem = _SAFE.sub("_", stem).strip("._-")[:limit].strip("._-")
    return stem or fallback


def stem_of(upload_name: str | None) -> str:
    """The sanitised stem of an uploaded file's name (its suffix dropped), for download names."""
    name = Path(str(upload_name or "").replace("\\", "/")).name
    return safe_name(name.rsplit(".", 1)[0] if "." in name else name)


def timestamp(now: _dt.datetime | None = None) -> str:
    """A sortable, file-name-safe UTC timestamp with milliseconds: ``20260101-120000-123``."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"


def iso_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def ai_watermark_text(model: str) -> str:
    return f"Generated using {model} (AI Origin Watermark)"


# -- models ------------------------------------------------------------------------------------


def resolve_model(text: str) -> str:
    """What to load for the model field: the store's folder for a store name or a Hub id the store
    holds (see :func:`backdrop.hf.resolve`); anything else (a Hub id, a folder) as typed."""
    from ..hf import resolve

    return resolve((text or "").strip() or default_model(), "model_index.json")


def pull_command(text: str) -> str:
    """The command that fetches ``text`` (a store name or a Hub id the store knows)."""
    from ..hf import store_spec

    spec = store_spec(text)
    return f"backdrop models pull {spec.name if spec is not None else 'sd15'}"


SPEED_PRESETS = ("custom", "fast", "quality")  # the studio's names for config.PRESETS' generate part


def speed_settings(preset: str, lora_text: str = "", tiny_vae: str = "") -> dict[str, Any]:
    """The LoRA list and tiny VAE for the studio's preset choice and its LoRA/tiny VAE fields.

    ``fast`` adds the family's LCM-LoRA and the tiny VAE (steps and guidance from the profile),
    ``quality`` uses the full VAE and DPM++; ``custom`` takes the fields as typed.

    >>> speed_settings("fast", "my.safetensors:0.8")
    {'lora': ('my.safetensors:0.8', 'lcm'), 'tiny_vae': 'auto', 'profile_sampling': True, 'scheduler': None}
    """
    if preset not in SPEED_PRESETS:
        raise BackdropError(f"unknown preset {preset!r}; choose one of: {', '.join(SPEED_PRESETS)}")
    loras = tuple(line.strip() for line in (lora_text or "").replace(",", "\n").splitlines() if line.strip())
    tiny = (tiny_vae or "").strip() or None
    if preset == "fast":
        return {"lora": loras if "lcm" in loras else (*loras, "lcm"), "tiny_vae": tiny or "auto",
                "profile_sampling": True, "scheduler": None}
    if preset == "quality":
        return {"lora": loras, "tiny_vae": None, "profile_sampling": True, "scheduler": "dpm++"}
    return {"lora": loras, "tiny_vae": tiny, "profile_sampling": False, "scheduler": None}


def model_problem(model_text: str, device: str = "auto", offload: bool = False, *,
                  default: str | None = None, lora: tuple[str, ...] = (), tiny_vae: str | None = None,
                  runtime: str = "torch") -> str | None:
    """None when the diffusion model can load here; else one sentence with the fixing command.

    ``default`` is the model used for an empty field (the studio's default text-to-image model
    unless given, e.g. the inpainting model for sd-inpaint).
    """
    from ..generate.diffusion import Txt2ImgGenerator
    from ..hf import looks_local

    text = (model_text or "").strip() or default or default_model()
    resolved = resolve_model(text)
    try:
        reason = Txt2ImgGenerator.availability(GenerateConfig(backend="sd-txt2img", model=resolved,
                                                              device=device, offload=offload, lora=tuple(lora),
                                                              tiny_vae=tiny_vae, runtime=runtime))
    except BackdropError as exc:
        reason = str(exc)
    if reason is None:
        return None
    if "pip install" in reason or reason.startswith("device"):  # a missing package or GPU, not a missing model
        return f"Stable Diffusion cannot run here: {reason}."
    if reason.startswith(("LoRA", "tiny VAE")):
        return f"{reason[:1].upper()}{reason[1:]}."
    if looks_local(resolved) and not _is_store_path(resolved):
        what = reason.split(";")[0].strip()
        return (f"{what[:1].upper()}{what[1:]}: pass a folder saved with save_pretrained, "
                f"or fetch the default model with `{pull_command(DEFAULT_MODEL)}`.")
    return (f"Model {text} is not on this machine; fetch it with `{pull_command(text)}` "
            "or enter a local model folder in the sidebar.")


def _is_store_path(path: str) -> bool:
    try:
        from ..models import models_dir

        return Path(path).resolve().is_relative_to(models_dir().resolve())
    except (ImportError, OSError, ValueError):
        return False


def cuda_available() -> bool:
    """True when torch is installed and sees a CUDA GPU (imports torch: call once, cache it)."""
    from ..registry import has_module

    if not has_module("torch"):
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # a broken torch install means no CUDA, not a broken studio
        return False


class Txt2Img:
    """One loaded text-to-image pipeline, shared by every session; steps, guidance and scheduler
    change per call without reloading the weights. Callers hold GENERATION_LOCK around ``generate``.
    """

    def __init__(self, generator: Any):
        self.generator = generator
        self.pipe = generator.load()
        self._model_scheduler = self.pipe.scheduler  # the model's own ("default")

    def generate(self, prompt: Any, *, seed: int, width: int, height: int, num_images: int,
                 steps: Optional[int], guidance: Optional[float], scheduler: str,
                 progress: Optional[Callable[[int, int], None]] = None
                 ) -> tuple[list[Image.Image], dict[str, Any]]:
        """``num_images`` images (image k has seed ``seed + k``) and what describes them for metadata.

        ``steps``/``guidance`` None: the model profile's (e.g. 4 steps, no CFG with an LCM-LoRA).
        """
        from ..generate.diffusion import A1111_SAMPLERS, SCHEDULERS
        from ..registry import require

        if scheduler not in SCHEDULERS:
            raise BackdropError(f"unknown scheduler {scheduler!r}; choose one of: {', '.join(SCHEDULERS)}")
        cls_name = SCHEDULERS[scheduler]
        if cls_name is None:
            self.pipe.scheduler = self._model_scheduler
        elif type(self.pipe.scheduler).__name__ != cls_name:
            diffusers = require("diffusers", "diffusion")
            self.pipe.scheduler = getattr(diffusers, cls_name).from_config(self._model_scheduler.config)
        self.generator.config = replace(self.generator.config,
                                        steps=None if steps is None else int(steps),
                                        guidance=None if guidance is None else float(guidance),
                                        scheduler=scheduler)
        images = self.generator.generate(prompt, int(seed), int(width), int(height), int(num_images), progress)
        described = dict(self.generator.describe())
        name = type(self.pipe.scheduler).__name__
        described["scheduler"], described["sampler"] = name, A1111_SAMPLERS.get(name, name)
        return images, described


def a1111_for(prompt: Any, described: Mapping[str, Any], *, seed: int, size: Any, model: str) -> str:
    """The A1111 ``parameters`` text of a studio image: LoRA tags in the prompt, ``Lora hashes``,
    ``VAE`` as AUTOMATIC1111 writes them."""
    from ..metadata import a1111_parameters

    extra = dict(described.get("a1111") or {})
    suffix = extra.pop("prompt_suffix", "")
    return a1111_parameters(prompt.positive + suffix, prompt.negative, steps=described.get("steps"),
                            sampler=described.get("sampler"), cfg_scale=described.get("cfg_scale"),
                            seed=seed, size=size, model=model, extra=extra or None)


# -- saving ----------------------------------------------------------------------------------


@dataclass
class Saved:
    """One image as shown, downloaded and written (PNG and JPEG, the same metadata)."""

    image: Image.Image
    seed: int
    label: str
    png: bytes
    jpeg: bytes
    png_path: Path
    jpeg_path: Path
    download_stem: str  # download names: <download_stem>.png / .jpg
    watermarked: bool = False
    kind: str = ""  # what the image is: txt2img-1, composite-2, background-2 ...
    info: dict[str, Any] = field(default_factory=dict)  # notes to show under the image

    @property
    def png_name(self) -> str:
        return f"{self.download_stem}.png"

    @property
    def jpeg_name(self) -> str:
        return f"{self.download_stem}.jpg"


def _write_pair(folder: Path, stem: str, png: bytes, jpeg: bytes) -> str:
    """Write ``<stem>.png`` and ``.jpg`` under the first free name (``stem``, ``stem-2``, ...),
    never replacing a file: another studio session or the user may write there too."""
    from ..outputs import write_new

    candidate, n = stem, 1
    while True:
        if write_new(folder / f"{candidate}.png", png):
            if write_new(folder / f"{candidate}.jpg", jpeg):
                return candidate
            (folder / f"{candidate}.png").unlink()  # ours, just written: the pair moves on together
        n += 1
        candidate = f"{stem}-{n}"


def save_generated(
    image: Image.Image,
    out_dir: str | Path,
    *,
    seed: int,
    kind: str,
    model: str,
    parameters: str,
    record: Mapping[str, Any],
    source_type: str,
    watermark: bool = False,
    download_stem: str | None = None,
    label: str = "",
    when: _dt.datetime | None = None,
) -> Saved:
    """Write ``image`` as ``<timestamp>_<seed>_<kind>.png`` and ``.jpg`` into ``out_dir`` (atomically).

    Both carry the A1111 ``parameters``, the ``record`` (JSON), the IPTC DigitalSourceType,
    ``AI_Watermark`` and ``Timestamp``. With ``watermark`` the pixels also get the invisible
    watermark (PNG keeps it; see backdrop.watermark). ``kind`` is code-chosen, never user text.
    """
    when = when or _dt.datetime.now(_dt.timezone.utc)
    folder = Path(out_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    image = image.convert("RGB")
    marked = False
    notes: dict[str, Any] = {}
    if watermark:
        from .. import watermark as wm

        if wm.can_mark(image):
            image = wm.embed(image, WATERMARK_TEXT)
            marked = True
        else:
            notes["watermark"] = f"image {image.size[0]}x{image.size[1]} is under 256x256: no invisible watermark"
    text = {
        "AI_Watermark": ai_watermark_text(model),
        "Timestamp": when.isoformat(timespec="seconds"),
    }
    if marked:
        text["Invisible_Watermark"] = f"{WATERMARK_TEXT} (dwtDct)"
    full_record = {**record, "file": kind, "ai_watermark": text["AI_Watermark"], "timestamp": text["Timestamp"],
                   "invisible_watermark": marked}
    kw = dict(parameters=parameters, record=full_record, source_type=source_type, text=text)
    png = encode_image(image, "PNG", **kw)
    # full chroma when marked: Pillow's default 4:2:0 subsampling erases the DWT-DCT watermark
    jpeg = encode_image(image, "JPEG", subsampling=0 if marked else None, **kw)
    stem = _write_pair(folder, f"{timestamp(when)}_{int(seed)}_{safe_name(kind, 'image')}", png, jpeg)
    png_path, jpeg_path = folder / f"{stem}.png", folder / f"{stem}.jpg"
    log.info("saved %s and %s", png_path, jpeg_path)
    return Saved(image=image, seed=int(seed), label=label or kind, png=png, jpeg=jpeg, png_path=png_path,
                 jpeg_path=jpeg_path, download_stem=safe_name(download_stem or stem), watermarked=marked,
                 kind=kind, info=notes)


def zip_of(saved: list[Saved]) -> bytes:
    """A zip (in memory) holding every image as PNG and JPEG under its download name."""
    buf = io.BytesIO()
    names: set[str] = set()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for s in saved:
            for name, data in ((s.png_name, s.png), (s.jpeg_name, s.jpeg)):
                base, n = name, 1
                while name in names:
                    n += 1
                    stem, dot, ext = base.rpartition(".")
                    name = f"{stem}-{n}.{ext}"
                names.add(name)
                zf.writestr(name, data)
    return buf.getvalue()


# -- records -------------------------------------------------------------------------------------


def txt2img_record(*, prompt: Any, style: str, user_prompt: str, user_negative: str, seed: int, index: int,
                   described: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``backdrop`` JSON record of one text-to-image picture."""
    from ..version import __version__
    from ..pipeline import package_versions

    return {
        "backdrop_version": __version__,
        "created": iso_now(),
        "mode": "text-to-image",
        "prompt": {"positive": prompt.positive, "negative": prompt.negative},
        "style": style,
        "user_prompt": user_prompt,
        "user_negative": user_negative,
        "seed": int(seed),
        "image_index": index,
        "generate": dict(described),
        "settings": dict(settings),
        "versions": package_versions(),
    }


# -- the background page's two steps ---------------------------------------------------------


class Precomputed:
    """A stage backend that answers with a value computed earlier for the same image.

    The studio runs segment and inpaint once ("Analyse"), shows them, and then hands them to
    the pipeline for generation through these, so nothing runs twice; any other image goes
    to the real backend.
    """

    def __init__(self, backend: Any, image: Image.Image, value: Any):
        self.name = backend.name  # a stage of a built pipeline: it declares its name (backdrop.stages)
        self.backend = backend
        self.image = image
        self.value = value

    def __call__(self, image: Image.Image, *args: Any) -> Any:
        if image is self.image:
            return self.value
        return self.backend(image, *args)

    def describe(self) -> dict[str, Any]:
        return dict(self.backend.describe())


def binary_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The segmenter's mask as the pipeline uses it: mode L, ``size``, 0 or 255."""
    import numpy as np

    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    arr = np.asarray(mask.convert("L"))
    return Image.fromarray(np.where(arr >= 128, 255, 0).astype(np.uint8), "L")


@dataclass
class Analysis:
    """What the analyse step found for one uploaded image."""

    loaded: Any  # backdrop.images.LoadedImage
    mask: Image.Image
    background: Image.Image
    caption: str
    prompt: Any  # backdrop.types.Prompt (the refined one)
    timings: dict[str, float]
    warnings: list[str]
    notes: dict[str, Any]


def analyse(pipe: Any, loaded: Any, on_stage: Optional[Callable[[str], None]] = None) -> Analysis:
    """Segment, inpaint, caption and refine one image with ``pipe``'s backends."""
    import time

    from .. import runlog
    from ..errors import GenerationError

    img = loaded.image
    timings: dict[str, float] = {}

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        if on_stage:
            on_stage(stage)
        t0 = time.perf_counter()
        try:
            value = fn()
        except BackdropError:
            raise
        except Exception as exc:  # a backend failure: one line naming the stage
            raise GenerationError(f"{stage} failed ({type(exc).__name__}: {exc})") from exc
        timings[stage] = round(time.perf_counter() - t0, 4)
        return value

    with runlog.collecting() as rec:
        rec["warnings"].extend(getattr(pipe, "notices", []))
        mask = timed("segment", lambda: binary_mask(pipe.segmenter(img), img.size))
        clean = timed("inpaint", lambda: pipe.inpainter(img, mask).convert("RGB"))
        caption = timed("caption", lambda: pipe.captioner(clean))
        prompt = timed("refine", lambda: pipe.refiner(caption))
    return Analysis(loaded, mask, clean, caption, prompt, timings, list(rec["warnings"]), dict(rec["notes"]))


def background_pipeline(base: Any, analysis: Analysis, *, positive: str, negative: str, variants: int,
                        seed: int) -> Any:
    """A Pipeline that reuses ``base``'s loaded backends and ``analysis``'s mask and background,
    with the (edited) prompt fixed."""
    from ..items import Pipeline

    config = replace(base.config, prompt=positive, negative=negative, variants=int(variants), seed=int(seed))
    return Pipeline(
        config,
        segmenter=Precomputed(base.segmenter, analysis.loaded.image, analysis.mask),
        inpainter=Precomputed(base.inpainter, analysis.loaded.image, analysis.background),
        captioner=base.captioner,
        refiner=base.refiner,
        generator=base.generator,
        notices=list(getattr(base, "notices", [])),
    )


def background_record(pipe: Any, result: Any, analysis: Analysis, refined: Any, upload_name: str) -> dict[str, Any]:
    """The pipeline's run record, completed with the analyse step (caption, refined prompt, timings)."""
    record = pipe.record(result)
    record["mode"] = "new-background"
    record["caption"] = analysis.caption
    record["refined_prompt"] = {"positive": refined.positive, "negative": refined.negative}
    record["prompt_edited"] = (result.prompt.positive, result.prompt.negative) != (refined.positive, refined.negative)
    record["input"] = {**record.get("input", {}), "path": None, "upload": safe_name(upload_name)}
    for stage in ("caption", "refine"):
        record["backends"].get(stage, {}).pop("skipped", None)
    record["timings"] = {**analysis.timings, **{k: v for k, v in record["timings"].items()
                                                 if k not in ("segment", "inpaint")}}
    record["variants"] = [{"index": v.index, "seed": v.seed} for v in result.variants]
    record["warnings"] = list(dict.fromkeys(analysis.warnings + list(record.get("warnings", []))))
    record["notes"] = {**analysis.notes, **record.get("notes", {})}
    return record
