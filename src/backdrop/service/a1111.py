"""The AUTOMATIC1111-compatible subset (``/sdapi/v1/...``), on the same job queue.

Existing A1111 clients work unchanged for these routes: A1111's field names, base64 images,
and A1111's ``parameters`` text in every PNG. Each request is a job on the queue (it shows in
``/v1/jobs``, survives a restart, and is cancelled by ``/sdapi/v1/interrupt``); the route waits
for it, as A1111 does, and answers with its images.

    POST /sdapi/v1/txt2img     prompt, negative_prompt, seed (-1: drawn), steps, cfg_scale, width, height,
                               batch_size, n_iter, sampler_name, override_settings.sd_model_checkpoint
    POST /sdapi/v1/img2img     + init_images[0], denoising_strength, mask (white = repaint; every other
                               pixel is the input's own, byte for byte), inpainting_mask_invert
    GET  /sdapi/v1/progress    progress of the newest running image job (0..1), A1111's shape
    POST /sdapi/v1/interrupt   cancels the running image jobs (their finished images are returned)
    GET  /sdapi/v1/sd-models   the server's model (--sd-model); GET/POST /sdapi/v1/options: its name
    POST /sdapi/v1/png-info    {"image": base64} -> {"info": parameters text, "items": {...}}

Fields A1111 has and backdrop does not use (hires fix, restore faces, scripts, ...) are accepted
and ignored; a value backdrop cannot honour (an unknown sampler, a model not served) is a 422.
"""

import asyncio
import base64
import binascii
import json
import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..jobs.queue import FINAL, JobQueue
from .errors import ApiError

IMAGE_KINDS = ("txt2img", "img2img")


def samplers() -> dict[str, str]:
    """A1111 sampler name -> backdrop scheduler name (both spellings of each accepted)."""
    from ..generate.diffusion import A1111_SAMPLERS, SCHEDULERS

    out = {}
    for name, cls in SCHEDULERS.items():
        if cls is not None:
            out[A1111_SAMPLERS.get(cls, name)] = name
            out[name] = name
    out["Default"] = out["default"] = "default"
    out["PNDM"] = "pndm"
    return out


