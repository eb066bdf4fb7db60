"""What to make: a :class:`Job` (checked where it is made), its :class:`Plan` (the output set open,
the base seed fixed, the tasks listed) and the account of a run (:class:`Outcome`, :class:`Summary`).

A Job is frozen and picklable, so a Ray actor can build its own worker from it. The driver calls
:meth:`Job.plan` (opens the output set: writable, marked, debris removed; resolves the base seed;
lists the tasks), the items layer (:mod:`backdrop.items`) turns each task into files, and the driver
ends with :meth:`Job.finalize` (the manifest and the format's index files, from the journals).

Identity comes from the item, never from the run: a task's key (its output name) and its seed
derive from its path relative to the input root and the base seed; a pool slot (which pool
picture a variant gets) from its rank in the sorted listing of the set.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Literal, Optional

from .config import PipelineConfig
from .errors import JobOptionError
from .outputs import MANIFEST, OutputSet, fingerprint

log = logging.getLogger(__name__)

_EXEC_ONLY = {"device", "offload", "batch_size", "threads", "compile", "attention_slicing", "max_pixels",
              "variants", "seed"}


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
    stopped: bool = False  # the run was asked to stop (run_local's should_stop) before its last task

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
        # a pure read: one kind of failure gives its own code, a mix gives 1 (never pop: a second read must agree)
        return next(iter(self.exit_codes)) if len(self.exit_codes) == 1 else 1

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
    format: str = "auto"  # dataset: "auto" or a registered format (backdrop.datasets.FORMATS)
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

    def __post_init__(self) -> None:
        """Every option checked where the job is made (CLI, Python API, Ray, studio alike), before
        any folder exists: a bad one raises :class:`~backdrop.errors.JobOptionError` (a ValueError)
        naming the option, its CLI flag and the allowed values."""
        validate_job(self)

    @classmethod
    def from_options(cls, config: PipelineConfig, out: str | Path, **options: Any) -> "Job":
        """A job from keyword options as a caller writes them: an unknown name is a
        :class:`~backdrop.errors.JobOptionError` listing the known ones (not a TypeError); a
        string ``splits`` is one split or a comma-separated list; paths become strings."""
        known = [f.name for f in fields(cls) if f.name not in ("config", "out", "base_seed")]
        for name in options:
            if name not in known:
                raise JobOptionError(name, f"unknown option; known options: {', '.join(known)}")
        if isinstance(options.get("splits"), str):
            options["splits"] = tuple(x.strip() for x in options["splits"].split(",") if x.strip())
        elif options.get("splits") is not None and not isinstance(options["splits"], tuple):
            options["splits"] = tuple(options["splits"]) if isinstance(options["splits"], (list, set)) else options["splits"]
        if isinstance(options.get("inputs"), (list, str, Path)):
            ins = options["inputs"]
            options["inputs"] = tuple(str(i) for i in ([ins] if isinstance(ins, (str, Path)) else ins))
        if isinstance(options.get("mask_cache"), Path):
            options["mask_cache"] = str(options["mask_cache"])
        return cls(config=config, out=str(out), **options)

    # -- driver side -------------------------------------------------------------------------------
    def open_output(self) -> OutputSet:
        from .seeds import draw_seed

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
        from .datasets import open_dataset

        return open_dataset(Path(self.inputs[0]), self.format)

    def augmented_splits(self, dataset: Any) -> set[str]:
        """The splits to augment: those asked for; a set without splits is all training data."""
        if list(dataset.splits) == [""]:
            return {""}
        from .datasets import canonical_split  # the sets' splits are canonical: so are the asked ones

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
            from .images import collect_inputs

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
        from .generate import GENERATORS
        from .pipeline import resolve_auto, skipped_stages
        from .stages import Generator

        try:
            gen = GENERATORS.load(self.config.generate.backend)
        except Exception:  # noqa: BLE001 - an unknown name fails later, with its own message
            gen = Generator
        if not (isinstance(gen, type) and issubclass(gen, Generator)):
            gen = Generator  # a class not written to the contract: what it declares is read when built
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


_CHOICES: dict[str, tuple[str, ...]] = {"kind": ("run", "dataset"), "image_format": ("same", "png", "jpg"),
                                       "box_fallback": ("box", "skip")}
# the CLI flag of each Job option that has one (the error names both)
_FLAGS = {"out": "--out", "format": "--format", "splits": "--splits", "include_originals": "--include-originals",
          "copy_other_splits": "--copy-other-splits", "image_format": "--image-format", "quality": "--quality",
          "save_masks": "--save-masks", "overwrite": "--overwrite", "box_min_cover": "--box-cover",
          "box_fallback": "--box-fallback", "mask_cache": "--mask-cache", "base_seed": "--seed",
          "box_prompt": "--box-prompt/--no-box-prompt"}


def validate_job(job: Job) -> None:
    """The checks of :meth:`Job.__post_init__` (one place: every entry point builds a Job)."""
    def check(ok: bool, name: str, expected: str) -> None:
        if not ok:
            raise JobOptionError(name, f"expected {expected}, got {getattr(job, name)!r}", _FLAGS.get(name))

    def is_bool(name: str) -> None:
        check(isinstance(getattr(job, name), bool), name, "True or False")

    check(isinstance(job.config, PipelineConfig), "config", "a PipelineConfig")
    check(isinstance(job.out, str) and job.out.strip() != "", "out", "a folder path")
    for name, allowed in _CHOICES.items():
        check(getattr(job, name) in allowed, name, "one of " + ", ".join(allowed))
    check(isinstance(job.inputs, tuple) and all(isinstance(i, str) and i for i in job.inputs), "inputs",
          "a tuple of paths (strings)")
    if job.kind == "dataset":
        check(len(job.inputs) == 1, "inputs", "one data set root for a dataset job")
    from .datasets import FORMATS  # the registry: a format registered later is accepted too

    check(job.format in ("auto", *FORMATS), "format", "one of " + ", ".join(("auto", *FORMATS)))
    check(isinstance(job.splits, tuple) and len(job.splits) > 0 and all(isinstance(x, str) and x.strip()
                                                                         for x in job.splits),
          "splits", "at least one split name (e.g. train)")
    for name in ("copy_other_splits", "include_originals", "save_masks", "overwrite", "box_prompt"):
        is_bool(name)
    check(isinstance(job.quality, int) and not isinstance(job.quality, bool) and 1 <= job.quality <= 100,
          "quality", "an integer from 1 to 100")
    check(_real(job.box_grow) and 0 <= job.box_grow <= 10, "box_grow", "a number from 0 to 10")
    check(_real(job.box_min_cover) and 0 <= job.box_min_cover <= 1, "box_min_cover", "a number from 0 to 1")
    check(job.mask_cache is None or (isinstance(job.mask_cache, str) and job.mask_cache.strip() != ""),
          "mask_cache", '"auto", a folder, or None')
    check(job.base_seed is None or (isinstance(job.base_seed, int) and not isinstance(job.base_seed, bool)),
          "base_seed", "an integer or None")


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v

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
        from .seeds import item_seed

        if job.kind == "run":
            from .images import collect_inputs

            files = (self.survey or {}).get("files") or collect_inputs(job.inputs, exclude=[job.out])
            names = RunNames()
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


class RunNames:
    """An image's output folder: its relative path without the suffix (``cat/001``), or with the
    suffix folded in (``cat/001_jpg``) when another image in *its own folder on disk* has the same
    stem. It depends on the file and its folder only, never on what else the run was given."""

    def __init__(self) -> None:
        self._stems: dict[Path, dict[str, int]] = {}

    def __call__(self, path: Path, rel: str) -> str:
        from .images import IMAGE_SUFFIXES

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
