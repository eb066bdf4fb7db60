"""The items layer: one item (a data-set image, or one image of ``backdrop run``) turned into
files. Load it, read its labels into a mask or box region, run the pipeline (the mask from the
labels, the cache or the segmenter), make its variants from its seeds, and write each one through
the output protocol (:mod:`backdrop.outputs`) as it is made.

Engines (:mod:`backdrop.engine`) only schedule items: :func:`start` gives them a plan and a
:class:`Worker`, and ``worker(task)`` does one item end to end. :class:`Pipeline` is the stage
pipeline (:mod:`backdrop.pipeline`) with ``save`` and ``process``, the writing of its results.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from .datasets.labels import box_mask, cover_boxes, segment_plan
from .errors import BackdropError, InputError, OutputError
from .images import load_image
from .job import Job, Outcome, Plan, Task
from .metadata import a1111_parameters, encode_image
from .outputs import OutputSet, io_error, sha256_bytes
from .pipeline import Pipeline as StagePipeline
from .pipeline import Prepared, StageProgress
from .runlog import capture
from .seeds import draw_seed, variant_seed
from .segment.itemmask import MaskCache

log = logging.getLogger(__name__)

_JPEG = {".jpg", ".jpeg"}


def start(job: Job, *, load: bool = True) -> tuple[Plan, Optional["Worker"]]:
    """Everything before the first image, in the order that wastes least: the source (surveyed
    once), the backends and models (a missing model fails once, before any output folder
    exists), then the output (opened, checked writable, base seed fixed). Returns the plan and,
    with ``load``, a worker holding the loaded pipeline (None when nothing is to be augmented)."""
    dataset = job.open_dataset() if job.kind == "dataset" else None
    survey = job.survey(dataset)
    for note in survey["notes"]:  # what the input listing did (a link followed, a file taken once): the plan
        log.info(note)
    if dataset is not None:
        found = f"{dataset.format} data set"
        if job.format == "auto":  # say what the layout was recognised as
            from .datasets import detect

            found = detect(Path(job.inputs[0]))[1]
        log.info("%s: %s: %d image(s) to augment (splits %s), %d to copy unchanged",
                 job.inputs[0], found, survey["augment"],
                 ",".join(sorted(job.augmented_splits(dataset))) or "none", survey["copy"])
        if not job.augmented_splits(dataset):  # an empty plan is something to act on
            log.warning("nothing to augment: --splits %s names none of the set's splits (%s)",
                        ",".join(job.splits), ", ".join(s or '""' for s in dataset.splits))
    pipe = None
    if load and survey["augment"]:
        skip = {} if survey["segment"] else {"segment": "every labelled image carries its masks"}
        pipe = Pipeline.from_config(job.config, skip=skip).load()
    plan = job.plan(dataset=dataset)
    plan.survey = survey
    worker = None
    if pipe is not None:
        pipe.config = replace(pipe.config, seed=plan.job.base_seed)
        worker = Worker(plan.job, pipeline=pipe, out=plan.out, dataset=dataset)
    if survey["augment"] and _needs_set(job):  # swap: the set's clean backgrounds, one first pass
        from .generate.donors import build

        build(plan, worker or Worker(plan.job, out=plan.out, dataset=dataset))
    return plan, worker


def _needs_set(job: Job) -> bool:
    from .generate import GENERATORS

    try:
        return GENERATORS.capability(job.config.generate.backend, "needs_set")
    except BackdropError:
        return False  # an unknown name fails later, with its own message


# -- the worker: one task -> files ---------------------------------------------------------------


class Worker:
    """Runs tasks of one job in this process: the pipeline is built and loaded once, lazily."""

    def __init__(self, job: Job, pipeline: Any = None, out: OutputSet | None = None, dataset: Any = None):
        self.job = job
        self._pipe = pipeline
        self._out = out
        self._dataset = dataset
        self.fingerprint = job.fingerprint()
        self.on_variant: Any = None  # called as on_variant(task, k, seconds since the task began)
        self.cache = MaskCache.for_job(job)
        self._bound = False  # generators that draw from the set (swap) get its donor store once

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            self._pipe = Pipeline.from_config(self.job.config).load()
        return self._pipe

    @property
    def out(self) -> OutputSet:
        if self._out is None:
            self._out = OutputSet.open(self.job.out, self.job.kind)
        return self._out

    @property
    def dataset(self) -> Any:
        if self._dataset is None and self.job.kind == "dataset":
            self._dataset = self.job.open_dataset()
        return self._dataset

    def close(self) -> None:
        if self._out is not None:
            self._out.close()

    def __call__(self, task: Task, on_progress: Any = None) -> Outcome:
        t0 = time.perf_counter()
        try:
            with self.out.item(task.key, self.fingerprint, overwrite=self.job.overwrite) as w:
                outcome = self._copy(task, w) if task.kind == "copy" else self._augment(task, w, on_progress)
        except OutputError:
            raise  # the disk: no point going on (the engine stops, what is done stays)
        except BackdropError as exc:
            msg = str(exc)
            outcome = Outcome(task.key, "failed", msg if task.path in msg or task.key in msg else f"{task.rel}: {msg}",
                              exit_code=exc.exit_code, error=exc)
        except OSError as exc:
            raise io_error(exc, getattr(exc, "filename", None) or self.job.out) from None
        outcome.seconds = time.perf_counter() - t0
        return outcome

    # -- copy (val/test splits: unchanged) ------------------------------------------------------
    def _copy(self, task: Task, w: Any) -> Outcome:
        if w.complete:
            return Outcome(task.key, "skipped")
        ds = self.dataset
        item = task.item
        if getattr(item, "error", None):
            raise InputError(item.error)
        w.begin({"source": task.rel, "copy": True})
        files = ds.passthrough(item)
        # the split's own index file (COCO JSON, metadata.jsonl) is copied whole by finalize()
        record = {"manifest": {"image": item.rel, "source": item.rel, "split": item.split, "variant": 0,
                               "copied": True}}
        if not w.has("copy"):
            w.write_part("copy", {rel: Path(src) for rel, src in files.items()}, record)
        w.finish({"copied": len(files)})
        return Outcome(task.key, "copied", written=0)

    # -- augment --------------------------------------------------------------------------------
    def _augment(self, task: Task, w: Any, on_progress: Any = None) -> Outcome:
        job = self.job
        n = job.config.variants
        if w.complete and (w.state.complete or {}).get("variants", 0) >= n:
            return Outcome(task.key, "skipped")
        item = task.item
        if item is not None and getattr(item, "error", None):
            raise InputError(item.error)
        info = {"source": task.rel, "base_seed": job.base_seed, "seed": task.seed,
                "generator": job.config.generate.backend}
        w.begin(info)
        missing = [k for k in range(1, n + 1) if not w.has(f"v{k}")]
        with capture() as captured:
            log.debug("input %s: %d variant(s) to make, seeds %s%s", task.path, len(missing),
                     [variant_seed(task.seed, k) for k in missing],
                     f" ({n - len(missing)} of {n} done by an earlier run)" if len(missing) < n else "")
            loaded = load_image(task.path, max_pixels=job.config.max_pixels)
            mask, region, boxes = self._label_masks(item, loaded.image.size)
            seg = None
            if mask is None and "segment" not in self.pipe.skipped:  # segment/itemmask: boxes, cache, record
                from .segment.itemmask import item_mask

                seg = item_mask(self.pipe.segmenter, self.pipe.config.segment, loaded.image, task.path,
                                boxes=boxes, region=region, cache=self.cache, box_prompt=job.box_prompt,
                                box_grow=job.box_grow, label=Path(task.path).name)
                mask = seg.mask
            prep = self.pipe.prepare(loaded, mask=mask, region=None if mask is not None else region,
                                     on_progress=on_progress, background=job.kind == "run" or job.save_masks)
            if seg is not None:
                seg.apply(prep)
            check = None
            if boxes:
                check, dropped = self._box_check(prep, boxes, item, seg.objects if seg is not None else None)
                if dropped:  # skipped: too little of a labelled object found
                    return Outcome(task.key, "dropped", dropped, exit_code=6)
            originals = 0
            if job.kind == "run":
                written = write_run_item(self.pipe, w, task.key, task.seed, prep,
                                         self._variants(task, prep, missing), captured.getvalue)
            else:
                written, originals = self._write_dataset(task, w, prep, missing, check)
        w.finish({"variants": n, "seed": task.seed})
        return Outcome(task.key, "done", written=written, originals=originals, resumed=n - len(missing),
                       timings={k: round(v, 4) for k, v in prep.timings.items()},
                       picks=[v for k, v in prep.notes.items() if k.startswith("pool.file.")])

    def _label_masks(self, item: Any, size: tuple[int, int]):
        """(mask, region, boxes) from the item's labels: masks are the foreground; boxes limit
        the segmenter's mask to them (grown by ``box_grow``)."""
        # the labels-aware rule, shared with `backdrop masks` and the training-loop transform
        fg, region, boxes = segment_plan(getattr(item, "labels", None), size, self.job.box_grow)
        if fg is not None:
            return Image.fromarray(np.where(fg, 255, 0).astype(np.uint8), "L"), None, None
        if region is None or not boxes:
            return None, None, None
        return None, Image.fromarray(np.where(region, 255, 0).astype(np.uint8), "L"), boxes

    def _box_check(self, prep: Any, boxes: list, item: Any, objects: Optional[list] = None) -> tuple[dict[str, Any], str]:
        """Each labelled box must be covered enough by the mask; else keep the whole box
        (``box_fallback="box"``, recorded; ``prep`` is updated) or skip the image. Box-prompted
        masks (``objects``, segment.boxes) decided that per object already: a box falls back only
        when nothing was found in it (its whole box is in the mask already). Returns the record and,
        for a skipped image, the one-line reason."""
        min_cover = 0.0 if objects is not None else self.job.box_min_cover
        covers, fallback, mm = cover_boxes(np.asarray(prep.mask), boxes, min_cover)
        if objects is not None:
            fallback = [i for i, o in enumerate(objects) if o["fallback"]]
        record = {"box_cover": covers, "box_fallback": fallback}
        if objects is not None:
            covers = [o["cover"] for o in objects]  # the mask's own cover, before any whole-box fallback
            if fallback:  # already whole boxes in the mask: counted, recorded
                prep.notes["box_fallbacks"] = len(fallback)
                if self.job.box_fallback != "skip":
                    return record, ""
        if fallback and self.job.box_fallback == "skip":
            return record, (f"{item.rel}: the mask covers too little of labelled object(s) {fallback} "
                            f"(coverage {[covers[i] for i in fallback]} < {self.job.box_min_cover}); skipped "
                            "(use --box-fallback box to keep whole boxes)")
        if fallback:
            self.pipe.remask(prep, Image.fromarray(np.where(mm, 255, 0).astype(np.uint8), "L"))
            prep.warnings.append(f"mask covered too little of box(es) {fallback}: whole box kept")
        return record, ""

    def _bind_set(self) -> None:
        gen = self.pipe.generator
        if not self._bound and gen.needs_set:
            from .generate.donors import DonorStore, store_dir

            gen.bind_set(DonorStore(store_dir(self.job)), variants=self.job.config.variants,
                         base_seed=int(self.job.base_seed or 0))
        self._bound = True

    def _variants(self, task: Task, prep: Any, missing: list[int]):
        seeds = [variant_seed(task.seed, k) for k in missing]
        slots = None if task.slot is None else [task.slot + k - 1 for k in missing]
        t0 = time.perf_counter()
        self._bind_set()
        for v in self.pipe.variants(prep, seeds, slots=slots, item=task.rel):
            k = missing[v.index - 1]
            out = replace(v, index=k)
            del v
            yield out  # the caller writes it before asking for the next one
            del out
            if self.on_variant is not None:
                self.on_variant(task, k, time.perf_counter() - t0)

    def _write_dataset(self, task: Task, w: Any, prep: Any, missing: list[int], check: dict | None) -> tuple[int, int]:
        """Variant images (same format as the source by default) and their label files; the
        original beside them with ``include_originals``. Returns (variants, originals) written."""
        job, pipe, ds, item = self.job, self.pipe, self.dataset, task.item
        src_ext = Path(task.path).suffix.lower()
        ext, fmt = _out_format(src_ext, job.image_format)
        size = prep.image.size
        written = originals = 0
        if job.include_originals and not w.has("orig"):
            rel0 = ds.variant_rel(item, 0, src_ext)
            files: dict[str, Any] = {rel0: Path(task.path), **ds.label_files(item, rel0)}
            rec = {"format": {"rel": rel0, "source": item.rel, "split": item.split, "variant": 0,
                              **ds.record(item, rel0, size)},
                   "manifest": {"image": rel0, "source": item.rel, "split": item.split, "variant": 0,
                                "original": True}}
            w.write_part("orig", files, rec)
            originals = 1  # one image (its label files are not images)
        if job.save_masks and not w.has("extras"):
            from .datasets.side import side_rel  # where no loader of the set looks

            w.write_part("extras", {
                side_rel("mask", item.rel): encode_image(prep.mask, "PNG"),
                side_rel("background", item.rel): encode_image(prep.background, "PNG"),
            })
        base = pipe.result(prep, [], task.seed)
        record = pipe.record(base)
        record.pop("config", None)  # the manifest and run config hold it; keep each image's chunk small
        src = np.asarray(prep.image)
        labels_ = getattr(item, "labels", None)
        mask_from = ("labels" if labels_ is not None and labels_.has_masks() else
                     "segmenter within boxes" if labels_ is not None and labels_.boxes() else "segmenter")
        names = {stage: b.get("name") for stage, b in base.backends.items() if not b.get("skipped")}
        if prep.background is None:  # no stage read a clean background: the inpainter did not run
            names.pop("inpaint", None)
        for v in self._variants(task, prep, missing):
            labels = pipe.labels(base, v)
            rel = ds.variant_rel(item, v.index, ext)
            lcheck = label_check(getattr(item, "labels", None), src, np.asarray(v.composite), prep.mask,
                                 objects=prep.notes.get("segment_objects"))
            if check:
                lcheck.update(check)
            made_by = {k: prep.notes[f"{n}.seed{v.seed}"] for k, n in (("generator", "mix"), ("background", "swap.donor"))
                       if f"{n}.seed{v.seed}" in prep.notes}  # per variant: a mix's pick, swap's donor
            data = encode_image(v.composite, fmt, parameters=labels["parameters"], quality=job.quality,
                                record={**record, "variant": {"index": v.index, "seed": v.seed, **made_by},
                                        "labels": lcheck},
                                source_type=labels["composite"])
            files = {rel: data, **ds.label_files(item, rel)}
            man = {"image": rel, "source": item.rel, "split": item.split, "variant": v.index, "seed": v.seed,
                   "backends": names, "mask": mask_from, "label_check": lcheck, "sha256": sha256_bytes(data)}
            if labels_ is not None and not labels_.objects and labels_.mask_file is None:
                man["background_only"] = True  # no labelled object: the whole picture got a new background
            if pipe.uses_prompt:
                man["prompt"] = {"positive": prep.prompt.positive, "negative": prep.prompt.negative}
            bg = prep.notes.get(f"pool.file.seed{v.seed}") or prep.notes.get(f"swap.donor.seed{v.seed}")
            if bg:
                man["background"] = bg
            if f"mix.seed{v.seed}" in prep.notes:  # a mix: which of its generators made this one
                man["generator"] = prep.notes[f"mix.seed{v.seed}"]
            if f"swap.other_class.seed{v.seed}" in prep.notes:
                man["background_other_class"] = prep.notes[f"swap.other_class.seed{v.seed}"]
            checks = prep.notes.get(f"checks.seed{v.seed}")
            if checks is not None:  # the manifest stays the same run to run: no timings in it
                man["checks"] = {k: val for k, val in checks.items() if k != "seconds"}
            w.write_part(f"v{v.index}", files, {
                "manifest": man, "seed": v.seed,
                "format": {"rel": rel, "source": item.rel, "split": item.split, "variant": v.index,
                           **ds.record(item, rel, size)}})
            written += 1
            del v, files, data  # nothing of a written variant is held while the next one is made
        return written, originals


