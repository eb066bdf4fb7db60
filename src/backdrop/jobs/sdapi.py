"""Text-to-image and image-to-image jobs (what the A1111-compatible routes queue).

A job's params (checked by the service, all JSON): ``prompt``, ``negative_prompt``, ``seed``
(resolved, never -1), ``steps``, ``cfg_scale`` (None: the model profile's), ``width``,
``height``, ``batch_size``, ``n_iter``, ``scheduler`` (a backdrop scheduler name), ``model``,
``device``; img2img adds ``denoising_strength``, ``mask`` (whether ``input/mask.png`` exists)
and ``inpainting_mask_invert``; its picture is ``input/init.png``.

Image *i* (0-based over all iterations) has seed ``seed + i``, as in AUTOMATIC1111. Each image
is written as it is made through the write protocol (``out/00000-SEED.png``, with A1111
``parameters`` and backdrop's record), so a cancel keeps what is done and a resumed job makes
only the missing ones. With a mask (white = repaint, A1111's convention), every pixel outside
it is the input's own, byte for byte.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from ..errors import BackdropError
from .queue import JobQueue, JobRecord

log = logging.getLogger(__name__)

KINDS = ("txt2img", "img2img")


class Generators:
    """Loaded diffusion generators kept across jobs (the latest one per kind); the scheduler is
    swapped in place, as the studio does, instead of loading the model again."""

    def __init__(self) -> None:
        self._gens: dict[str, tuple[str, Any, Any]] = {}

    def get(self, kind: str, config: Any) -> Any:
        from ..registry import require

        key = json.dumps({"model": config.model, "device": config.device, "kind": kind}, sort_keys=True)
        held = self._gens.get(kind)
        if held is None or held[0] != key:
            self._gens.pop(kind, None)
            from ..generate.diffusion import Img2ImgGenerator, Txt2ImgGenerator

            gen = (Txt2ImgGenerator if kind == "txt2img" else Img2ImgGenerator)(replace(config, scheduler="default"))
            pipe = gen.load()
            held = (key, gen, pipe.scheduler)
            self._gens[kind] = held
        _, gen, model_scheduler = held
        from ..generate.diffusion import SCHEDULERS

        cls_name = SCHEDULERS[config.scheduler]
        pipe = gen.load()
        if cls_name is None:
            pipe.scheduler = model_scheduler
        elif type(pipe.scheduler).__name__ != cls_name:
            diffusers = require("diffusers", "diffusion")
            pipe.scheduler = getattr(diffusers, cls_name).from_config(model_scheduler.config)
        gen.config = replace(gen.config, steps=config.steps, guidance=config.guidance, scheduler=config.scheduler,
                             strength=config.strength, short_side=config.short_side)
        return gen


def run_images(queue: JobQueue, rec: JobRecord, worker_id: str, gens: Optional[Generators] = None) -> str:
    """Run a claimed txt2img/img2img job to its end; returns (and records) its final state."""
    from ..config import GenerateConfig
    from ..metadata import a1111_parameters, encode_image
    from ..outputs import OutputSet, fingerprint
    from ..types import Prompt

    p = rec.params
    folder = queue.job_dir(rec.id)
    total = int(p["batch_size"]) * int(p["n_iter"])
    queue.progress(rec.id, 0, total)
    written = 0
    try:
        size = (int(p["width"]), int(p["height"]))
        cfg = GenerateConfig(backend="sd-txt2img" if rec.kind == "txt2img" else "sd-img2img", model=p["model"],
                             device=p.get("device") or "auto", steps=p.get("steps"), guidance=p.get("cfg_scale"),
                             scheduler=p.get("scheduler") or "default",
                             strength=float(p.get("denoising_strength", 0.75)),
                             short_side=_round8(min(size)) if rec.kind == "img2img" else None)
        gen = (gens or Generators()).get(rec.kind, cfg)
        prompt = Prompt(p.get("prompt") or "", p.get("negative_prompt") or "")
        init = mask = None
        if rec.kind == "img2img":
            with Image.open(folder / "input" / "init.png") as im:
                init = im.convert("RGB")
            if p.get("mask"):
                with Image.open(folder / "input" / "mask.png") as im:
                    mask = im.convert("L").resize(init.size, Image.NEAREST)
                if p.get("inpainting_mask_invert"):
                    mask = Image.eval(mask, lambda v: 255 - v)
            size = init.size
        seed0 = int(p["seed"])
        with OutputSet.open(folder / "out", "run", seed=seed0) as out:
            with out.item("images", fingerprint({k: v for k, v in p.items() if k != "device"})) as w:
                w.begin({"kind": rec.kind, "seed": seed0})
                for i in range(total):
                    if queue.should_stop(rec.id):
                        break
                    part = f"i{i}"
                    if not w.has(part):
                        seed = seed0 + i
                        if init is None:
                            image = gen.generate(prompt, seed, size[0], size[1], 1)[0]
                        else:
                            image = _img2img(gen, init, mask, prompt, seed)
                        described = dict(gen.describe())
                        extra = dict(described.get("a1111") or {})
                        suffix = extra.pop("prompt_suffix", "")
                        if rec.kind == "img2img":
                            extra["Denoising strength"] = cfg.strength
                            if mask is not None:
                                extra["Mask"] = "kept outside the mask, pixel for pixel"
                        params = a1111_parameters(prompt.positive + suffix, prompt.negative,
                                                  steps=described.get("steps"), sampler=described.get("sampler"),
                                                  cfg_scale=described.get("cfg_scale"), seed=seed,
                                                  size=image.size, model=Path(str(p["model"])).name,
                                                  extra=extra or None)
                        record = {"generator": described, "seed": seed, "kind": rec.kind, "job": rec.id}
                        data = encode_image(image, "PNG", parameters=params, record=record,
                                            source_type="trainedAlgorithmicMedia" if mask is None
                                            else "compositeWithTrainedAlgorithmicMedia")
                        w.write_part(part, {f"{i:05d}-{seed}.png": data},
                                     {"manifest": {"image": f"{i:05d}-{seed}.png", "seed": seed}, "seed": seed,
                                      "parameters": params})
                        written += 1
                    queue.progress(rec.id, i + 1)
                else:
                    w.finish({"images": total})
    except BackdropError as exc:
        queue.finish(rec.id, "failed", error=str(exc), worker_id=worker_id)
        return "failed"
    except Exception as exc:  # noqa: BLE001 - a job's bug must not take the worker down
        log.exception("job %s", rec.id)
        queue.finish(rec.id, "failed", error=f"unexpected {type(exc).__name__}: {exc}", worker_id=worker_id)
        return "failed"
    state = "cancelled" if queue.should_stop(rec.id) and queue.get(rec.id).done < total else "done"
    queue.finish(rec.id, state, summary={"images": written, "total": total, "seed": int(p["seed"])},
                 worker_id=worker_id)
    return state


def _round8(v: int) -> int:
    return max(64, int(v) // 8 * 8)


def _img2img(gen: Any, init: Image.Image, mask: Optional[Image.Image], prompt: Any, seed: int) -> Image.Image:
    """One img2img picture; with a mask, the pixels outside it are the input's own."""
    from ..types import GenerateRequest

    full = Image.new("L", init.size, 255)
    req = GenerateRequest(image=init, mask=mask if mask is not None else Image.new("L", init.size, 0),
                          background=init, known=full, prompt=prompt, seed=seed)
    out = gen(req)
    if mask is None:
        return out
    repaint = np.asarray(mask) >= 128
    merged = np.where(repaint[..., None], np.asarray(out.convert("RGB")), np.asarray(init))
    return Image.fromarray(merged.astype(np.uint8), "RGB")
