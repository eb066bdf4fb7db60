"""The background pipeline: segment → inpaint → caption → refine → generate → composite → save.

>>> from backdrop import Pipeline, PipelineConfig
>>> pipe = Pipeline.from_config(PipelineConfig(variants=2, seed=7))     # doctest: +SKIP
>>> result = pipe("examples/micrograph.png")                            # doctest: +SKIP
>>> [v.seed for v in result.variants]                                   # doctest: +SKIP
[7, 8]
>>> pipe.save(result, "out")                                            # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
import secrets
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image

from . import runlog
from .caption import CAPTIONERS
from .composite import composite
from .config import PipelineConfig
from .errors import BackdropError, GenerationError, OutputExistsError
from .generate import GENERATORS
from .images import LoadedImage, atomic_dir, load_image, normalise
from .inpaint import INPAINTERS
from .metadata import a1111_parameters, save_image
from .models import find as find_model
from .models import path as model_path
from .refine import REFINERS
from .registry import has_module
from .segment import SEGMENTERS
from .types import GenerateRequest, Prompt, Result, Variant

log = logging.getLogger(__name__)

# called as on_progress(stage, step, total): stage is "segment", ..., "generate 2/4"
StageProgress = Callable[[str, int, int], None]

# Store models the "auto" stages look for, best first.
AUTO_SEGMENT_MODELS = ("isnet-medium", "isnet-small")
AUTO_REFINE_MODELS = ("smollm2-135m-instruct",)


def variant_seed(base: int, k: int) -> int:
    """Seed of variant ``k`` (1-based): ``base + k - 1``, as A1111 numbers a batch."""
    return (base + k - 1) % 2**32


def draw_seed() -> int:
    return secrets.randbelow(2**31)


class Pipeline:
    """Holds one loaded backend per stage and runs them on images (models load once)."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        segmenter: Any,
        inpainter: Any,
        captioner: Any,
        refiner: Any,
        generator: Any,
        notices: list[str] | None = None,
    ):
        self.config = config
        self.segmenter = segmenter
        self.inpainter = inpainter
        self.captioner = captioner
        self.refiner = refiner
        self.generator = generator
        self.notices = list(notices or [])

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: PipelineConfig | None = None,
        *,
        segmenter: Any = None,
        inpainter: Any = None,
        captioner: Any = None,
        refiner: Any = None,
        generator: Any = None,
    ) -> "Pipeline":
        """Build every stage from ``config``; a ready backend instance passed here is used as is."""
        config = config or PipelineConfig()
        config, notices = resolve_auto(config)
        for stage, registry, given in (
            ("segment", SEGMENTERS, segmenter),
            ("inpaint", INPAINTERS, inpainter),
            ("caption", CAPTIONERS, captioner),
            ("refine", REFINERS, refiner),
            ("generate", GENERATORS, generator),
        ):
            if given is None:
                registry.check_name(getattr(config, stage).backend)
        for note in notices:
            log.warning(note)
        return cls(
            config,
            segmenter=segmenter or SEGMENTERS.create(config.segment.backend, config.segment),
            inpainter=inpainter or INPAINTERS.create(config.inpaint.backend, config.inpaint),
            captioner=captioner or CAPTIONERS.create(config.caption.backend, config.caption),
            refiner=refiner or REFINERS.create(config.refine.backend, config.refine),
            generator=generator or GENERATORS.create(config.generate.backend, config.generate),
            notices=notices,
        )

    def load(self) -> "Pipeline":
        """Load every model now (they load lazily otherwise), so a missing model fails once, up
        front, rather than on each image of a batch. Returns the pipeline."""
        for attr in _ATTR.values():
            load = getattr(getattr(self, attr), "load", None)
            if callable(load):
                load()
        return self

    def backends(self) -> dict[str, dict[str, Any]]:
        """Which backend runs each stage, with what each reports about itself."""
        out: dict[str, dict[str, Any]] = {}
        for stage, attr in _ATTR.items():
            backend = getattr(self, attr)
            info = {"name": getattr(backend, "name", type(backend).__name__)}
            describe = getattr(backend, "describe", None)
            if callable(describe):
                info.update(describe())
            out[stage] = info
        if self.config.prompt is not None:
            out["caption"]["skipped"] = out["refine"]["skipped"] = "fixed prompt"
        return out

    # -- one image --------------------------------------------------------------------------------
    def __call__(
        self,
        image: Image.Image | str | Path | LoadedImage,
        *,
        seed: Optional[int] = None,
        on_progress: Optional[StageProgress] = None,
    ) -> Result:
        """Run every stage on one image and return a :class:`Result` (nothing is written)."""
        cfg = self.config
        loaded = _as_loaded(image, cfg.max_pixels)
        img = loaded.image
        base = seed if seed is not None else (cfg.seed if cfg.seed is not None else draw_seed())
        timings: dict[str, float] = {}
        progress = on_progress or (lambda stage, i, n: None)

        def timed(stage: str, fn: Callable[[], Any]) -> Any:
            progress(stage, 0, 1)
            t0 = time.perf_counter()
            try:
                value = fn()
            except BackdropError:
                raise
            except Exception as exc:  # a backend bug or runtime failure: one line, stage named
                raise GenerationError(f"{stage} failed ({type(exc).__name__}: {exc})") from exc
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
            progress(stage, 1, 1)
            return value

        with runlog.collecting(label=Path(loaded.info["path"]).name if loaded.info.get("path") else None) as rec:
            for notice in self.notices:
                rec["warnings"].append(notice)
            # 1. segment: the foreground mask, binary, same size
            mask = timed("segment", lambda: _binary_mask(self.segmenter(img), img.size))
            # 2. inpaint: the clean background (the object's hole filled)
            clean = timed("inpaint", lambda: self.inpainter(img, mask))
            # 3-4. caption and refine, unless the user fixed the prompt
            if cfg.prompt is not None:
                caption = ""
                prompt = Prompt(cfg.prompt, cfg.negative or "")
            else:
                caption = timed("caption", lambda: self.captioner(clean))
                prompt = timed("refine", lambda: self.refiner(caption))
                if cfg.negative is not None:
                    prompt = Prompt(prompt.positive, cfg.negative)
            # 5-6. generate N backgrounds (one seed each) and paste the foreground back
            known = _known_background(mask, cfg.inpaint.dilate)
            variants: list[Variant] = []
            for k in range(1, cfg.variants + 1):
                s = variant_seed(base, k)
                stage = f"generate {k}/{cfg.variants}"
                request = GenerateRequest(
                    image=img, mask=mask, background=clean, known=known, prompt=prompt, seed=s,
                    progress=lambda i, n, stage=stage: progress(stage, i, n),
                )
                bg = timed("generate", lambda: _rgb_at(self.generator(request), img.size))
                comp = timed("composite", lambda: composite(img, mask, bg, cfg.composite))
                variants.append(Variant(k, s, bg, comp))
        return Result(
            image=img,
            mask=mask,
            background=clean,
            caption=caption,
            prompt=prompt,
            variants=variants,
            timings={k: round(v, 4) for k, v in timings.items()},
            config=cfg,
            backends=self.backends(),
            warnings=rec["warnings"],
            notes=rec["notes"],
            source=loaded.info,
            base_seed=base,
        )

    # -- saving -----------------------------------------------------------------------------------
    def record(self, result: Result) -> dict[str, Any]:
        """The run record (run.json, and the ``backdrop`` chunk of every image)."""
        return {
            "backdrop_version": _version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "input": result.source,
            "config": result.config.to_dict(),
            "backends": result.backends,
            "caption": result.caption,
            "prompt": {"positive": result.prompt.positive, "negative": result.prompt.negative},
            "seed": result.base_seed,
            "variants": [
                {"index": v.index, "seed": v.seed, "background": f"background_{v.index}.png",
                 "composite": f"composite_{v.index}.png"}
                for v in result.variants
            ],
            "timings": result.timings,
            "warnings": result.warnings,
            "notes": result.notes,
            "versions": package_versions(),
        }

    def labels(self, result: Result, variant: Variant) -> dict[str, str]:
        """How one variant's images are labelled: the A1111 ``parameters`` text and the IPTC
        source types of its background and composite (model-made or not)."""
        gen = self.generator
        generative = bool(getattr(gen, "generative", False))
        described = result.backends.get("generate", {})
        parameters = a1111_parameters(
            result.prompt.positive, result.prompt.negative,
            steps=described.get("steps") if generative else None,
            sampler=described.get("sampler") if generative else None,
            cfg_scale=described.get("cfg_scale") if generative else None,
            seed=variant.seed, size=(described.get("size") if generative else None) or result.image.size,
            model=described.get("model"),
        )
        background = getattr(gen, "background_source_type", None) or (
            "trainedAlgorithmicMedia" if generative else "algorithmicMedia")
        composite = "compositeWithTrainedAlgorithmicMedia" if generative else "compositeSynthetic"
        return {"parameters": parameters, "background": background, "composite": composite}

    def save(self, result: Result, out_dir: str | Path, *, name: str = "image", overwrite: bool = False,
             log_text: str = "") -> Path:
        """Write one result into ``out_dir/name/`` atomically (see the README's output layout)."""
        record = self.record(result)
        with atomic_dir(Path(out_dir) / name, overwrite=overwrite) as tmp:
            base_params = a1111_parameters(result.prompt.positive, result.prompt.negative, size=result.image.size)
            save_image(result.mask, tmp / "mask.png", parameters=base_params, record={**record, "file": "mask"})
            save_image(result.background, tmp / "bg_only.png", parameters=base_params,
                       record={**record, "file": "bg_only"}, source_type="compositeSynthetic")
            for v in result.variants:
                labels = self.labels(result, v)
                rec = {**record, "variant": {"index": v.index, "seed": v.seed}}
                for kind, image in (("background", v.background), ("composite", v.composite)):
                    save_image(image, tmp / f"{kind}_{v.index}.png", parameters=labels["parameters"],
                               record={**rec, "file": kind}, source_type=labels[kind])
            (tmp / "run.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
            (tmp / "pipeline.log").write_text(log_text, encoding="utf-8")
        return Path(out_dir) / name

    def process(self, path: str | Path, out_dir: str | Path, *, name: str | None = None, seed: int | None = None,
                overwrite: bool = False, on_progress: Optional[StageProgress] = None) -> Path:
        """Load, run and save one image file, with its own pipeline.log. Returns the output folder."""
        path = Path(path)
        name = name or path.stem
        target = Path(out_dir) / name
        if target.exists() and not overwrite:  # save() checks too; this spares the work before it
            raise OutputExistsError(f"{target} exists; pass --overwrite to replace it")
        with _capture_log() as captured:
            log.info("input %s", path)
            result = self(load_image(path, max_pixels=self.config.max_pixels), seed=seed, on_progress=on_progress)
            log.info("done: %d variant(s), seeds %s", len(result.variants), [v.seed for v in result.variants])
        return self.save(result, out_dir, name=name, overwrite=overwrite, log_text=captured.getvalue())


_ATTR = {"segment": "segmenter", "inpaint": "inpainter", "caption": "captioner", "refine": "refiner",
         "generate": "generator"}


def resolve_auto(config: PipelineConfig) -> tuple[PipelineConfig, list[str]]:
    """Replace the "auto" backends by what is present here; return the one-line notices to show."""
    notices: list[str] = []
    if config.segment.backend == "auto":
        found = _first_in_store(AUTO_SEGMENT_MODELS) if has_module("rembg") and has_module("onnxruntime") else None
        if found:
            config = replace(config, segment=replace(config.segment, backend="rembg", model=found))
        else:
            config = replace(config, segment=replace(config.segment, backend="classical"))
            notices.append(
                "segment: ISNet is not installed, using the classical segmenter; for better masks run "
                f"`pip install 'backdrop[segment]'` and `backdrop models pull {AUTO_SEGMENT_MODELS[0]}`"
            )
    if config.refine.backend == "auto":
        found = _first_in_store(AUTO_REFINE_MODELS) if has_module("llama_cpp") else None
        if found:
            config = replace(config, refine=replace(config.refine, backend="llama-cpp", model=str(model_path(found))))
        else:
            config = replace(config, refine=replace(config.refine, backend="template"))
            notices.append(
                "refine: no local LLM installed, using the template refiner; for LLM prompts run "
                f"`pip install 'backdrop[llm]'` and `backdrop models pull {AUTO_REFINE_MODELS[0]}`"
            )
    return config, notices


def _first_in_store(names: tuple[str, ...]) -> str | None:
    return next((name for name in names if find_model(name) is not None), None)


def _as_loaded(image: Any, max_pixels: int) -> LoadedImage:
    if isinstance(image, LoadedImage):
        return image
    if isinstance(image, (str, Path)):
        return load_image(image, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        return LoadedImage(normalise(image), {"path": None, "mode": image.mode, "size": list(image.size)})
    raise TypeError(f"expected a PIL image or a path, got {type(image).__name__}")


def _binary_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    if not isinstance(mask, Image.Image):
        raise GenerationError(f"segment backend returned {type(mask).__name__}, not an image")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    arr = np.asarray(mask.convert("L"))
    return Image.fromarray(np.where(arr >= 128, 255, 0).astype(np.uint8), "L")


def _known_background(mask: Image.Image, dilate: int) -> Image.Image:
    """255 where the background pixels are real: outside the (dilated) hole the inpainter filled."""
    from .inpaint.opencv import hole_mask

    return Image.fromarray(255 - np.asarray(hole_mask(mask, dilate)), "L")


def _rgb_at(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise GenerationError(f"generate backend returned {type(image).__name__}, not an image")
    image = image.convert("RGB")
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _version() -> str:
    from . import __version__

    return __version__


def package_versions() -> dict[str, str]:
    """Versions of Python and of the libraries this run used (heavy ones only if already loaded)."""
    import cv2
    import PIL

    out = {"python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__,
           "opencv": cv2.__version__, "backdrop": _version()}
    for mod in ("torch", "diffusers", "transformers", "rembg", "onnxruntime", "llama_cpp", "gpt4all"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


class _capture_log:
    """Collect the 'backdrop' logger's records (INFO and up, or DEBUG if enabled) into a string."""

    def __enter__(self):
        import io

        self.buffer = io.StringIO()
        self.handler = logging.StreamHandler(self.buffer)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.logger = logging.getLogger("backdrop")
        self.old_level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)
        return self.buffer

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.old_level)
        return False
