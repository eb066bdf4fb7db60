"""The one adapter from a queued job's options to a backdrop run.

``check_params(command, params)`` validates what a client sent, before anything is queued:
option names are the CLI's long option names with underscores (``sd_model`` for ``--sd-model``),
values are converted to their config field's type, then checked by the same
:func:`~backdrop.options.build_config`, :class:`~backdrop.config.PipelineConfig` and
:class:`~backdrop.job.Job` code the CLI uses.
An unknown or bad option is a :class:`JobParamsError` naming it (the service answers 422).

``run_job(queue, record, worker_id, models=...)`` runs a claimed job on the local engine,
reporting progress to the queue, stopping between items once the job is cancelled, and ends it
``done`` / ``failed`` / ``cancelled``. The output is an ordinary backdrop output set in the job's
folder, so a job run again after a crash resumes (nothing written twice).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import BackdropError, ConfigError
from .queue import JobQueue, JobRecord

log = logging.getLogger(__name__)

COMMANDS = ("run", "augment")

# option (CLI long name, underscores) -> (stage, config field); None stage: a top-level config field
_STAGE_OPTIONS: dict[str, tuple[Optional[str], str]] = {
    "variants": (None, "variants"), "seed": (None, "seed"), "prompt": (None, "prompt"),
    "negative": (None, "negative"), "max_pixels": (None, "max_pixels"),
    "segmenter": ("segment", "backend"), "seg_model": ("segment", "model"),
    "alpha_matting": ("segment", "alpha_matting"),
    "inpainter": ("inpaint", "backend"),
    "captioner": ("caption", "backend"), "caption_model": ("caption", "model"),
    "refiner": ("refine", "backend"), "style": ("refine", "style"), "llm_model": ("refine", "model"),
    "generator": ("generate", "backend"), "sd_model": ("generate", "model"), "steps": ("generate", "steps"),
    "guidance": ("generate", "guidance"), "scheduler": ("generate", "scheduler"),
    "strength": ("generate", "strength"), "short_side": ("generate", "short_side"),
    "lora": ("generate", "lora"), "tiny_vae": ("generate", "tiny_vae"), "profile": ("generate", "profile"),
    "batch_size": ("generate", "batch_size"), "runtime": ("generate", "runtime"),
    "openvino_precision": ("generate", "openvino_precision"), "vae_tiling": ("generate", "vae_tiling"),
    "backgrounds": ("generate", "backgrounds"),
    "harmonize": ("composite", "harmonize"), "feather": ("composite", "feather"),
}
_DEVICE = ("segment", "caption", "generate")  # "device" applies to every model stage, as on the CLI
# Job options (augment): CLI long name -> Job field
_JOB_OPTIONS = {"format": "format", "splits": "splits", "copy_other_splits": "copy_other_splits",
                "include_originals": "include_originals", "image_format": "image_format", "quality": "quality",
                "save_masks": "save_masks", "box_fallback": "box_fallback", "box_cover": "box_min_cover"}
# options that name a file or folder on the server: only under an allowed root (the service checks)
PATH_OPTIONS = ("backgrounds",)
# the service's own keys, not CLI options
_SERVICE_KEYS = ("command", "source")


class JobParamsError(ConfigError):
    """A job's options are invalid; ``option`` names the one at fault."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(message if message.startswith((f"{option}:", f"{option} (")) else f"{option}: {message}")


def allowed_options(command: str) -> list[str]:
    names = [n for n in _STAGE_OPTIONS if command == "run" or n not in ("seg_model", "alpha_matting")]
    names += ["device", "preset"]
    if command == "augment":
        names += list(_JOB_OPTIONS)
    return sorted(names)


def _field_type(command: str, name: str) -> Any:
    """The type an option's value must have: its config field's (or Job field's) annotation."""
    import typing

    from ..config import PipelineConfig
    from ..job import Job

    if name in _STAGE_OPTIONS:
        stage, fld = _STAGE_OPTIONS[name]
        owner = PipelineConfig if stage is None else typing.get_type_hints(PipelineConfig)[stage]
        return typing.get_type_hints(owner).get(fld, str)
    if name in _JOB_OPTIONS:
        return typing.get_type_hints(Job).get(_JOB_OPTIONS[name], str)
    return str  # device, preset: names, checked by the config


def _base(tp: Any) -> tuple[Any, bool]:
    """(the plain type, whether it is a list) of an annotation such as Optional[tuple[str, ...]];
    a Literal's choices are strings (the config checks them)."""
    import typing

    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if args else str
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return _base(inner[0] if inner else str)[0], True
    if origin is typing.Literal:
        return type(typing.get_args(tp)[0]), False
    return (tp if tp in (bool, int, float) else str), False