def write_run_item(pipe: Any, w: Any, name: str, seed: int, prep: Any, variants: Any, log_text: Any) -> int:
    """The per-image folder layout of ``backdrop run`` (see the README): mask and clean
    background, then each variant's background and composite as it is made, then run.json and
    pipeline.log (rewritten when a rerun adds variants). Returns the composites written."""
    w.own_dir(name)
    written = 0
    base = pipe.result(prep, [], seed)
    record = pipe.record(base)
    if not w.has("base"):
        params = a1111_parameters(prep.prompt.positive, prep.prompt.negative, size=prep.image.size)
        w.write_part("base", {
            f"{name}/mask.png": encode_image(prep.mask, "PNG", parameters=params, record={**record, "file": "mask"}),
            f"{name}/bg_only.png": encode_image(prep.background, "PNG", parameters=params,
                                                record={**record, "file": "bg_only"}, source_type="compositeSynthetic"),
        })
    for v in variants:
        labels = pipe.labels(base, v)
        rec = {**record, "variant": {"index": v.index, "seed": v.seed}}
        files = {f"{name}/{kind}_{v.index}.png": encode_image(img, "PNG", parameters=labels["parameters"],
                                                              record={**rec, "file": kind}, source_type=labels[kind])
                 for kind, img in (("background", v.background), ("composite", v.composite))}
        comp = f"{name}/composite_{v.index}.png"
        w.write_part(f"v{v.index}", files, {
            "manifest": {"image": comp, "source": prep.source.get("path"), "variant": v.index, "seed": v.seed,
                         "sha256": sha256_bytes(files[comp])},
            "seed": v.seed})
        written += 1
        del v, files  # nothing of a written variant is held while the next one is made
    seeds = {int(p[1:]): w.state.parts[p]["record"].get("seed") for p in w.state.parts if p.startswith("v")}
    full = {**pipe.record(pipe.result(prep, [], seed)),  # again: timings and notes now hold the variants
            "variants": [{"index": k, "seed": seeds[k], "background": f"background_{k}.png",
                          "composite": f"composite_{k}.png"} for k in sorted(seeds)]}
    w.replace_part("meta", {
        f"{name}/run.json": (json.dumps(full, indent=2, default=str) + "\n").encode(),
        f"{name}/pipeline.log": log_text().encode(),
    })
    return written


