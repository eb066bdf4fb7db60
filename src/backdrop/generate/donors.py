"""The donor store of the ``swap`` generator: every training image's clean background, on disk.

``swap`` gives each variant the clean background (objects removed, hole filled) of *another*
image of the same set. Those backgrounds are made once per set, in a first pass before the
items (:func:`build`, called from the engine's ``start``), and kept under the output's record
folder, never in memory::

    OUT/.backdrop/donors/<settings>/bg/ab/<h>.png   one RGBA PNG per image: RGB the clean background,
                                                    alpha 255 where the pixel is real, 0 where filled
    OUT/.backdrop/donors/<settings>/hashes.npy      (N, 16) uint8: sha256 of each donor's relative path
    OUT/.backdrop/donors/<settings>/classes.npy     (N,) int32: its class id (-1: no class)
    OUT/.backdrop/donors/<settings>/order.npy       (N,) int64: donors sorted by class (stable)
    OUT/.backdrop/donors/<settings>/by_hash.npy     (N,) int64: donors sorted by hash (find an image)
    OUT/.backdrop/donors/<settings>/rels.bin, rel_offsets.npy   each donor's relative path (the manifest names it)
    OUT/.backdrop/donors/<settings>/index.json      count, class names and sizes: written last

``<settings>`` hashes what changes the clean backgrounds (segmenter, inpainter, box options, the
fill), so other settings get another store. Each PNG is written once, through a temporary file
linked into place: a killed pass leaves whole files only, and the next run makes only the
missing ones. The index is small arrays read memory-mapped: a set of 100 000 images costs the
generator about 3 MB of mapped file, not 100 000 images.

Donors are the augmented split's images only (never val/test: their backgrounds would leak into
training). An image's class is its class folder, its imagefolder ``label`` column, or the
majority class of its detection labels; a set without classes draws from any other image.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Optional

import cv2
import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

STORE_DIR = "donors"
# how holes are filled, chosen by benchmarks/bench_swap_fill.py (object-shaped remnants, 100 donors of
# 96 px): "quilt-all" re-stitches the whole background from patches of the donor's own real pixels
# (segmenter IoU over chance +0.05, outline gradient 1.01x chance, grain inside/outside 1.00: nothing
# of the object's shape is left; the layout moves, the grain and colours stay); "quilt" fills the hole
# only (+0.25 / 1.57 / 0.97: the seam outlines the object, the segmenter still finds it); "inpaint" is
# the pipeline's inpainter (Telea: +0.62 / 0.81 / 0.21, a smooth smear the shape of the object)
FILL = "quilt-all"
_VERSION = 1  # bump when the stored pixels change for the same settings
BLEND = 3.0  # px: the quilted fill fades in over the hole's outer band (which is real background)
PLAIN_EVERY = 30.0  # seconds between progress lines of the first pass


def rel_hash(rel: str) -> bytes:
    return hashlib.sha256(rel.encode("utf-8")).digest()[:16]


def item_class(item: Any) -> Optional[str]:
    """The class an item belongs to, where its set says: its class folder (``meta["class"]``),
    an imagefolder ``label`` column, or the most frequent category of its labelled objects (ties:
    the smallest id). None where the set has no classes.

    >>> from backdrop.datasets.base import Item
    >>> item_class(Item(Path("a.png"), "cat/a.png", "train", None, {"class": "cat"}))
    'cat'
    """
    if item is None:
        return None
    meta = getattr(item, "meta", None) or {}
    if meta.get("class") not in (None, ""):
        return str(meta["class"])
    row = meta.get("row")
    if isinstance(row, dict) and row.get("label") not in (None, ""):
        return str(row["label"])
    if getattr(item, "error", None):
        return None
    labels = getattr(item, "labels", None)
    objects = getattr(labels, "objects", None) if labels is not None else None
    if objects:
        counts = Counter(int(o.category) for o in objects if int(o.category) >= 0)
        if counts:
            top = max(counts.values())
            return str(min(c for c, n in counts.items() if n == top))
    return None


def settings_key(job: Any, fill: str = FILL) -> str:
    """What changes the stored backgrounds: segmenter and inpainter settings (``auto`` resolved),
    the box options, the fill and the store's version."""
    from ..pipeline import resolve_auto

    cfg = resolve_auto(job.config, skip={"caption": "-", "refine": "-"})[0]
    data = {"segment": asdict(cfg.segment), "inpaint": asdict(cfg.inpaint), "box_grow": job.box_grow,
            "max_pixels": cfg.max_pixels, "fill": fill, "version": _VERSION}
    for k in ("device", "threads"):  # how fast, never what
        data["segment"].pop(k, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def store_dir(job: Any) -> Path:
    from ..outputs import RECORD_DIR

    return Path(job.out) / RECORD_DIR / STORE_DIR / settings_key(job)


class DonorStore:
    """The finished store, read memory-mapped (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        info_path = self.folder / "index.json"
        try:
            self.info = json.loads(info_path.read_text())
            self.hashes = np.load(self.folder / "hashes.npy", mmap_mode="r")
            self.classes = np.load(self.folder / "classes.npy", mmap_mode="r")
            self.order = np.load(self.folder / "order.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            from ..errors import ConfigError

            raise ConfigError(f"swap: no donor store at {self.folder} ({exc}); the engine builds it in a first "
                              "pass: run swap through `backdrop augment` / `backdrop run` or backdrop.augment()") from None
        self.count = int(self.info["count"])
        self.names: list[str] = list(self.info["classes"])
        self.sizes = np.asarray(self.info["class_sizes"], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        # hashes sorted, to find an item's position by its relative path
        self._by_hash = np.load(self.folder / "by_hash.npy", mmap_mode="r")
        self._rel_offsets = np.load(self.folder / "rel_offsets.npy", mmap_mode="r")

    def rel(self, pos: int) -> str:
        """The donor's path relative to the set's root."""
        a, b = int(self._rel_offsets[pos]), int(self._rel_offsets[pos + 1])
        with open(self.folder / "rels.bin", "rb") as fh:
            fh.seek(a)
            return fh.read(b - a).decode("utf-8")

    def path(self, h: bytes) -> Path:
        x = h.hex()
        return self.folder / "bg" / x[:2] / f"{x}.png"

    def find(self, rel: str) -> Optional[int]:
        """The donor position of the image at ``rel`` (None: not a donor, e.g. unreadable)."""
        if self.count == 0:
            return None
        key = np.frombuffer(rel_hash(rel), np.uint8)
        lo, hi = 0, self.count
        while lo < hi:  # binary search over the sorted hashes (memory-mapped rows)
            mid = (lo + hi) // 2
            row = bytes(self.hashes[int(self._by_hash[mid])])
            if row < key.tobytes():
                lo = mid + 1
            else:
                hi = mid
        if lo < self.count and bytes(self.hashes[int(self._by_hash[lo])]) == key.tobytes():
            return int(self._by_hash[lo])
        return None

    def class_rank(self, pos: int) -> tuple[int, int]:
        """(class id, rank of the donor within its class, in set order)."""
        c = int(self.classes[pos])
        if c < 0:
            return c, pos
        lo, hi = int(self.offsets[c]), int(self.offsets[c + 1])
        block = self.order[lo:hi]
        return c, int(np.searchsorted(block, pos))

    def other_class(self, c: int, p: int) -> int:
        """The ``p``-th donor (set order within classes) of any class but ``c``."""
        lo, hi = int(self.offsets[c]), int(self.offsets[c + 1])
        return int(self.order[p if p < lo else p + (hi - lo)])

    def load(self, pos: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8, real-pixel mask bool) of donor ``pos``."""
        with Image.open(self.path(bytes(self.hashes[pos]))) as im:
            im.load()
            arr = np.asarray(im.convert("RGBA"))
        return np.ascontiguousarray(arr[..., :3]), arr[..., 3] >= 128


# -- the first pass ------------------------------------------------------------------------------


def build(plan: Any, worker: Any, *, fill: str = FILL) -> DonorStore:
    """Make every augmented image's clean background that is not on disk yet, then the index.

    One image at a time (memory stays flat), masks through the worker's mask cache (the item pass
    then finds them there), each PNG linked into place whole: a killed pass resumes."""
    from ..errors import BackdropError

    job = plan.job
    folder = store_dir(job)
    (folder / "bg").mkdir(parents=True, exist_ok=True)
    hashes: list[bytes] = []
    rels = tempfile.TemporaryFile()  # the donors' relative paths, streamed to disk as they come
    offsets: list[int] = [0]
    class_ids: list[int] = []
    names: dict[str, int] = {}
    made = failed = 0
    total = (plan.survey or {}).get("augment")
    t0 = last = time.perf_counter()
    log.info("swap: first pass: the clean backgrounds of %s training image(s) (kept in %s; a killed pass "
             "resumes)", total if total is not None else "the", folder)
    for task in _augment_tasks(plan):
        h = rel_hash(task.rel)
        path = _bg_path(folder, h)
        if not path.exists():
            try:
                data = _clean_background(job, worker, task, fill)
            except BackdropError as exc:  # the item pass reports it; it is no donor
                log.debug("swap: %s: no clean background (%s)", task.rel, exc)
                failed += 1
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            from ..outputs import write_new

            write_new(path, data)
            made += 1
            del data
        cls = item_class(task.item)
        hashes.append(h)
        offsets.append(offsets[-1] + rels.write(task.rel.encode("utf-8")))
        class_ids.append(-1 if cls is None else names.setdefault(cls, len(names)))
        now = time.perf_counter()
        if now - last >= PLAIN_EVERY:
            last = now
            log.info("swap: first pass: %d/%s image(s), %d made this run", len(hashes) + failed,
                     total if total is not None else "?", made)
    if len(hashes) < 2:  # nothing to swap with: the generator falls back to random (one line, here)
        log.warning("swap: the set has %d usable training image(s), and swapping needs 2: this run's "
                    "backgrounds come from `random` instead", len(hashes))
    rels.seek(0)
    _replace(folder / "rels.bin", rels.read())
    rels.close()
    _replace(folder / "rel_offsets.npy", _npy(np.asarray(offsets, np.int64)))
    _write_index(folder, hashes, class_ids, names)
    log.info("swap: first pass done: %d clean background(s), %d made now, %d failed, in %.1f s",
             len(hashes), made, failed, time.perf_counter() - t0)
    return DonorStore(folder)


def write_store(folder: str | Path, entries: Any, *, fill: str = FILL) -> DonorStore:
    """A store from ``(rel, class or None, RGB uint8 array, hole bool array)`` entries, in set order:
    for callers that hold true masks already (the augmentation benchmark). Returns it opened."""
    folder = Path(folder)
    hashes: list[bytes] = []
    class_ids: list[int] = []
    names: dict[str, int] = {}
    offsets = [0]
    rels = bytearray()
    for rel, cls, rgb, hole in entries:
        h = rel_hash(rel)
        path = _bg_path(folder, h)
        path.parent.mkdir(parents=True, exist_ok=True)
        out = fill_hole(rgb, hole, fill, seed=int.from_bytes(h[:4], "big"))
        filled = hole if fill != "quilt-all" or hole.mean() > 0.9 else np.zeros_like(hole)
        buf = io.BytesIO()
        Image.fromarray(np.dstack([out, np.where(filled, 0, 255).astype(np.uint8)]), "RGBA").save(buf, "PNG",
                                                                                                   compress_level=1)
        _replace(path, buf.getvalue())
        hashes.append(h)
        class_ids.append(-1 if cls is None else names.setdefault(str(cls), len(names)))
        rels += rel.encode("utf-8")
        offsets.append(len(rels))
    _replace(folder / "rels.bin", bytes(rels))
    _replace(folder / "rel_offsets.npy", _npy(np.asarray(offsets, np.int64)))
    _write_index(folder, hashes, class_ids, names)
    return DonorStore(folder)


def _augment_tasks(plan: Any) -> Iterator[Any]:
    for task in plan.tasks():
        if task.kind == "augment" and not getattr(task.item, "error", None):
            yield task


def _bg_path(folder: Path, h: bytes) -> Path:
    x = h.hex()
    return folder / "bg" / x[:2] / f"{x}.png"


def _write_index(folder: Path, hashes: list[bytes], class_ids: list[int], names: dict[str, int]) -> None:
    n = len(hashes)
    # class ids renumbered by name, so the index depends on the set, never on its order
    by_name = sorted(names)
    remap = np.full(len(names) + 1, -1, np.int32)
    for new, name in enumerate(by_name):
        remap[names[name]] = new
    cls = np.asarray(class_ids, np.int32)
    cls = np.where(cls >= 0, remap[np.maximum(cls, 0)], -1).astype(np.int32)
    hs = np.frombuffer(b"".join(hashes), np.uint8).reshape(n, 16)
    # donors by class (classless last, as one block that is nobody's "own" class)
    key = np.where(cls >= 0, cls, len(by_name))
    order = np.argsort(key, kind="stable").astype(np.int64)
    sizes = [int((cls == c).sum()) for c in range(len(by_name))]
    by_hash = np.lexsort(hs.T[::-1]).astype(np.int64)
    for name, arr in (("hashes", hs), ("classes", cls), ("order", order), ("by_hash", by_hash)):
        _replace(folder / f"{name}.npy", _npy(arr))
    info = {"count": n, "classes": by_name, "class_sizes": sizes, "classless": int((cls < 0).sum()),
            "version": _VERSION}
    _replace(folder / "index.json", (json.dumps(info) + "\n").encode())


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _replace(path: Path, data: bytes) -> None:
    """Backdrop's own record files, replaced whole (the write protocol's atomic write)."""
    from ..outputs import atomic_write_bytes

    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return  # a rerun over the same set: the index stays as it was, not even touched
    except OSError:
        pass
    atomic_write_bytes(path, data)


def _clean_background(job: Any, worker: Any, task: Any, fill: str) -> bytes:
    """One image's clean background as RGBA PNG bytes (alpha: real pixels)."""
    from ..images import load_image
    from ..inpaint.opencv import hole_mask

    loaded = load_image(task.path, max_pixels=job.config.max_pixels)
    size = loaded.image.size
    mask, region, boxes = worker._label_masks(task.item, size)
    if mask is None and "segment" not in worker.pipe.skipped:  # the items' own mask, from the same cache
        from ..segment.itemmask import item_mask

        mask = item_mask(worker.pipe.segmenter, worker.pipe.config.segment, loaded.image, task.path, boxes=boxes,
                         region=region, cache=worker.cache, box_prompt=job.box_prompt, box_grow=job.box_grow,
                         label=Path(task.path).name).mask
    prep = worker.pipe.prepare(loaded, mask=mask, region=None if mask is not None else region, background=False)
    m = np.asarray(prep.mask) > 0
    if boxes:  # a donor loses its whole labelled boxes: no piece of an object may survive
        for x0, y0, x1, y1 in boxes:
            m[max(0, int(y0)):int(np.ceil(y1)), max(0, int(x0)):int(np.ceil(x1))] = True
    mask_img = Image.fromarray(np.where(m, 255, 0).astype(np.uint8), "L")
    hole = np.asarray(hole_mask(mask_img, job.config.inpaint.dilate)) > 0
    rgb = fill_hole(np.asarray(loaded.image), hole, fill, seed=int.from_bytes(rel_hash(task.rel)[:4], "big"),
                    inpainter=worker.pipe.inpainter, mask=mask_img)
    filled = hole if fill != "quilt-all" or hole.mean() > 0.9 else np.zeros_like(hole)  # re-stitched: all real
    rgba = np.dstack([rgb, np.where(filled, 0, 255).astype(np.uint8)])
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def fill_hole(rgb: np.ndarray, hole: np.ndarray, fill: str, *, seed: int, inpainter: Any = None,
              mask: Image.Image | None = None) -> np.ndarray:
    """The image with its hole filled: ``inpaint`` (the inpainter: a smooth smear), ``quilt``
    (patches of the image's own real background, stitched; the inpainter where too little is real)."""
    if not hole.any():
        return rgb.copy()
    if mask is None:
        mask = Image.fromarray(np.where(hole, 255, 0).astype(np.uint8), "L")
    if inpainter is None:
        from ..config import InpaintConfig
        from ..inpaint.opencv import TeleaInpainter

        inpainter = TeleaInpainter(InpaintConfig())
    if fill == "inpaint" or hole.mean() > 0.9:
        return np.asarray(inpainter(Image.fromarray(rgb), mask).convert("RGB")).copy()
    if fill not in ("quilt", "quilt-all"):
        raise ValueError(f"unknown fill {fill!r}")
    from .. import runlog
    from ..config import GenerateConfig
    from ..types import GenerateRequest, Prompt
    from .texture import TextureGenerator

    image = Image.fromarray(rgb)
    known = Image.fromarray(np.where(hole, 0, 255).astype(np.uint8), "L")
    patch = int(max(6, min(48, min(rgb.shape[:2]) // 6)))
    quiet = logging.getLogger("backdrop")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "patch reduced" on small pieces of background: not the user's business
    try:
        with runlog.collecting():
            quilt = TextureGenerator(GenerateConfig(patch=patch, variation=0.0))(
                GenerateRequest(image, mask, image, known, Prompt(""), seed=seed))
    finally:
        quiet.setLevel(level)
    if fill == "quilt-all":  # every pixel re-stitched from real patches: no hole left to see, layout moved
        return np.asarray(quilt).copy()
    # the fill fades into the real pixels over the hole's outer band (real background: the hole is the
    # mask grown by ``dilate``), so the quilt's seam against them is no outline of the object
    inside = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
    alpha = np.clip(inside / BLEND, 0.0, 1.0)[..., None]
    return (np.asarray(quilt) * alpha + rgb * (1 - alpha) + 0.5).astype(np.uint8)