def _one(name: str, tp: Any, value: Any) -> Any:
    def bad(expected: str) -> JobParamsError:
        return JobParamsError(name, f"expected {expected}, got {json.dumps(value, default=str)[:80]}")

    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise bad("true or false")
    if tp is int:
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise bad("an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise bad("an integer") from None
    if tp is float:
        if isinstance(value, bool):
            raise bad("a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad("a number") from None
    if isinstance(value, (dict, list, bool)) or value is None:
        raise bad("a string")
    return str(value)


def _convert(command: str, name: str, value: Any) -> Any:
    """``value`` converted to the option's type (a bad one names the option)."""
    if value is None:
        return None
    tp, many = _base(_field_type(command, name))
    if name == "splits" and isinstance(value, str):
        return value  # "train,val", as on the CLI
    if many:
        return [_one(name, tp, v) for v in (value if isinstance(value, list) else [value])]
    if isinstance(value, list):
        raise JobParamsError(name, f"expected a single value, got {json.dumps(value)[:80]}")
    return _one(name, tp, value)


def check_params(command: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate a client's options for ``command``; returns them converted (JSON-safe). Builds
    the config and the Job the run will use, so a bad value fails here, not in the worker."""
    if command not in COMMANDS:
        raise JobParamsError("command", f"expected one of {', '.join(COMMANDS)}, got {command!r}")
    if not isinstance(params, dict):
        raise JobParamsError("params", "expected a JSON object of options")
    allowed = allowed_options(command)
    clean: dict[str, Any] = {}
    for name, value in params.items():
        if name in _SERVICE_KEYS:
            continue
        if name not in allowed:
            raise JobParamsError(name, f"unknown option for {command}; known options: {', '.join(allowed)}")
        v = _convert(command, name, value)
        clean[name] = list(v) if isinstance(v, tuple) else v
    _check_backends(clean)
    build(command, clean, inputs=("input",), out="out")  # config + Job checks; nothing is written
    return clean


def _check_backends(params: dict[str, Any]) -> None:
    """A backend name no registry knows: the registry's own message (it lists the valid names)."""
    from importlib import import_module

    for option, (module, attr, extra) in {"segmenter": ("segment", "SEGMENTERS", ("auto",)),
                                          "inpainter": ("inpaint", "INPAINTERS", ()),
                                          "captioner": ("caption", "CAPTIONERS", ()),
                                          "refiner": ("refine", "REFINERS", ("auto",)),
                                          "generator": ("generate", "GENERATORS", ())}.items():
        name = params.get(option)
        if name is None or name in extra:
            continue
        registry = getattr(import_module(f"backdrop.{module}"), attr)
        try:
            registry.check_name(name)
        except BackdropError as exc:
            raise JobParamsError(option, str(exc)) from None


def build(command: str, params: dict[str, Any], *, inputs: tuple[str, ...], out: str) -> Any:
    """The :class:`~backdrop.job.Job` for these (checked) options."""
    from ..job import Job
    from ..options import build_config

    stages: dict[str, dict[str, Any]] = {s: {} for s in ("segment", "inpaint", "caption", "refine", "generate",
                                                          "composite")}
    top: dict[str, Any] = {}
    for name, value in params.items():
        if name in _STAGE_OPTIONS:
            stage, fld = _STAGE_OPTIONS[name]
            if name == "lora" and value is not None:
                value = tuple(value)
            (top if stage is None else stages[stage])[fld] = value
        elif name == "device":
            for s in _DEVICE:
                stages[s]["device"] = value
    if command == "augment":
        top.setdefault("variants", 3)
        if stages["generate"].get("backend") is None:  # as `backdrop augment`: new backgrounds by default
            from ..generate import AUGMENT_DEFAULT

            stages["generate"]["backend"] = ("pool" if stages["generate"].get("backgrounds") else
                                             "sd-txt2img" if stages["generate"].get("model") else AUGMENT_DEFAULT)
    try:
        cfg = build_config(config_file=None, preset=params.get("preset"), stages=stages, **top)
    except BackdropError as exc:
        raise JobParamsError(_blame(str(exc), params), str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise JobParamsError(_blame(str(exc), params), str(exc)) from None
    opts: dict[str, Any] = {}
    if command == "augment":
        for name, fld in _JOB_OPTIONS.items():
            if name in params and params[name] is not None:
                v = params[name]
                if name == "splits":
                    v = tuple(x.strip() for x in (v.split(",") if isinstance(v, str) else v) if str(x).strip())
                opts[fld] = v
    kind = "dataset" if command == "augment" else "run"
    try:
        from_options = getattr(Job, "from_options", None)
        if from_options is not None:
            return from_options(cfg, out, kind=kind, inputs=tuple(inputs), **opts)
        return Job(config=cfg, out=out, kind=kind, inputs=tuple(inputs), **opts)
    except (BackdropError, TypeError, ValueError) as exc:
        field_name = getattr(exc, "option", None)  # the Job's own check names its field
        name = {f: o for o, f in _JOB_OPTIONS.items()}.get(field_name, field_name)
        raise JobParamsError(name or _blame(str(exc), params), str(exc)) from None


def _blame(message: str, params: dict[str, Any]) -> str:
    """The option an error message is about (config errors name the config field)."""
    for name, (stage, fld) in _STAGE_OPTIONS.items():
        if name in params and (f"{stage}.{fld}" in message or (stage is None and fld in message)):
            return name
    for name in params:
        if name in message:
            return name
    return "params"


class ModelCache:
    """Pipelines kept loaded across jobs: one per distinct config (the seed aside), the latest few."""

    def __init__(self, keep: int = 1):
        self.keep = keep
        self._pipes: dict[str, Any] = {}

    def get(self, config: Any, skip: dict[str, str]) -> Any:
        key = json.dumps({"config": replace(config, seed=None).to_dict(), "skip": skip}, sort_keys=True, default=str)
        pipe = self._pipes.pop(key, None)
        if pipe is None:
            from ..pipeline import Pipeline

            pipe = Pipeline.from_config(config, skip=skip).load()
        self._pipes[key] = pipe  # most recent last
        while len(self._pipes) > self.keep:
            self._pipes.pop(next(iter(self._pipes)))
        return pipe


def job_inputs(queue: JobQueue, rec: JobRecord) -> tuple[str, ...]:
    """Where the job reads: its server ``source`` (checked when it was submitted) or its uploads."""
    src = rec.params.get("source")
    if src:
        return (str(src),)
    folder = queue.job_dir(rec.id) / "input"
    if rec.kind == "augment":
        return (str(data_set_root(folder / "set")),)
    # the uploaded files one by one: output folders are named after the files, not "input/..."
    return tuple(sorted(str(p) for p in folder.iterdir() if p.is_file())) if folder.is_dir() else (str(folder),)


def data_set_root(folder: Path) -> Path:
    """An uploaded .zip often holds one top folder (``coco8/...``): the set is that folder."""
    if not folder.is_dir():
        return folder
    entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def out_dir(queue: JobQueue, job_id: str) -> Path:
    return queue.job_dir(job_id) / "out"


def run_job(queue: JobQueue, rec: JobRecord, worker_id: str, *, models: ModelCache | None = None,
            on_event: Optional[Callable[[str], None]] = None) -> str:
    """Run a claimed job to its end; returns its final state (also recorded in the queue)."""
    from ..engine.local import run_local
    from ..items import Worker, start

    params = {k: v for k, v in rec.params.items() if k not in _SERVICE_KEYS}
    done = 0
    failed: list[list[str]] = []

    def on_outcome(o: Any) -> None:
        nonlocal done
        done += 1
        if o.status in ("failed", "dropped"):
            failed.append([o.key, o.message])
        queue.progress(rec.id, done)

    def should_stop() -> bool:
        return queue.should_stop(rec.id)

    try:
        job = build(rec.kind, params, inputs=job_inputs(queue, rec), out=str(out_dir(queue, rec.id)))
        plan, _ = start(job, load=False)
        worker = None
        if plan.survey and plan.survey["augment"]:
            skip = {} if plan.survey["segment"] else {"segment": "every labelled image carries its masks"}
            pipe = (models or ModelCache(keep=0)).get(plan.job.config, skip)
            pipe.config = replace(pipe.config, seed=plan.job.base_seed)
            worker = Worker(plan.job, pipeline=pipe, out=plan.out, dataset=plan.dataset)
        queue.progress(rec.id, 0, plan.total())
        summary = run_local(plan.job, plan=plan, worker=worker, on_outcome=on_outcome, progress=False,
                            should_stop=should_stop)
    except BackdropError as exc:
        queue.finish(rec.id, "failed", error=str(exc), failed=failed, worker_id=worker_id)
        return "failed"
    except Exception as exc:  # noqa: BLE001 - a job's bug must not take the worker down
        log.exception("job %s", rec.id)
        queue.finish(rec.id, "failed", error=f"unexpected {type(exc).__name__}: {exc}", failed=failed,
                     worker_id=worker_id)
        return "failed"
    info = {"items": summary.total, "done": summary.done, "already_done": summary.skipped, "copied": summary.copied,
            "failed": len(summary.failed), "images": summary.images, "originals": summary.originals,
            "seconds": round(summary.seconds, 3), "base_seed": plan.job.base_seed}
    if summary.stopped:
        state, error = "cancelled", None
    elif summary.failed and not summary.done and not summary.skipped and not summary.copied:
        state, error = "failed", f"every item failed ({len(summary.failed)}); first: {summary.failed[0][1]}"
    else:
        state, error = "done", None
    queue.finish(rec.id, state, error=error, failed=[list(f) for f in summary.failed], summary=info,
                 worker_id=worker_id)
    return state