def save_result(pipe: Any, result: Any, out_dir: str | Path, *, name: str, overwrite: bool = False,
                log_text: str = "") -> Path:
    """Write an already computed :class:`~backdrop.types.Result` (all its variants) as ``run`` does."""
    prep = Prepared(image=result.image, source=result.source, mask=result.mask, background=result.background,
                    caption=result.caption, prompt=result.prompt, timings=dict(result.timings),
                    warnings=list(result.warnings), notes=dict(result.notes))
    job = Job(config=result.config, out=str(out_dir), kind="run", overwrite=overwrite, base_seed=result.base_seed)
    with OutputSet.open(out_dir, "run", seed=result.base_seed) as out:
        with out.item(name, job.fingerprint(), overwrite=overwrite) as w:
            w.begin({"source": result.source.get("path"), "base_seed": result.base_seed})
            write_run_item(pipe, w, name, result.base_seed, prep, [v for v in result.variants if not w.has(f"v{v.index}")],
                           lambda: log_text)
            w.finish({"variants": len(result.variants), "seed": result.base_seed})
        job.finalize(out)
    return Path(out_dir) / name


def _out_format(src_ext: str, wanted: str) -> tuple[str, str]:
    if wanted == "png":
        return ".png", "PNG"
    if wanted == "jpg":
        return ".jpg", "JPEG"
    if src_ext in _JPEG:
        return src_ext, "JPEG"
    return ".png", "PNG"  # PNG for PNG and for formats we do not write (tif, webp, bmp)