def router(settings: Any, queue: JobQueue) -> APIRouter:
    r = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111-compatible"])
    model = settings.sd_model or _default_model()

    def model_title() -> str:
        return Path(model).name if Path(model).exists() else model

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError as exc:
            raise ApiError(422, f"body: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ApiError(422, "body: expected a JSON object")
        return data

    def params_of(data: dict[str, Any], kind: str) -> dict[str, Any]:
        def num(name: str, default: Any, cast: Any, lo: float, hi: float) -> Any:
            v = data.get(name, default)
            if v is None:
                return None
            try:
                if isinstance(v, bool):
                    raise ValueError
                v = cast(v)
            except (TypeError, ValueError):
                raise ApiError(422, f"{name}: expected a number, got {json.dumps(v)[:40]}", option=name) from None
            if not lo <= v <= hi:
                raise ApiError(422, f"{name}: expected {lo:g} to {hi:g}, got {v}", option=name)
            return v

        sampler = data.get("sampler_name") or data.get("sampler_index") or data.get("scheduler") or "default"
        table = samplers()
        if sampler not in table:
            raise ApiError(422, f"sampler_name: {sampler!r} is not available; choose one of: "
                                f"{', '.join(sorted(k for k in table if k[0].isupper()))}", option="sampler_name")
        wanted = (data.get("override_settings") or {}).get("sd_model_checkpoint")
        if wanted and wanted not in (model, model_title()) and wanted.split(" [")[0] not in (model, model_title()):
            raise ApiError(422, f"override_settings.sd_model_checkpoint: {wanted!r} is not served here; "
                                f"this server has {model_title()!r} (see /sdapi/v1/sd-models)",
                           option="sd_model_checkpoint")
        seed = num("seed", -1, int, -1, 2**32 - 1)
        for name in ("prompt", "negative_prompt"):
            if not isinstance(data.get(name, ""), str):
                raise ApiError(422, f"{name}: expected a string", option=name)
        cfg = data.get("cfg_scale")
        out = {"prompt": data.get("prompt", ""), "negative_prompt": data.get("negative_prompt", ""),
               "seed": secrets.randbelow(2**32) if seed == -1 else seed,
               "steps": num("steps", None, int, 1, 150), "cfg_scale": None if cfg is None else num("cfg_scale", None, float, 0, 30),
               "width": num("width", 512, int, 64, 4096), "height": num("height", 512, int, 64, 4096),
               "batch_size": num("batch_size", 1, int, 1, 64), "n_iter": num("n_iter", 1, int, 1, 100),
               "scheduler": table[sampler], "model": model, "device": settings.sd_device}
        if out["batch_size"] * out["n_iter"] > 256:
            raise ApiError(422, "batch_size x n_iter: at most 256 images per request", option="batch_size")
        if kind == "img2img":
            out["denoising_strength"] = num("denoising_strength", 0.75, float, 0, 1)
            out["inpainting_mask_invert"] = bool(num("inpainting_mask_invert", 0, int, 0, 1))
        return out

    def decode(name: str, value: Any) -> bytes:
        if not isinstance(value, str) or not value:
            raise ApiError(422, f"{name}: expected a base64 image", option=name)
        if value.startswith("data:"):
            value = value.split(",", 1)[-1]
        try:
            data = base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError):
            raise ApiError(422, f"{name}: not valid base64", option=name) from None
        if len(data) > settings.max_file_bytes:
            raise ApiError(413, f"{name}: larger than the limit of {settings.max_file_bytes} bytes", option=name)
        return data

    def submit(kind: str, params: dict[str, Any], images: dict[str, bytes]) -> str:
        from PIL import Image

        from . import uploads

        job_id = queue.new_id()
        folder = queue.job_dir(job_id)
        try:
            if images:
                (folder / "input").mkdir(parents=True)
                for name, data in images.items():
                    raw = folder / "input" / f"{name}.upload"
                    raw.write_bytes(data)
                    try:
                        with Image.open(raw) as im:
                            if im.size[0] * im.size[1] > settings.max_pixels:
                                raise ApiError(413, f"{name}: more pixels than the limit of {settings.max_pixels}")
                            im.load()
                            im.save(folder / "input" / f"{name}.png")
                    except ApiError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - anything Pillow cannot read
                        raise ApiError(422, f"{name}: not a readable image ({type(exc).__name__})", option=name) from None
                    raw.unlink()
            return queue.submit(kind, params, job_id=job_id).id
        except BaseException:
            uploads.remove_tree(folder)
            raise

    async def wait_and_answer(job_id: str, request_params: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        while True:
            rec = await run_in_threadpool(queue.get, job_id)
            if rec.state in FINAL:
                break
            if await request_is_gone(request_params):
                break
            await asyncio.sleep(0.1)
        if rec.state == "failed":
            raise ApiError(500 if (rec.error or "").startswith("unexpected") else 422, rec.error or "failed")
        images, infotexts, seeds = await run_in_threadpool(read_images, queue, job_id)
        info = {"prompt": params["prompt"], "all_prompts": [params["prompt"]] * len(images),
                "negative_prompt": params["negative_prompt"], "all_negative_prompts": [params["negative_prompt"]] * len(images),
                "seed": params["seed"], "all_seeds": seeds, "subseed": -1, "all_subseeds": [-1] * len(images),
                "width": params["width"], "height": params["height"], "sampler_name": params["scheduler"],
                "cfg_scale": params["cfg_scale"], "steps": params["steps"], "batch_size": params["batch_size"],
                "sd_model_name": model_title(), "infotexts": infotexts, "job_timestamp": str(int(rec.created)),
                "backdrop_job": job_id, "interrupted": rec.state == "cancelled"}
        if request_params.get("send_images") is False:  # A1111: the images stay on the server (the job's files)
            images = []
        return {"images": images, "parameters": request_params, "info": json.dumps(info)}

    async def request_is_gone(_: Any) -> bool:
        return False  # A1111 keeps generating when a client goes; so does this (the job is on the queue)

    @r.post("/txt2img", summary="A1111 txt2img: waits for the job, answers base64 PNGs")
    async def txt2img(request: Request) -> dict[str, Any]:
        data = await body(request)
        params = params_of(data, "txt2img")
        job_id = await run_in_threadpool(submit, "txt2img", params, {})
        return await wait_and_answer(job_id, data, params)

    @r.post("/img2img", summary="A1111 img2img (with mask: pixels outside it kept exactly)")
    async def img2img(request: Request) -> dict[str, Any]:
        data = await body(request)
        params = params_of(data, "img2img")
        inits = data.get("init_images") or []
        if not isinstance(inits, list) or not inits:
            raise ApiError(422, "init_images: expected a list with one base64 image", option="init_images")
        images = {"init": decode("init_images", inits[0])}
        if data.get("mask"):
            images["mask"] = decode("mask", data["mask"])
        params["mask"] = "mask" in images
        job_id = await run_in_threadpool(submit, "img2img", params, images)
        shown = {k: v for k, v in data.items() if k not in ("init_images", "mask")}
        return await wait_and_answer(job_id, shown, params)

    @r.get("/progress", summary="Progress of the newest running image job, in A1111's shape")
    def progress(skip_current_image: bool = False) -> dict[str, Any]:
        running = [j for j in queue.list(state="running", limit=50) if j.kind in IMAGE_KINDS]
        queued = [j for j in queue.list(state="queued", limit=1000) if j.kind in IMAGE_KINDS]
        job = running[0] if running else None
        frac = (job.done / job.total) if job and job.total else 0.0
        return {"progress": frac, "eta_relative": 0.0,
                "state": {"skipped": False, "interrupted": bool(job and job.cancel), "job": job.id if job else "",
                          "job_count": len(running) + len(queued), "job_timestamp": str(int(job.created)) if job else "0",
                          "job_no": job.done if job else 0, "sampling_step": 0, "sampling_steps": 0},
                "current_image": None, "textinfo": None if job is None else f"job {job.id}: {job.done}/{job.total}"}

    @r.post("/interrupt", summary="Cancel the running image jobs (what they made is returned)")
    def interrupt() -> dict[str, Any]:
        for j in queue.list(state="running", limit=50):
            if j.kind in IMAGE_KINDS:
                queue.cancel(j.id)
        return {}

    @r.post("/skip", summary="As interrupt (backdrop has no per-image skip)")
    def skip() -> dict[str, Any]:
        return interrupt()

    @r.get("/sd-models", summary="The model this server generates with")
    def sd_models() -> list[dict[str, Any]]:
        return [{"title": model_title(), "model_name": Path(model_title()).stem, "hash": None, "sha256": None,
                 "filename": model, "config": None}]

    @r.get("/options", summary="The options A1111 clients read (the model served)")
    def options() -> dict[str, Any]:
        return {"sd_model_checkpoint": model_title(), "samples_format": "png"}

    @r.post("/options", summary="Accepted; a model other than the one served is a 422")
    async def set_options(request: Request) -> dict[str, Any]:
        data = await body(request)
        wanted = data.get("sd_model_checkpoint")
        if wanted and wanted.split(" [")[0] not in (model, model_title()):
            raise ApiError(422, f"sd_model_checkpoint: {wanted!r} is not served here; this server has "
                                f"{model_title()!r}", option="sd_model_checkpoint")
        return {}

    @r.get("/samplers", summary="Samplers by A1111 name")
    def sampler_list() -> list[dict[str, Any]]:
        return [{"name": k, "aliases": [v], "options": {}} for k, v in samplers().items() if k[0].isupper()]

    @r.post("/png-info", summary="The A1111 parameters text of a PNG (base64)")
    async def png_info(request: Request) -> dict[str, Any]:
        from ..metadata import read_metadata

        data = await body(request)
        raw = decode("image", data.get("image"))
        try:
            meta = await run_in_threadpool(read_metadata, raw, max_text=1 << 16, max_total=1 << 20)
        except Exception as exc:  # noqa: BLE001 - not an image we can read
            raise ApiError(422, f"image: not a readable PNG/JPEG ({type(exc).__name__})", option="image") from None
        parsed = meta.get("parsed") or {}
        items = {k: v for k, v in (meta.get("text") or {}).items() if isinstance(v, str)}
        if meta.get("parameters"):
            items["parameters"] = meta["parameters"]
        return {"info": meta.get("parameters") or "", "items": items,
                "parameters": {"Prompt": parsed.get("prompt", ""), "Negative prompt": parsed.get("negative", ""),
                               **(parsed.get("fields") or {})}}

    return r


def read_images(queue: JobQueue, job_id: str) -> tuple[list[str], list[str], list[int]]:
    """The job's images as base64 PNGs, their A1111 texts and seeds, in order."""
    from ..metadata import read_metadata

    out = queue.job_dir(job_id) / "out"
    images, texts, seeds = [], [], []
    for f in sorted(out.glob("[0-9]*-*.png")):
        data = f.read_bytes()
        images.append(base64.b64encode(data).decode())
        texts.append(read_metadata(data).get("parameters") or "")
        seeds.append(int(f.stem.split("-")[1]))
    return images, texts, seeds


def _default_model() -> str:
    import os

    return os.environ.get("BACKDROP_STUDIO_MODEL", "").strip() or _diffusion_default()


def _diffusion_default() -> str:
    from ..generate.diffusion import DEFAULT_MODEL

    return DEFAULT_MODEL
