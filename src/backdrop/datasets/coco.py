"""COCO instances data sets: a JSON with ``images``, ``annotations`` and ``categories``.

Where the JSON and the images are looked for, in this order:

1. ``annotations/instances_<split>.json`` (or ``annotations/<split>.json``), the official layout,
   with the images in ``<split>/``, ``images/<split>/`` or ``images/``;
2. one ``*.json`` inside each split folder, the images beside it (Roboflow's
   ``train/_annotations.coco.json``);
3. one ``*.json`` at the root with the images in ``images/`` (or at the root); its split is read
   from its name (``instances_val.json`` -> ``val``), ``train`` otherwise.

An image's ``file_name`` is taken relative to that folder (or else to the root); the output's
``file_name`` values are always relative to the image folder, so the new set can be moved or copied
(an absolute name in a split copied unchanged is made relative too). Annotations
carry ``bbox`` [x, y, w, h], and ``segmentation`` as polygons (a list of flat lists) or an RLE
(``{"size": [h, w], "counts": ...}``, compressed or not; ``iscrowd`` 1 usually). Every other
field, top-level (``info``, ``licenses``, ...) or per record, is kept in the output, where images
and annotations get new ids (1, 2, ... in order of the images' paths) and each image records
``source_image_id``.

Bad input: a JSON that is not JSON, or has no ``images`` list, is an :class:`InputError` for the
set. Other faults make an :class:`Item` with ``error`` and the rest go on: an image listed but
missing on disk, a ``file_name`` listed twice, an annotation with an unknown ``category_id``, a
``bbox`` more than 1 px outside the image, a polygon of fewer than 3 points, an RLE whose size is
not the image's; annotations that point at an image id not in ``images`` become one error item per
such id (``rel`` = ``<json rel>#image_id=<id>``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..errors import InputError
from ..outputs import atomic_copy, atomic_text
from .base import (Dataset, Item, canonical_split, has_images, image_size,
                   is_split_name, posix_rel)
from .labels import Labels, Obj

BOX_TOL = 1.0  # px a bbox may stick out of the image (rounding in real annotation tools)
_HEAD = 1 << 20


def _split_of(stem: str) -> str:
    s = stem.lower()
    for prefix in ("instances_", "instances-", "_annotations.", "annotations_"):
        if s.startswith(prefix):
            s = s[len(prefix):]
    s = s.split(".")[0]
    return canonical_split(s) if is_split_name(s) else ""


def _looks_coco(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEAD)
    except OSError:
        return False
    return b'"images"' in head


def _load_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{path}: not a COCO instances file (no 'images' list)")
    for key in ("annotations", "categories"):
        if key in data and not isinstance(data[key], list):
            raise InputError(f"{path}: '{key}' must be a list")
    return data


def _layouts(root: Path) -> list[tuple[Path, str, list[Path]]]:
    """(json path, split, candidate image folders) for each instances JSON found."""
    found = []
    ann = root / "annotations"
    if ann.is_dir():
        for j in sorted(ann.glob("*.json")):
            stem = j.stem
            raw = stem[len("instances_"):] if stem.startswith("instances_") else stem
            if not (stem.startswith("instances_") or is_split_name(raw)):
                continue
            split = canonical_split(raw) if is_split_name(raw) else raw
            found.append((j, split, [root / raw, root / "images" / raw, root / "images", root]))
        if found:
            return found
    for d in sorted(p for p in root.iterdir() if p.is_dir() and is_split_name(p.name)):
        js = sorted(d.glob("*.json"))
        if len(js) == 1:
            found.append((js[0], canonical_split(d.name), [d, d / "images"]))
    if found:
        return found
    js = [j for j in sorted(root.glob("*.json")) if _looks_coco(j)]
    if len(js) == 1:
        j = js[0]
        found.append((j, _split_of(j.stem) or "train", [root / "images", root]))
    return found


class CocoDataset(Dataset):
    format = "coco"

    def __init__(self, root: Path, splits, info, sets: dict[str, dict]):
        super().__init__(root, splits, info)
        self._sets = sets  # json rel -> {"path", "split", "data", "base"}

    def _entries(self, chosen):
        out = []
        seen: dict[str, int] = {}
        for jrel, s in self._sets.items():
            if not self._wants(chosen, s["split"]):
                continue
            data, jpath, base = s["data"], s["path"], s["base"]
            cats = ({c.get("id") for c in data["categories"] if isinstance(c, dict)}
                    if "categories" in data else None)
            ids: dict = {}
            names: dict[str, list] = {}
            for rec in data["images"]:
                if not isinstance(rec, dict) or "file_name" not in rec or "id" not in rec:
                    continue
                ids.setdefault(rec["id"], []).append(rec)
                names.setdefault(str(rec["file_name"]), []).append(rec["id"])
            anns: dict = {}
            for a in data.get("annotations", []):
                if isinstance(a, dict):
                    anns.setdefault(a.get("image_id"), []).append(a)
            for iid, group in anns.items():
                if iid not in ids:
                    rel = f"{jrel}#image_id={iid}"
                    more = f" (and {len(group) - 1} more)" if len(group) > 1 else ""
                    err = (f"{jpath}: annotation {group[0].get('id')}{more} points at image id {iid}, "
                           "which is not in 'images'")
                    out.append((rel, s["split"], jpath, {"error": err}))
            for fname, iids in names.items():
                recs = [r for i in iids for r in ids[i]]
                rec = recs[0]
                path, base_rel = self._locate(base, fname)
                rel = posix_rel(path, self.root)
                meta = {"json": jrel, "json_path": jpath, "base_rel": base_rel, "image": rec,
                        "annotations": anns.get(rec["id"], []), "categories": cats}
                if len(recs) > 1:
                    meta["error"] = (f"{jpath}: file_name {fname!r} listed {len(recs)} times in 'images' "
                                     f"(ids {', '.join(str(r['id']) for r in recs)})")
                elif len(ids[rec["id"]]) > 1:
                    meta["error"] = f"{jpath}: image id {rec['id']} listed more than once in 'images'"
                if rel in seen:
                    continue
                seen[rel] = 1
                out.append((rel, s["split"], path, meta))
        return out

    def _locate(self, base: Path, fname: str) -> tuple[Path, str]:
        for b in (base, self.root):
            p = Path(os.path.normpath(b / fname))
            if p.is_file():
                return p, posix_rel(b, self.root)
        return Path(os.path.normpath(base / fname)), posix_rel(base, self.root)

    def _item(self, rel, split, path, meta):
        if meta.get("error"):
            return Item(path, rel, split, None, meta, error=meta["error"])
        jpath, rec = meta["json_path"], meta["image"]
        if not path.is_file():
            return Item(path, rel, split, None, meta,
                        error=f"{jpath}: image {rec['file_name']!r} (id {rec['id']}) is listed but {path} is missing")
        try:
            size = image_size(path)
        except ValueError as exc:
            return Item(path, rel, split, None, meta, error=f"{path}: {exc}")
        try:
            w, h = int(rec.get("width", size[0])), int(rec.get("height", size[1]))
        except (TypeError, ValueError):
            return Item(path, rel, split, None, meta, error=f"{jpath}: image id {rec['id']}: width/height not numbers")
        if (w, h) != size:
            return Item(path, rel, split, None, meta,
                        error=(f"{jpath}: image id {rec['id']} says {w}x{h}, but {path} is {size[0]}x{size[1]} "
                               "(upright)"))
        cats = meta.get("categories")
        meta = {k: v for k, v in meta.items() if k != "categories"} | {"size": size}
        objs = []
        for a in meta["annotations"]:
            try:
                objs.append(annotation_obj(a, size, cats))
            except ValueError as exc:
                return Item(path, rel, split, None, meta, error=f"{jpath}: annotation {a.get('id')}: {exc}")
        return Item(path, rel, split, Labels(tuple(objs)), meta)

    # -- writing ------------------------------------------------------------------------------
    def record(self, item: Item, image_rel: str, size: tuple[int, int]) -> dict:
        rec = dict(item.meta["image"])
        base_rel = item.meta.get("base_rel", "")
        fname = posixpath_rel(image_rel, base_rel)
        rec["file_name"] = fname
        rec["width"], rec["height"] = int(size[0]), int(size[1])
        rec["source_image_id"] = item.meta["image"]["id"]
        rec.pop("id", None)
        return {"json": item.meta["json"], "image": rec,
                "annotations": [dict(a) for a in item.meta.get("annotations", [])]}

    def passthrough(self, item: Item) -> dict[str, Path]:
        return {item.rel: item.path}

    def finalize(self, dst: Path, records: Iterable[dict], *, copied: Iterable[str] = ()) -> list[str]:
        dst = Path(dst)
        split_json = {s["split"]: jrel for jrel, s in self._sets.items()}
        spools: dict[str, tuple] = {}
        tmpdir = tempfile.TemporaryDirectory(prefix=".backdrop-coco-")
        written = []
        try:
            for r in records:
                jrel = r.get("json") or split_json.get(r.get("split", ""))
                if jrel is None or "image" not in r:
                    continue
                if jrel not in spools:
                    fh = open(Path(tmpdir.name) / f"{len(spools)}.jsonl", "w+b")
                    spools[jrel] = (fh, [])
                fh, index = spools[jrel]
                line = json.dumps({"image": r["image"], "annotations": r.get("annotations", [])},
                                  ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                index.append((r["rel"], fh.tell(), len(line)))
                fh.write(line + b"\n")
            for jrel, (fh, index) in spools.items():
                index.sort(key=lambda e: e[0])
                self._write_json(dst / jrel, self._sets[jrel]["data"], fh, index)
                written.append(jrel)
            for split in copied:
                jrel = split_json.get(canonical_split(split) if split else split)
                if jrel is not None and jrel not in spools:
                    self._copy_json(jrel, dst / jrel)
                    written.append(jrel)
        finally:
            for fh, _ in spools.values():
                fh.close()
            tmpdir.cleanup()
        return sorted(written)

    def _copy_json(self, jrel: str, final: Path) -> None:
        """A split copied unchanged keeps its JSON byte for byte, unless a ``file_name`` is an
        absolute path: that one would point the new set at the source, so it is made relative
        (to the image folder, as the other names are) and the JSON written again."""
        s = self._sets[jrel]
        renamed: dict[int, str] = {}
        for n, rec in enumerate(s["data"]["images"]):
            if isinstance(rec, dict) and os.path.isabs(str(rec.get("file_name", ""))):
                path, base_rel = self._locate(s["base"], str(rec["file_name"]))
                rel = posix_rel(path, self.root)
                if not rel.startswith("../"):  # (an image outside the set was reported, not copied)
                    renamed[n] = posixpath_rel(rel, base_rel)
        if not renamed:
            atomic_copy(s["path"], final)
            return
        data = dict(s["data"])
        data["images"] = [dict(rec, file_name=renamed[n]) if n in renamed else rec
                          for n, rec in enumerate(s["data"]["images"])]
        with atomic_text(final) as fh:
            json.dump(data, fh, ensure_ascii=False, separators=(",", ":"))
            fh.write("\n")

    @staticmethod
    def _write_json(path: Path, head: dict, spool, index) -> None:
        def read(off, n):
            spool.seek(off)
            return json.loads(spool.read(n).decode("utf-8"))

        dumps = lambda o: json.dumps(o, ensure_ascii=False, separators=(",", ":"))  # noqa: E731
        keys = list(head)
        if "annotations" not in keys:
            keys.append("annotations")
        with atomic_text(path) as out:
            out.write("{")
            for i, key in enumerate(keys):
                out.write(("," if i else "") + dumps(key) + ":")
                if key == "images":
                    out.write("[")
                    for n, (_, off, ln) in enumerate(index, 1):
                        img = read(off, ln)["image"]
                        img = {"id": n} | {k: v for k, v in img.items() if k != "id"}
                        out.write(("," if n > 1 else "") + dumps(img))
                    out.write("]")
                elif key == "annotations":
                    out.write("[")
                    aid = 0
                    for n, (_, off, ln) in enumerate(index, 1):
                        for a in read(off, ln)["annotations"]:
                            aid += 1
                            a = {"id": aid} | {k: v for k, v in a.items() if k != "id"} | {"image_id": n}
                            out.write(("," if aid > 1 else "") + dumps(a))
                    out.write("]")
                else:
                    out.write(dumps(head[key]))
            out.write("}\n")


def posixpath_rel(rel: str, base_rel: str) -> str:
    if not base_rel or base_rel == ".":
        return rel
    return PurePosixPath(os.path.relpath(rel, base_rel)).as_posix()


def annotation_obj(a: dict, size: tuple[int, int], categories: set | None = None) -> Obj:
    """One COCO annotation as an :class:`Obj` in pixels; raises ValueError('why') if it is bad."""
    w, h = size
    cat = a.get("category_id")
    if categories is not None and cat not in categories:
        raise ValueError(f"unknown category_id {cat!r}")
    bbox = a.get("bbox")
    box = None
    if bbox is not None:
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise ValueError(f"bbox must be [x, y, width, height], got {bbox!r}")
        x, y, bw, bh = (float(v) for v in bbox)
        if bw < 0 or bh < 0:
            raise ValueError(f"bbox {bbox} has a negative width or height")
        if x < -BOX_TOL or y < -BOX_TOL or x + bw > w + BOX_TOL or y + bh > h + BOX_TOL:
            raise ValueError(f"bbox {bbox} lies outside the {w}x{h} image")
        box = (x, y, x + bw, y + bh)
    seg = a.get("segmentation")
    polygons: tuple = ()
    rle = None
    if isinstance(seg, list) and seg:
        polys = []
        for p in seg:
            if not isinstance(p, list) or not all(isinstance(v, (int, float)) for v in p):
                raise ValueError("segmentation polygon must be a flat list of numbers")
            if len(p) % 2 or len(p) < 6:
                raise ValueError(f"segmentation polygon with {len(p) / 2:g} points (needs >= 3)")
            polys.append(tuple(float(v) for v in p))
        polygons = tuple(polys)
    elif isinstance(seg, dict):
        if "counts" not in seg or not isinstance(seg.get("size"), list) or len(seg["size"]) != 2:
            raise ValueError("segmentation RLE needs 'size' [h, w] and 'counts'")
        if [int(v) for v in seg["size"]] != [h, w]:
            raise ValueError(f"segmentation RLE size {seg['size']} is not the image's [{h}, {w}]")
        counts = seg["counts"]
        if isinstance(counts, list) and sum(int(c) for c in counts) != h * w:
            raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, not {h}*{w}")
        rle = {"size": [h, w], "counts": counts}
    elif seg not in (None, [], {}):
        raise ValueError(f"segmentation must be polygons or an RLE, got {type(seg).__name__}")
    if box is None:
        if polygons:
            xs = [v for p in polygons for v in p[0::2]]
            ys = [v for p in polygons for v in p[1::2]]
            box = (min(xs), min(ys), max(xs), max(ys))
        elif rle is not None:
            from pycocotools import mask as mask_utils

            enc = mask_utils.frPyObjects(rle, h, w) if isinstance(rle["counts"], list) else \
                {"size": [h, w], "counts": rle["counts"].encode() if isinstance(rle["counts"], str) else rle["counts"]}
            x, y, bw, bh = (float(v) for v in mask_utils.toBbox(enc))
            box = (x, y, x + bw, y + bh)
        else:
            raise ValueError("no bbox and no segmentation")
    extra = {k: v for k, v in a.items() if k not in ("bbox", "segmentation", "category_id")}
    return Obj(int(cat) if isinstance(cat, (int, float)) else -1, box, polygons, rle, extra)


class CocoFormat:
    name = "coco"
    looks_for = "annotations/instances_<split>.json, <split>/*.json or one *.json beside images/"
    fallback = False

    def detect(self, root: Path) -> str | None:
        root = Path(root)
        if not root.is_dir():
            return None
        found = _layouts(root)
        if not found:
            return None
        parts = ", ".join(f"{posix_rel(j, root)} ({split})" for j, split, _ in found)
        return f"COCO instances data set ({parts})"

    def open(self, root: Path) -> CocoDataset:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: no such folder")
        found = _layouts(root)
        if not found:
            raise InputError(f"{root}: no COCO JSON found (annotations/instances_<split>.json, "
                             "<split>/*.json or one *.json beside images/)")
        sets, cats = {}, []
        for j, split, cands in found:
            data = _load_json(j)
            base = self._base(data, cands, root)
            sets[posix_rel(j, root)] = {"path": j, "split": split, "data": data, "base": base}
            cats = data.get("categories", cats)
        splits = sorted({s["split"] for s in sets.values()}, key=lambda s: ("train", "val", "test").index(s)
                        if s in ("train", "val", "test") else 9)
        info = {"categories": cats, "jsons": list(sets), "description": "COCO instances"}
        return CocoDataset(root, splits, info, sets)

    @staticmethod
    def _base(data: dict, cands: list[Path], root: Path) -> Path:
        names = [str(r["file_name"]) for r in data["images"][:20] if isinstance(r, dict) and "file_name" in r]
        existing = [c for c in cands if c.is_dir()]
        for c in existing:
            if names and sum((c / n).is_file() for n in names) * 2 >= len(names):
                return c
        for c in existing:
            if has_images(c, recursive=False):
                return c
        return existing[0] if existing else root


FORMAT = CocoFormat()