def label_check(labels: Any, source: np.ndarray, composite: np.ndarray, mask: Image.Image,
                objects: Optional[list] = None) -> dict[str, Any]:
    """Per labelled object: are its pixels identical in the composite? Checked on the pixels
    before encoding. An object with a mask label is checked whole. A box-labelled object's true
    outline is unknown: only the kept mask inside its box can be compared (``kept_unchanged``), so
    ``unchanged`` is claimed only when, besides, its box-prompted mask is likely whole (its record in
    ``objects``, segment.boxes: it reaches the box's sides, the model found it); otherwise
    ``unchanged`` is None (not known) or False, and ``whole`` says why."""
    if labels is None or not getattr(labels, "objects", ()):
        same = bool(np.array_equal(source[np.asarray(mask) == 255], composite[np.asarray(mask) == 255]))
        return {"objects": 0, "foreground_unchanged": same}
    h, w = source.shape[:2]
    kept = np.asarray(mask) == 255
    objs = []
    for i, obj in enumerate(labels.objects):
        if obj.has_mask():
            region = obj.mask((w, h))
            same = bool(np.array_equal(source[region], composite[region]))
            objs.append({"index": i, "category": obj.category, "pixels": int(region.sum()), "unchanged": same})
            continue
        region = box_mask(obj.box, (w, h)) & kept
        same = bool(np.array_equal(source[region], composite[region]))
        rec = {"index": i, "category": obj.category, "pixels": int(region.sum()), "kept_unchanged": same}
        o = objects[i] if objects is not None and i < len(objects) else None  # segment.boxes: one per box
        if o is None:
            rec["whole"] = "unknown"
            rec["unchanged"] = None if same else False  # the mask alone cannot say the object is whole
        elif o["fallback"]:
            rec.update(box_cover=o["cover"], confidence=o["confidence"], whole="box kept", unchanged=same)
        else:
            rec.update(box_cover=o["cover"], confidence=o["confidence"],
                       whole="doubtful" if o["doubtful"] else "likely")
            rec["unchanged"] = same if not o["doubtful"] else (None if same else False)
            if o["doubtful"]:
                rec["why"] = o["why"]
        objs.append(rec)
    out = {"objects": len(objs), "unchanged": sum(o["unchanged"] is True for o in objs), "per_object": objs}
    doubtful = [o["index"] for o in objs if o.get("whole") in ("doubtful", "unknown")]
    if doubtful:
        out["not_known_whole"] = doubtful
    return out


