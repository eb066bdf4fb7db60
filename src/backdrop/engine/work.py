"""One job, its tasks, and the code that turns one task into files: shared by every engine.

A :class:`Job` says what to make (the config, the source, the output and its options) and is
picklable, so a Ray actor can build its own :class:`Worker` from it. The driver calls
:meth:`Job.plan` (opens the output set: writable, marked, debris removed; resolves the base
seed; lists the tasks), each worker runs tasks (``worker(task) -> Outcome``), and the driver
ends with :meth:`Job.finalize` (the manifest and the format's index files, from the journals).

Identity comes from the item, never from the run: a task's key (its output name) and its seed
derive from its path relative to the input root and the base seed; a pool slot (which pool
picture a variant gets) from its rank in the sorted listing of the set.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Literal, Optional

import numpy as np
from PIL import Image

from ..config import PipelineConfig
from ..errors import BackdropError, InputError, OutputError
from ..outputs import MANIFEST, OutputSet, fingerprint, sha256_bytes
from ..segment.itemmask import MaskCache  # noqa: F401 - kept importable from here

log = logging.getLogger(__name__)

# options that change how fast a run goes, never what it makes: not part of an item's fingerprint
_EXEC_ONLY = {"device", "offload", "batch_size", "threads", "compile", "attention_slicing", "max_pixels",
              "variants", "seed"}
_JPEG = {".jpg", ".jpeg"}


@dataclass(frozen=True)
class Task:
    """One unit of work: an image to augment, or (data sets) a file set to copy unchanged."""

    key: str  # output identity: the run's folder name, or the item's relative path
    rel: str  # the source's path relative to its input root (seeds derive from it)
    path: str  # the source image file
    seed: int  # this image's seed: variant k uses seed + k - 1
    slot: Optional[int] = None  # pool spreading: variant k uses slot + k - 1
    kind: Literal["augment", "copy"] = "augment"
    item: Any = None  # datasets.Item for data set jobs


@dataclass
class Outcome:
    """What happened to one task (the engines add these up into a :class:`Summary`)."""

    key: str
    status: Literal["done", "skipped", "copied", "failed", "dropped"]
    message: str = ""
    written: int = 0  # new images (variants) written by this run
    originals: int = 0  # source images copied beside their variants by this run (include_originals)
    resumed: int = 0  # variants found done by an earlier run
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    picks: list[str] = field(default_factory=list)  # pool pictures used
    exit_code: int = 0
    error: Optional[BaseException] = field(default=None, repr=False, compare=False)  # API callers re-raise it


@dataclass
class Summary:
    """The end-of-run account, by kind: items augmented (``done``), already done by an earlier
    run (``skipped``), copied unchanged from other splits (``copied``), failed; and the files
    written: new images (``images``, the variants) and originals copied beside them. The rate
    counts new images only."""

    total: int = 0
    done: int = 0
    skipped: int = 0  # already complete (an earlier run, or another run meanwhile)
    copied: int = 0  # items of other splits copied unchanged
    failed: list[tuple[str, str]] = field(default_factory=list)
    images: int = 0  # new images (variants) written by this run
    originals: int = 0  # source images copied beside their variants (include_originals)
    resumed: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    picks: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    exit_codes: set[int] = field(default_factory=set)

    def add(self, o: Outcome) -> None:
        if o.status == "done":
            self.done += 1
        elif o.status == "skipped":
            self.skipped += 1
        elif o.status == "copied":
            self.copied += 1
        else:
            self.failed.append((o.key, o.message))
            self.exit_codes.add(o.exit_code or 1)
        self.images += o.written
        self.originals += o.originals
        self.resumed += o.resumed
        for k, v in o.timings.items():
            self.timings[k] = self.timings.get(k, 0.0) + v
        for p in o.picks:
            self.picks[p] = self.picks.get(p, 0) + 1

    @property
    def exit_code(self) -> int:
        if not self.failed:
            return 0
        return self.exit_codes.pop() if len(self.exit_codes) == 1 else 1

    def lines(self, out: str | Path) -> list[str]:
        """The summary as printed: items by what happened to them, then the files written.

        >>> Summary(done=8, copied=2, images=16, originals=8, seconds=2.0).lines("out")[0]
        '8 done, 0 already done, 2 copied unchanged, 0 failed; 16 new image(s) written, 8 original(s) copied beside them, in 2.0 s (8.00 new images/s) -> out'
        """
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        written = f"{self.images} new image(s) written"
        if self.originals:
            written += f", {self.originals} original(s) copied beside them,"
        lines = [f"{self.done} done, {self.skipped} already done, {self.copied} copied unchanged, "
                 f"{len(self.failed)} failed; {written} in {self.seconds:.1f} s ({rate:.2f} new images/s) -> {out}"]
        if self.timings:
            lines.append("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(self.timings.items(),
                                                                                          key=lambda kv: -kv[1])))
        if self.picks:
            counts = sorted(self.picks.values())
            lines.append(f"pool: {len(self.picks)} background(s) used, each {counts[0]}-{counts[-1]} time(s)")
        return lines


@dataclass(frozen=True)
class Job:
    """What to make. ``kind="run"``: one folder per input image (``backdrop run``);
    ``kind="dataset"``: a training-ready copy of a labelled set (``backdrop augment``)."""

    config: PipelineConfig
    out: str
    kind: Literal["run", "dataset"] = "run"
    inputs: tuple[str, ...] = ()  # run: files and folders; dataset: the set's root (one)
    format: str = "auto"  # dataset: auto, yolo, coco, folders, imagefolder, masks, plain
    splits: tuple[str, ...] = ("train",)  # dataset: the splits to augment
    copy_other_splits: bool = True  # dataset: copy the other splits unchanged (never augmented)
    include_originals: bool = False  # dataset: the source images too, beside their variants
    image_format: Literal["same", "png", "jpg"] = "same"
    quality: int = 95  # JPEG quality
    save_masks: bool = False  # dataset: also write each image's mask and clean background
    overwrite: bool = False  # replace backdrop's own earlier outputs made with other settings
    box_grow: float = 0.05  # boxes-only labels: the segmenter's mask is kept inside boxes grown by this share
    box_min_cover: float = 0.3  # ... and each box must be covered this much by the mask, else box_fallback
    box_fallback: Literal["box", "skip"] = "box"  # "box": keep the whole box; "skip": report and skip the image
    box_prompt: bool = True  # boxes-only labels: segment each box on its own (segment.boxes), not the whole frame
    mask_cache: Optional[str] = "auto"  # segmenter masks kept by image content: "auto" ($BACKDROP_HOME/cache/masks), a folder, or None
    base_seed: Optional[int] = None  # set by plan(): the run's resolved base seed

    # -- driver side -------------------------------------------------------------------------------
    def open_output(self) -> OutputSet:
        from ..pipeline import draw_seed

        return OutputSet.open(self.out, self.kind, seed=self.config.seed if self.config.seed is not None else draw_seed())

    def plan(self, dataset: Any = None) -> "Plan":
        """Open the output (checked writable before any work), fix the base seed, list the tasks."""
        if dataset is None and self.kind == "dataset":
            dataset = self.open_dataset()
        out = self.open_output()
        base = self.config.seed if self.config.seed is not None else out.seed
        job = replace(self, base_seed=int(base), config=replace(self.config, seed=int(base)))
        return Plan(job, out, dataset)

    def open_dataset(self) -> Any:
        from ..datasets import open_dataset

        return open_dataset(Path(self.inputs[0]), self.format)

    def augmented_splits(self, dataset: Any) -> set[str]:
        """The splits to augment: those asked for; a set without splits is all training data."""
        if list(dataset.splits) == [""]:
            return {""}
        from ..datasets import canonical_split  # the sets' splits are canonical: so are the asked ones

        return {canonical_split(s) for s in self.splits} & set(dataset.splits)

    def copied_splits(self, dataset: Any) -> list[str]:
        if not self.copy_other_splits:
            return []
        augment = self.augmented_splits(dataset)
        return [s for s in dataset.splits if s not in augment]

    def survey(self, dataset: Any = None) -> dict[str, Any]:
        """One pass over the source before any output exists: how many items to augment and to
        copy, and whether any needs the segmenter (not when every label carries masks)."""
        if self.kind == "run":
            from ..images import collect_inputs

            files, notes = collect_inputs(self.inputs, exclude=[self.out], with_notes=True)
            # the listing is kept for the tasks (paths only): the tree is walked once
            return {"augment": len(files), "copy": 0, "segment": True, "notes": notes, "files": files}
        dataset = dataset if dataset is not None else self.open_dataset()
        augment = self.augmented_splits(dataset)
        copied = set(self.copied_splits(dataset))
        out: dict[str, Any] = {"augment": 0, "copy": 0, "segment": False, "notes": []}
        for item in dataset.items():
            if item.split in augment:
                out["augment"] += 1
                labels = item.labels
                if not item.error and (labels is None or not labels.has_masks()):
                    out["segment"] = True
            elif item.split in copied:
                out["copy"] += 1
        return out

    def fingerprint(self) -> str:
        from ..generate import GENERATORS
        from ..pipeline import resolve_auto, skipped_stages

        try:
            gen = GENERATORS.load(self.config.generate.backend)
        except Exception:  # noqa: BLE001 - an unknown name fails later, with its own message
            gen = None
        skip = skipped_stages(self.config, gen)
        cfg = _strip(resolve_auto(self.config, skip=skip)[0].to_dict())  # "auto" as it resolves here
        for stage in skip:  # a stage that does not run cannot change the output
            cfg.pop(stage, None)
        opts = {k: getattr(self, k) for k in ("kind", "format", "image_format", "quality", "include_originals",
                                              "save_masks", "box_grow", "box_min_cover", "box_fallback", "box_prompt")}
        return fingerprint({"config": cfg, "opts": opts, "seed": self.base_seed})

    def finalize(self, out: OutputSet | None = None, dataset: Any = None) -> list[str]:
        """Rebuild the manifest (and the format's index files) from the journals, atomically."""
        own = out is None
        out = out or OutputSet.open(self.out, self.kind)
        try:
            if dataset is None and self.kind == "dataset":
                dataset = self.open_dataset()
            with out.finalizing():
                written = [MANIFEST]
                with out.replace_stream(out.root / MANIFEST) as fh:
                    # one pass over the journals: manifest lines written as the format's records stream by
                    def formats() -> Iterator[dict[str, Any]]:
                        for state in out.records():
                            for part in state["parts"].values():
                                line = part["record"].get("manifest")
                                if line:
                                    fh.write(json.dumps(line, default=str) + "\n")
                                if "format" in part["record"]:
                                    yield part["record"]["format"]

                    records = formats()
                    if dataset is not None:
                        written += dataset.finalize(out.root.resolve(), records, copied=self.copied_splits(dataset))
                    for _ in records:  # whatever the finaliser did not read still goes into the manifest
                        pass
            return written
        finally:
            if own:
                out.close()


def start(job: Job, *, load: bool = True) -> tuple["Plan", Optional["Worker"]]:
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
            from ..datasets import detect

            found = detect(Path(job.inputs[0]))[1]
        log.info("%s: %s: %d image(s) to augment (splits %s), %d to copy unchanged",
                 job.inputs[0], found, survey["augment"],
                 ",".join(sorted(job.augmented_splits(dataset))) or "none", survey["copy"])
        if not job.augmented_splits(dataset):  # an empty plan is something to act on
            log.warning("nothing to augment: --splits %s names none of the set's splits (%s)",
                        ",".join(job.splits), ", ".join(s or '""' for s in dataset.splits))
    pipe = None
    if load and survey["augment"]:
        from ..pipeline import Pipeline

        skip = {} if survey["segment"] else {"segment": "every labelled image carries its masks"}
        pipe = Pipeline.from_config(job.config, skip=skip).load()
    plan = job.plan(dataset=dataset)
    plan.survey = survey
    worker = None
    if pipe is not None:
        pipe.config = replace(pipe.config, seed=plan.job.base_seed)
        worker = Worker(plan.job, pipeline=pipe, out=plan.out, dataset=dataset)
    return plan, worker


def _strip(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _strip(v) for k, v in d.items() if k not in _EXEC_ONLY}
    return d


class Plan:
    """A job with its output set open, its base seed fixed and its tasks listed."""

    def __init__(self, job: Job, out: OutputSet, dataset: Any = None):
        self.job = job
        self.out = out
        self.dataset = dataset
        self.survey: dict[str, Any] | None = None  # counts, when the caller surveyed the source

    def tasks(self) -> Iterator[Task]:
        """The tasks, streamed in the order of their relative paths (a data set's items are read as
        they come, never all held)."""
        return self._list()

    def total(self) -> int | None:
        return None if self.survey is None else self.survey["augment"] + self.survey["copy"]

    def _list(self) -> Iterator[Task]:
        job = self.job
        base = int(job.base_seed or 0)
        from ..pipeline import item_seed

        if job.kind == "run":
            from ..images import collect_inputs

            files = (self.survey or {}).get("files") or collect_inputs(job.inputs, exclude=[job.out])
            names = _RunNames()
            for n, (path, rel) in enumerate(files):
                yield Task(key=names(path, rel), rel=rel, path=str(path), seed=item_seed(base, rel),
                           slot=n * job.config.variants)
            return
        ds = self.dataset
        augment = job.augmented_splits(ds)
        n = 0
        for item in ds.items():
            if item.split in augment:
                yield Task(key=item.rel, rel=item.rel, path=str(item.path), seed=item_seed(base, item.rel),
                           slot=n * job.config.variants, item=item)
                n += 1
            elif job.copy_other_splits:
                yield Task(key=item.rel, rel=item.rel, path=str(item.path), seed=0, kind="copy", item=item)

    def close(self) -> None:
        self.out.close()


class _RunNames:
    """An image's output folder: its relative path without the suffix (``cat/001``), or with the
    suffix folded in (``cat/001_jpg``) when another image in *its own folder on disk* has the same
    stem. It depends on the file and its folder only, never on what else the run was given."""

    def __init__(self) -> None:
        self._stems: dict[Path, dict[str, int]] = {}

    def __call__(self, path: Path, rel: str) -> str:
        from ..images import IMAGE_SUFFIXES

        folder = Path(path).parent
        stems = self._stems.get(folder)
        if stems is None:
            stems = {}
            with os.scandir(folder) as it:
                for entry in it:
                    p = Path(entry.name)
                    if p.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith("."):
                        stems[p.stem] = stems.get(p.stem, 0) + 1
            self._stems = {folder: stems}  # one folder at a time: the listing is sorted by path
        r = PurePosixPath(rel)
        if not r.suffix:
            return rel
        if stems.get(r.stem, 0) > 1:
            return str(r.with_name(f"{r.stem}_{r.suffix[1:].lower()}"))
        return str(r.with_suffix(""))


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

    @property
    def pipe(self) -> Any:
        if self._pipe is None:
            from ..pipeline import Pipeline

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
            from ..outputs import io_error

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
        from ..images import load_image
        from ..pipeline import _capture_log, variant_seed

        missing = [k for k in range(1, n + 1) if not w.has(f"v{k}")]
        with _capture_log() as captured:
            log.debug("input %s: %d variant(s) to make, seeds %s%s", task.path, len(missing),
                     [variant_seed(task.seed, k) for k in missing],
                     f" ({n - len(missing)} of {n} done by an earlier run)" if len(missing) < n else "")
            loaded = load_image(task.path, max_pixels=job.config.max_pixels)
            mask, region, boxes = self._label_masks(item, loaded.image.size)
            seg = None
            if mask is None and "segment" not in self.pipe.skipped:  # segment/itemmask: boxes, cache, record
                from ..segment.itemmask import item_mask

                seg = item_mask(self.pipe.segmenter, self.pipe.config.segment, loaded.image, task.path,
                                boxes=boxes, region=region, cache=self.cache, box_prompt=job.box_prompt, box_grow=job.box_grow,
                                label=Path(task.path).name)
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
        labels = getattr(item, "labels", None)
        if labels is None:
            return None, None, None
        fg = labels.foreground(size)
        if fg is not None:
            return Image.fromarray(np.where(fg, 255, 0).astype(np.uint8), "L"), None, None
        boxes = labels.boxes()
        if not boxes:
            return None, None, None
        region = np.zeros((size[1], size[0]), np.uint8)
        for x0, y0, x1, y1 in boxes:
            gx, gy = (x1 - x0) * self.job.box_grow + 2, (y1 - y0) * self.job.box_grow + 2
            region[max(0, int(y0 - gy)):int(np.ceil(y1 + gy)), max(0, int(x0 - gx)):int(np.ceil(x1 + gx))] = 255
        return None, Image.fromarray(region, "L"), boxes

    def _box_check(self, prep: Any, boxes: list, item: Any, objects: Optional[list] = None) -> tuple[dict[str, Any], str]:
        """Each labelled box must be covered enough by the mask; else keep the whole box
        (``box_fallback="box"``, recorded; ``prep`` is updated) or skip the image. Box-prompted
        masks (``objects``, segment.boxes) decided that per object already: a box falls back only
        when nothing was found in it. Returns the record and, for a skipped image, the one-line reason."""
        m = np.asarray(prep.mask) > 0
        h, w = m.shape
        covers, fallback = [], []
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            ys, ye = max(0, int(y0)), min(h, int(np.ceil(y1)))
            xs, xe = max(0, int(x0)), min(w, int(np.ceil(x1)))
            area = max(1, (ye - ys) * (xe - xs))
            cover = float(m[ys:ye, xs:xe].sum()) / area
            covers.append(round(cover, 3))
            if objects is not None:
                if objects[i]["fallback"]:
                    fallback.append(i)
            elif cover < self.job.box_min_cover:
                fallback.append(i)
        record = {"box_cover": covers, "box_fallback": fallback}
        if objects is not None:
            covers = [o["cover"] for o in objects]  # the mask's own cover, before any whole-box fallback
            if any(o["fallback"] for o in objects):  # already whole boxes in the mask: counted, recorded
                prep.notes["box_fallbacks"] = len(fallback)
                if self.job.box_fallback != "skip":
                    return record, ""
        if fallback and self.job.box_fallback == "skip":
            return record, (f"{item.rel}: the mask covers too little of labelled object(s) {fallback} "
                            f"(coverage {[covers[i] for i in fallback]} < {self.job.box_min_cover}); skipped "
                            "(use --box-fallback box to keep whole boxes)")
        if fallback:
            mm = m.copy()
            for i in fallback:
                x0, y0, x1, y1 = boxes[i]
                mm[max(0, int(y0)):int(np.ceil(y1)), max(0, int(x0)):int(np.ceil(x1))] = True
            new_mask = Image.fromarray(np.where(mm, 255, 0).astype(np.uint8), "L")
            from ..pipeline import _known_background

            prep.mask = new_mask
            if prep.background is not None:
                prep.background = prep.timed("inpaint", lambda: self.pipe.inpainter(prep.image, new_mask))
            prep.known = _known_background(new_mask, self.job.config.inpaint.dilate)
            prep.warnings.append(f"mask covered too little of box(es) {fallback}: whole box kept")
        return record, ""

    def _variants(self, task: Task, prep: Any, missing: list[int]):
        from ..pipeline import variant_seed

        seeds = [variant_seed(task.seed, k) for k in missing]
        slots = None if task.slot is None else [task.slot + k - 1 for k in missing]
        t0 = time.perf_counter()
        for v in self.pipe.variants(prep, seeds, slots=slots):
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
        from ..metadata import encode_image

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
            from ..datasets.side import side_rel  # where no loader of the set looks

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
            data = encode_image(v.composite, fmt, parameters=labels["parameters"], quality=job.quality,
                                record={**record, "variant": {"index": v.index, "seed": v.seed}, "labels": lcheck},
                                source_type=labels["composite"])
            files = {rel: data, **ds.label_files(item, rel)}
            man = {"image": rel, "source": item.rel, "split": item.split, "variant": v.index, "seed": v.seed,
                   "backends": names, "mask": mask_from, "label_check": lcheck, "sha256": sha256_bytes(data)}
            if labels_ is not None and not labels_.objects and labels_.mask_file is None:
                man["background_only"] = True  # no labelled object: the whole picture got a new background
            if pipe.uses_prompt:
                man["prompt"] = {"positive": prep.prompt.positive, "negative": prep.prompt.negative}
            bg = prep.notes.get(f"pool.file.seed{v.seed}")
            if bg:
                man["background"] = bg
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
    from ..metadata import a1111_parameters, encode_image

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
    from ..pipeline import Prepared

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
    ``objects``: it reaches the box's sides, agrees with GrabCut); otherwise ``unchanged`` is None
    (not known) or False, and ``whole`` says why."""
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
        x0, y0, x1, y1 = obj.box
        region = np.zeros((h, w), bool)
        region[max(0, int(y0)):int(np.ceil(y1)), max(0, int(x0)):int(np.ceil(x1))] = True
        region &= kept
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
