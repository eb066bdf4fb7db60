"""The stage pipeline: segment → inpaint → caption → refine → generate → composite, for one image.

>>> from backdrop import Pipeline, PipelineConfig
>>> pipe = Pipeline.from_config(PipelineConfig(variants=2, seed=7))     # doctest: +SKIP
>>> result = pipe("examples/micrograph.png")                            # doctest: +SKIP
>>> [v.seed for v in result.variants]                                   # doctest: +SKIP
[7, 8]
>>> pipe.save(result, "out")                                            # doctest: +SKIP

This module is the stages of one image and nothing else: no files written, no engine. Writing
(``save``, ``process``) is :mod:`backdrop.items`, whose ``Pipeline`` subclass is ``backdrop.Pipeline``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
from PIL import Image

from . import runlog
from .caption import CAPTIONERS
from .composite import composite
from .config import PipelineConfig
from .errors import BackdropError, GenerationError
from .generate import GENERATORS
from .images import LoadedImage, load_image, normalise
from .inpaint import INPAINTERS
from .metadata import a1111_parameters
from .models import find as find_model
from .models import path as model_path
from .refine import REFINERS
from .registry import has_module
from .seeds import draw_seed, item_seed, retry_seed, variant_seed  # noqa: F401 - item_seed: the old home
from .segment import SEGMENTERS
from .stages import Backend, Skipped, adopt
from .types import GenerateRequest, Prompt, Result, Variant

log = logging.getLogger(__name__)

# called as on_progress(stage, step, total): stage is "segment", ..., "generate 2/4"
StageProgress = Callable[[str, int, int], None]

# Store models the "auto" stages look for, best first.
AUTO_SEGMENT_MODELS = ("isnet-medium", "isnet-small")
AUTO_REFINE_MODELS = ("smollm2-135m-instruct",)


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
        skip: dict[str, str] | None = None,
        all_stages: bool = False,
    ):
        self.config = config
        # every stage as its contract (backdrop.stages): a caller's own object is adopted once
        self.segmenter = adopt(segmenter, "segment")
        self.inpainter = adopt(inpainter, "inpaint")
        self.captioner = adopt(captioner, "caption")
        self.refiner = adopt(refiner, "refine")
        self.generator = adopt(generator, "generate")
        self.notices = list(notices or [])
        self.skipped = {**({} if all_stages else skipped_stages(config, self.generator)), **(skip or {})}

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
        skip: dict[str, str] | None = None,
        all_stages: bool = False,
    ) -> "Pipeline":
        """Build every stage from ``config``; a ready backend instance passed here is used as is.

        ``skip`` names stages this run will not use, with the reason (a data set whose labels
        give every mask needs no segmenter): they are neither built nor loaded. Caption and refine
        are skipped too when the generator reads no prompt, unless ``all_stages`` (the studio shows
        the caption and prompt whatever the generator)."""
        config = config or PipelineConfig()
        if generator is None:
            GENERATORS.check_name(config.generate.backend)
            generator = GENERATORS.create(config.generate.backend, config.generate)
        generator = adopt(generator, "generate")  # a caller's own object: read what it declares, once
        skip = {**({} if all_stages else skipped_stages(config, generator)), **(skip or {})}
        config, notices = resolve_auto(config, skip=skip)
        for stage, registry, given in (
            ("segment", SEGMENTERS, segmenter),
            ("inpaint", INPAINTERS, inpainter),
            ("caption", CAPTIONERS, captioner),
            ("refine", REFINERS, refiner),
            ("generate", GENERATORS, generator),
        ):
            if given is None and getattr(config, stage).backend != "auto":
                registry.check_name(getattr(config, stage).backend)  # a typo is an error, used or not
        if "refine" in skip and refiner is None:
            from .styles import get_style

            get_style(config.refine.style, config.refine.styles_file)  # likewise a style that does not exist
        for note in notices:
            log.warning(note)
        def build(stage: str, given: Any, registry: Any, sub: Any) -> Any:
            if given is not None:
                return adopt(given, stage)
            if stage in skip and stage != "inpaint":  # nobody reads it: neither built nor loaded
                return Skipped(stage, skip[stage])
            return adopt(registry.create(sub.backend, sub), stage)

        return cls(
            config,
            segmenter=build("segment", segmenter, SEGMENTERS, config.segment),
            inpainter=build("inpaint", inpainter, INPAINTERS, config.inpaint),
            captioner=build("caption", captioner, CAPTIONERS, config.caption),
            refiner=build("refine", refiner, REFINERS, config.refine),
            generator=generator,
            notices=notices,
            skip=skip,
            all_stages=all_stages,
        )

    def load(self) -> "Pipeline":
        """Load every model now (they load lazily otherwise), so a missing model fails once, up
        front, rather than on each image of a batch. Returns the pipeline."""
        for stage, backend in self.stages().items():
            if stage not in self.skipped:
                backend.load()
        return self

    def stages(self) -> dict[str, Backend]:
        """The backend of each stage, in pipeline order."""
        return {"segment": self.segmenter, "inpaint": self.inpainter, "caption": self.captioner,
                "refine": self.refiner, "generate": self.generator}

    def backends(self) -> dict[str, dict[str, Any]]:
        """Which backend runs each stage, with what each reports about itself."""
        out: dict[str, dict[str, Any]] = {}
        for stage, backend in self.stages().items():
            if stage in self.skipped:
                out[stage] = {"name": backend.name or "-", "skipped": self.skipped[stage]}
                continue
            out[stage] = {"name": backend.name or type(backend).__name__, **backend.describe()}
        return out

    @property
    def needs_background(self) -> bool:
        """Whether a stage reads the clean background: the captioner, or a generator that
        samples or repaints it (random and pool make backgrounds of their own)."""
        return self.generator.uses_background or "caption" not in self.skipped

    @property
    def uses_prompt(self) -> bool:
        """Whether the generator reads the prompt (texture, pool and random do not)."""
        return self.generator.uses_prompt

    # -- one image --------------------------------------------------------------------------------
    def __call__(
        self,
        image: Image.Image | str | Path | LoadedImage,
        *,
        seed: Optional[int] = None,
        on_progress: Optional[StageProgress] = None,
    ) -> Result:
        """Run every stage on one image and return a :class:`Result` (nothing is written).

        All variants are held in the result; a batch writer uses :meth:`prepare` and
        :meth:`variants` instead, which hand over one variant at a time."""
        cfg = self.config
        base = seed if seed is not None else (cfg.seed if cfg.seed is not None else draw_seed())
        prep = self.prepare(image, on_progress=on_progress)
        seeds = [variant_seed(base, k) for k in range(1, cfg.variants + 1)]
        variants = list(self.variants(prep, seeds, on_progress=on_progress))
        return self.result(prep, variants, base)

    def result(self, prep: "Prepared", variants: list[Variant], base: int) -> Result:
        return Result(
            image=prep.image, mask=prep.mask, background=prep.background, caption=prep.caption,
            prompt=prep.prompt, variants=variants,
            timings={k: round(v, 4) for k, v in prep.timings.items()},
            config=self.config, backends=self.backends(), warnings=prep.warnings, notes=prep.notes,
            source=prep.source, base_seed=base,
        )

    def prepare(
        self,
        image: Image.Image | str | Path | LoadedImage,
        *,
        mask: Optional[Image.Image] = None,
        region: Optional[Image.Image] = None,
        background: bool = True,
        on_progress: Optional[StageProgress] = None,
    ) -> "Prepared":
        """Steps 1-4 for one image: mask, clean background, caption, prompt.

        ``mask`` (mode L, 255 = keep) replaces the segmenter: a data set's labelled masks are the
        foreground. ``region`` (mode L) limits the segmenter's mask to it: a data set's grown
        boxes, so unlabelled things outside every box become background. ``background=False``:
        no clean background is made unless a stage reads it (the generator or the captioner)."""
        cfg = self.config
        loaded = _as_loaded(image, cfg.max_pixels)
        img = loaded.image
        prep = Prepared(image=img, source=loaded.info, progress=on_progress)
        label = Path(loaded.info["path"]).name if loaded.info.get("path") else None
        with runlog.collecting(label=label) as rec:
            rec["warnings"].extend(self.notices)
            # 1. segment: the foreground mask, binary, same size (or the labels' own mask)
            if mask is not None:
                prep.mask = _binary_mask(mask, img.size)
            else:
                prep.mask = prep.timed("segment", lambda: _binary_mask(self.segmenter(img), img.size))
                if region is not None:
                    inside = np.asarray(_binary_mask(region, img.size)) > 0
                    prep.mask = Image.fromarray(np.where(inside, np.asarray(prep.mask), 0).astype(np.uint8), "L")
            # 2. inpaint: the clean background (the object's hole filled), when someone reads it
            if background or self.needs_background:
                prep.background = prep.timed("inpaint", lambda: self.inpainter(img, prep.mask))
            prep.known = known_background(prep.mask, cfg.inpaint.dilate)
            # 3-4. caption and refine, unless the prompt is fixed or the generator ignores it
            if not self.uses_prompt:  # no prompt is recorded as if it had made the image
                prep.prompt = Prompt("", "")
            elif cfg.prompt is not None:
                prep.prompt = Prompt(cfg.prompt, cfg.negative or "")
            else:
                prep.caption = prep.timed("caption", lambda: self.captioner(prep.background))
                prep.prompt = prep.timed("refine", lambda: self.refiner(prep.caption))
                if cfg.negative is not None:
                    prep.prompt = Prompt(prep.prompt.positive, cfg.negative)
        prep.warnings, prep.notes = rec["warnings"], rec["notes"]
        return prep

    def remask(self, prep: "Prepared", mask: Image.Image) -> None:
        """Give ``prep`` another foreground ``mask`` after :meth:`prepare` (a data set's box
        fallback): the clean background (when one was made) and the known pixels follow it."""
        prep.mask = _binary_mask(mask, prep.image.size)
        if prep.background is not None:
            prep.background = prep.timed("inpaint", lambda: self.inpainter(prep.image, prep.mask))
        prep.known = known_background(prep.mask, self.config.inpaint.dilate)

    def variants(
        self,
        prep: "Prepared",
        seeds: list[int],
        *,
        slots: Optional[list[int]] = None,
        item: Optional[str] = None,
        on_progress: Optional[StageProgress] = None,
    ) -> Iterator[Variant]:
        """Steps 5-6: one new background per seed, composited; yielded one at a time (so a
        writer can save each as it is made). Generators with ``generate_batch`` get the seeds in
        batches of ``batch_size`` (the prompt encoded once per batch)."""
        cfg = self.config
        gen = self.generator
        n = len(seeds)
        progress = on_progress or prep.progress or (lambda stage, i, total: None)
        batch = max(1, int(_batch_size(gen, cfg)))
        label = Path(prep.source["path"]).name if prep.source.get("path") else None
        checker = self.checker
        earlier: list[Image.Image] = []  # small copies of the kept backgrounds (near_duplicate)
        for start in range(0, n, batch):
            chunk = list(range(start, min(n, start + batch)))
            with runlog.collecting(label=label) as rec:
                requests = [
                    GenerateRequest(
                        image=prep.image, mask=prep.mask, background=prep.background, known=prep.known,
                        prompt=prep.prompt, seed=seeds[i], slot=None if slots is None else slots[i], item=item,
                        progress=lambda j, total, stage=f"generate {i + 1}/{n}": progress(stage, j, total),
                    )
                    for i in chunk
                ]
                if len(requests) > 1 and gen.batched:
                    images = prep.timed("generate", lambda: gen.generate_batch(requests))
                else:
                    images = [prep.timed("generate", lambda r=r: gen(r)) for r in requests]
            prep.warnings.extend(w for w in rec["warnings"] if w not in prep.warnings)
            prep.notes.update(rec["notes"])
            for j, i in enumerate(chunk):
                bg = _rgb_at(images[j], prep.image.size)
                images[j] = None  # hand each image over, hold none: a large -n stays one variant deep
                seed = seeds[i]
                if checker is not None:
                    with runlog.collecting(label=label) as rec:  # a regeneration notes what it used too
                        bg, seed, keep = self._checked(prep, requests[j], bg, checker, earlier, label)
                    prep.notes.update(rec["notes"])
                    prep.warnings.extend(w for w in rec["warnings"] if w not in prep.warnings)
                    if not keep:
                        continue
                comp = prep.timed("composite", partial(composite, prep.image, prep.mask, bg, cfg.composite))
                yield Variant(i + 1, seed, bg, comp)
                del bg, comp
            del images

    @property
    def checker(self) -> Any:
        """The background checker, when any check is on (built once)."""
        if not hasattr(self, "_checker"):
            from .checks import BackgroundChecker

            cfg = self.config.checks
            if self.generator.keeps_background_colours:
                # texture re-synthesises the image's own background by design: its variants look
                # like the old background and like each other, so these two checks always fire
                cfg = replace(cfg, too_close=False, near_duplicate=False)
            checker = BackgroundChecker(cfg)
            self._checker = checker if checker.enabled() else None
        return self._checker

    def _checked(self, prep: "Prepared", request: GenerateRequest, bg: Image.Image, checker: Any,
                 earlier: list[Image.Image], label: str | None) -> tuple[Image.Image, int, bool]:
        """Check one generated background; regenerate a failing one with a retry seed (up to
        ``checks.retries`` times), then keep it with a warning or drop it (``checks.on_fail``).
        Returns (background, the seed that made it, keep?). The result goes into the notes."""
        cfg = self.config.checks
        old = prep.background if prep.background is not None else prep.image  # its real pixels: ``known``
        seed, tries = request.seed, 0
        while True:
            result = prep.timed("checks", lambda: checker.check(prep.image, prep.mask, old, prep.known, bg, earlier))
            if result.passed or tries >= cfg.retries:
                break
            tries += 1
            seed = retry_seed(request.seed, tries)
            bg = prep.timed("generate", lambda: _rgb_at(self.generator(replace(request, seed=seed)), prep.image.size))
        record = {**result.to_dict(), "tries": tries + 1, "seed": seed}
        keep = result.passed or cfg.on_fail == "keep"
        if not result.passed:
            record["kept"] = keep
            msg = (f"variant seed {request.seed}: background failed {', '.join(result.failed)} after {tries + 1} "
                   f"tries; {'kept' if keep else 'dropped'}")
            prep.warnings.append(msg)
            log.warning("%s: %s", label, msg) if label else log.warning(msg)
        prep.notes[f"checks.seed{seed}"] = record
        if keep:
            earlier.append(bg.resize((64, 64), Image.Resampling.BOX))
        return bg, seed, keep

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
        generative = gen.generative
        described = result.backends.get("generate", {})
        extra = dict(described.get("a1111") or {}) if generative else {}
        suffix = extra.pop("prompt_suffix", "")  # LoRA tags, as A1111 writes them: <lora:name:scale>
        parameters = a1111_parameters(
            result.prompt.positive + suffix, result.prompt.negative,
            steps=described.get("steps") if generative else None,
            sampler=described.get("sampler") if generative else None,
            cfg_scale=described.get("cfg_scale") if generative else None,
            seed=variant.seed, size=(described.get("size") if generative else None) or result.image.size,
            model=described.get("model"), extra=extra or None,
        )
        background = gen.background_source_type or (
            "trainedAlgorithmicMedia" if generative else "algorithmicMedia")
        composite = "compositeWithTrainedAlgorithmicMedia" if generative else "compositeSynthetic"
        return {"parameters": parameters, "background": background, "composite": composite}


@dataclass
class Prepared:
    """What steps 1-4 made of one image; the variants are made from it (see Pipeline.variants)."""

    image: Image.Image
    source: dict[str, Any] = field(default_factory=dict)
    mask: Image.Image | None = None
    background: Image.Image | None = None  # the clean (inpainted) background
    known: Image.Image | None = None  # 255 where the background pixels are real
    caption: str = ""
    prompt: Prompt = field(default_factory=lambda: Prompt("", ""))
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    progress: Optional[StageProgress] = None

    def timed(self, stage: str, fn: Callable[[], Any]) -> Any:
        progress = self.progress or (lambda s, i, n: None)
        progress(stage, 0, 1)
        t0 = time.perf_counter()
        try:
            value = fn()
        except BackdropError:
            raise
        except Exception as exc:  # a backend bug or runtime failure: one line, stage named
            raise GenerationError(f"{stage} failed ({type(exc).__name__}: {exc})") from exc
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t0
        progress(stage, 1, 1)
        return value


def skipped_stages(config: PipelineConfig, generator: Any) -> dict[str, str]:
    """Stages whose output nobody reads: caption and refine when the prompt is fixed or the
    generator ignores it. Maps stage -> reason (recorded in run.json and the manifest)."""
    if not generator.uses_prompt:
        why = f"the {generator.name or 'chosen'} generator does not read a prompt"
        return {"caption": why, "refine": why}
    if config.prompt is not None:
        return {"caption": "fixed prompt", "refine": "fixed prompt"}
    return {}


def _batch_size(gen: Any, cfg: PipelineConfig) -> int:
    if not gen.batched:
        return 1
    return cfg.generate.batch_size or int(gen.max_batch())


def resolve_auto(config: PipelineConfig, skip: dict[str, str] | None = None) -> tuple[PipelineConfig, list[str]]:
    """Replace the "auto" backends by what is present here; return the one-line notices to show.
    Stages in ``skip`` are left as they are (and say nothing)."""
    notices: list[str] = []
    skip = skip or {}
    if config.segment.backend == "auto" and "segment" not in skip:
        found = _first_in_store(AUTO_SEGMENT_MODELS) if has_module("rembg") and has_module("onnxruntime") else None
        if found:
            config = replace(config, segment=replace(config.segment, backend="rembg", model=found))
        else:
            config = replace(config, segment=replace(config.segment, backend="classical"))
            notices.append(
                "segment: ISNet is not installed, using the classical segmenter; for better masks run "
                f"`pip install 'backdrop[segment]'` and `backdrop models pull {AUTO_SEGMENT_MODELS[0]}`"
            )
    if config.refine.backend == "auto" and "refine" not in skip:
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


def known_background(mask: Image.Image, dilate: int) -> Image.Image:
    """255 where the background pixels are real: outside the (dilated) hole the inpainter filled."""
    from .inpaint.opencv import hole_mask

    return Image.fromarray(255 - np.asarray(hole_mask(mask, dilate)), "L")


def _rgb_at(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise GenerationError(f"generate backend returned {type(image).__name__}, not an image")
    image = image.convert("RGB")
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _version() -> str:
    from .version import __version__

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