class Pipeline(StagePipeline):
    """The stage pipeline (:class:`backdrop.pipeline.Pipeline`: stages of one image, nothing
    written) with the writing of its results, through the output protocol: what
    ``backdrop.Pipeline`` is."""

    def save(self, result: Any, out_dir: str | Path, *, name: str = "image", overwrite: bool = False,
             log_text: str = "") -> Path:
        """Write one result into ``out_dir/name/`` (see the README's output layout) through the
        output protocol: no-replace, resumable, ``overwrite`` replaces only backdrop's own files."""
        return save_result(self, result, out_dir, name=name, overwrite=overwrite, log_text=log_text)

    def process(self, path: str | Path, out_dir: str | Path, *, name: str | None = None, seed: int | None = None,
                overwrite: bool = False, on_progress: Optional[StageProgress] = None) -> Path:
        """Load, run and save one image file into ``out_dir/name/`` (default: the file's stem),
        writing each variant as it is made. ``seed`` is the image's own seed. Returns the folder."""
        path = Path(path)
        name = name or path.stem
        base = seed if seed is not None else (self.config.seed if self.config.seed is not None else draw_seed())
        job = Job(config=replace(self.config, seed=base), out=str(out_dir), kind="run", overwrite=overwrite,
                  base_seed=base)
        plan = job.plan()
        worker = Worker(plan.job, pipeline=self, out=plan.out)
        try:
            outcome = worker(Task(key=name, rel=path.name, path=str(path), seed=base), on_progress=on_progress)
            plan.job.finalize(plan.out)
        finally:
            plan.close()
        if outcome.status == "failed":
            raise outcome.error
        return Path(out_dir) / name
