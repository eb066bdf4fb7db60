"""YOLO data sets in the Ultralytics layout (written here; the AGPL ``ultralytics`` is not used).

Layout read::

    data.yaml              path: (optional), train/val/test: a folder, a list of folders or a .txt
                           list of image files (relative to path), names: a list or {id: name}
    images/train/001.jpg
    labels/train/001.txt   one object a line, normalised to 0..1:
                             detection:     cls cx cy w h
                             segmentation:  cls x1 y1 x2 y2 x3 y3 ...   (a polygon, >= 3 points)

A label file's path is the image's with its last ``images`` folder replaced by ``labels`` and the
suffix by ``.txt``. An image without a label file is a background-only image (``Labels(())``,
``meta["background"]``). Without a data.yaml, ``images/`` and ``labels/`` side by side are read
(split folders under ``images/`` if there are any), and no class names are known.

``path`` in data.yaml: an absolute path is used if it exists; a relative one is taken from the
yaml's folder; if neither holds the named folders, the yaml's own folder is tried (a moved set).
A split entry ``../x`` that does not exist is also tried as ``x`` (Ultralytics' rule, which
Roboflow's exports rely on: ``train: ../train/images``).

The output's data.yaml is the source's file with only what must change changed (comments, key
order and quoting kept; :mod:`.yamledit`), so the new set is as relocatable as the source was:

- ``path`` is kept when it names the yaml's own folder (absent, ``""``, ``.``); any other
  value (an absolute path, ``../datasets/cells``) would point the new set at the source, so it
  is removed: Ultralytics then takes the yaml's folder as the root, wherever the set is moved.
  (Ultralytics resolves a *relative* ``path`` against the working directory, then its datasets
  folder, so ``path: .`` only works when run from the set's folder; it is kept because the
  source had it.)
- split folders keep their text when it is relative and stays inside the set; absolute or
  ``../`` entries become the folder's path relative to the set;
- ``.txt`` lists are written again, one ``./<path>`` line per image relative to the list's folder
  (Ultralytics reads ``./`` lines relative to the list file), so they travel with the set;
- ``download`` is removed (it fetches the source set, not this one).
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..errors import InputError
from ..outputs import atomic_text
from .base import (Dataset, Item, canonical_split, has_images, image_size, is_image,
                   is_split_name, posix_rel, scan_images)
from .labels import Labels, Obj
from .yamledit import DELETE, set_keys

log = logging.getLogger(__name__)

YAML_NAMES = ("data.yaml", "data.yml")
SPLIT_KEYS = ("train", "val", "test")
EPS = 1e-6  # tolerance for printed coordinates such as 1.0000001


def _load_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with train/val/names, got {type(data).__name__}")
    return data


def find_yaml(root: Path) -> Path | None:
    for name in YAML_NAMES:
        if (root / name).is_file():
            return root / name
    cands = []
    for p in sorted(root.glob("*.y*ml")):
        if p.suffix.lower() not in (".yaml", ".yml") or not p.is_file():
            continue
        try:
            head = p.read_text(encoding="utf-8", errors="replace")[:65536]
        except OSError:
            continue
        if "names" in head and ("train" in head or "val" in head):
            cands.append(p)
    return cands[0] if len(cands) == 1 else None


def label_rel_for(image_rel: str) -> str:
    """``images/train/001.jpg`` -> ``labels/train/001.txt`` (the last ``images`` component)."""
    parts = list(PurePosixPath(image_rel).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return str(PurePosixPath(*parts).with_suffix(".txt"))


def label_path_for(image: Path) -> Path:
    """Ultralytics' rule on the full path: the last ``/images/`` becomes ``/labels/``."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        s = sb.join(s.rsplit(sa, 1))
    return Path(s).with_suffix(".txt")


def _names(data: dict, where: Path) -> dict[int, str] | None:
    names = data.get("names")
    if names is None:
        nc = data.get("nc")
        return {i: str(i) for i in range(int(nc))} if isinstance(nc, int) else None
    if isinstance(names, list):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict):
        try:
            return {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise InputError(f"{where}: names: keys must be class numbers") from None
    raise InputError(f"{where}: names: expected a list or a mapping, got {type(names).__name__}")


def parse_label_text(text: str, size: tuple[int, int], names: dict[int, str] | None,
                     where: str) -> Labels:
    """Parse a YOLO label file's text into pixel labels; raises ValueError('file:line: why')."""
    w, h = size
    objs = []
    for n, line in enumerate(text.splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        at = f"{where}:{n}"
        if len(cols) != 5 and (len(cols) < 7 or len(cols) % 2 == 0):
            raise ValueError(f"{at}: {len(cols)} columns; expected 5 (class cx cy w h) or a class and "
                             "a polygon of >= 3 x y points (an odd number >= 7)")
        try:
            cls_f = float(cols[0])
            vals = [float(c) for c in cols[1:]]
        except ValueError:
            raise ValueError(f"{at}: not numbers: {line.strip()[:60]!r}") from None
        if not cls_f.is_integer() or cls_f < 0:
            raise ValueError(f"{at}: class {cols[0]!r} is not a class number")
        cls = int(cls_f)
        if names is not None and cls not in names:
            raise ValueError(f"{at}: unknown class id {cls} (data.yaml names {len(names)} classes)")
        if any(not math.isfinite(v) or v < -EPS or v > 1 + EPS for v in vals):
            bad = next(v for v in vals if not math.isfinite(v) or v < -EPS or v > 1 + EPS)
            raise ValueError(f"{at}: coordinate {bad:g} outside 0..1 (YOLO coordinates are normalised)")
        if len(cols) == 5:
            cx, cy, bw, bh = vals
            if bw <= 0 or bh <= 0:
                raise ValueError(f"{at}: box width and height must be > 0")
            box = ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h)
            objs.append(Obj(cls, box))
        else:
            xs, ys = [v * w for v in vals[0::2]], [v * h for v in vals[1::2]]
            flat = tuple(c for xy in zip(xs, ys) for c in xy)
            objs.append(Obj(cls, (min(xs), min(ys), max(xs), max(ys)), polygons=(flat,)))
    return Labels(tuple(objs))


class YoloDataset(Dataset):
    format = "yolo"

    def __init__(self, root: Path, splits: list[str], info: dict,
                 sources: dict[str, list[tuple[str, object]]], yaml_path: Path | None, yaml_data: dict | None,
                 keys: dict[str, list[tuple[str, str, Path]]] | None = None):
        super().__init__(root, splits, info)
        self._sources = sources  # split -> [("dir" | "txt", Path)]
        self._keys = keys or {}  # data.yaml key -> [(entry as written, "dir" | "txt", resolved Path)]
        self.yaml_path = yaml_path
        self.yaml_data = yaml_data

    @property
    def names(self) -> dict[int, str] | None:
        return self.info.get("names")

    def _entries(self, chosen):
        out, seen = [], set()
        for split, srcs in self._sources.items():
            if not self._wants(chosen, split):
                continue
            for kind, where in srcs:
                if kind == "dir":
                    paths = scan_images(where)
                    errs = {}
                else:
                    paths, errs = self._list_file(where)
                for p in paths:
                    rel = posix_rel(p, self.root)
                    if rel in seen:
                        continue
                    seen.add(rel)
                    out.append((rel, split, p, {"list_error": errs.get(p)} if p in errs else {}))
        return out

    def _list_file(self, txt: Path) -> tuple[list[Path], dict[Path, str]]:
        paths, errs = [], {}
        for n, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
            s = line.strip()
            if not s or s.startswith("#"):
                continue
            p = Path(s) if os.path.isabs(s) else txt.parent / s
            p = Path(os.path.normpath(p))
            paths.append(p)
            if not p.is_file():
                errs[p] = f"{txt}:{n}: {s}: no such image"
        return paths, errs

    def _item(self, rel, split, path, meta):
        if meta.get("list_error"):
            return Item(path, rel, split, None, meta, error=meta["list_error"])
        label = label_path_for(path)
        meta = {"label_file": label if label.is_file() else None, "background": not label.is_file()}
        try:
            size = image_size(path)
        except ValueError as exc:
            return Item(path, rel, split, None, meta, error=f"{path}: {exc}")
        meta["size"] = size
        if not label.is_file():
            return Item(path, rel, split, Labels(()), meta)
        try:
            text = label.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return Item(path, rel, split, None, meta, error=f"{label}: cannot read ({exc})")
        try:
            labels = parse_label_text(text, size, self.names, str(label))
        except ValueError as exc:
            return Item(path, rel, split, None, meta, error=str(exc))
        return Item(path, rel, split, labels, meta)

    # -- writing ------------------------------------------------------------------------------
    def label_files(self, item: Item, image_rel: str) -> dict[str, bytes]:
        src = item.meta.get("label_file")
        if src is None:
            return {}  # a background image stays one: no label file, as in the source
        return {label_rel_for(image_rel): Path(src).read_bytes()}

    def passthrough(self, item: Item) -> dict[str, Path]:
        out = {item.rel: item.path}
        src = item.meta.get("label_file") if item.meta else label_path_for(item.path)
        if src is not None and Path(src).is_file():
            out[label_rel_for(item.rel)] = Path(src)
        return out

    def finalize(self, dst: Path, records: Iterable[dict], *, copied: Iterable[str] = ()) -> list[str]:
        dst = Path(dst)
        rels: dict[str, list[str]] = {}
        for r in records:
            rels.setdefault(r.get("split", ""), []).append(r["rel"])
        for split in copied:
            if split not in rels:
                rels[split] = [it.rel for it in self.items([split])]
        if self.yaml_data is None:
            return []  # the source had no data.yaml; the output mirrors it
        written: list[str] = []
        changes: dict[str, object] = {}
        if "path" in self.yaml_data and not _names_own_folder(self.yaml_data["path"]):
            changes["path"] = DELETE  # it points at the source (or nowhere): the yaml's folder is the root
        if "download" in self.yaml_data:
            changes["download"] = DELETE
        for key in SPLIT_KEYS:
            raw = self.yaml_data.get(key)
            if key not in self.yaml_data or raw in (None, "", []):
                continue  # an empty key ("test:  # optional") stays as written
            split = canonical_split(key)
            if split not in rels:
                changes[key] = DELETE  # a split left out (--drop-other-splits)
                continue
            value = self._split_value(key, raw, rels[split], dst, written)
            if value != raw:
                changes[key] = value
        yaml_rel = self.yaml_path.name
        try:
            new = set_keys(self.yaml_path.read_text(encoding="utf-8"), changes)
        except (OSError, UnicodeDecodeError):  # gone or changed since it was read: write the mapping
            new = None
        if new is None:  # a layout the line edit does not handle: the mapping itself, without comments
            import yaml

            log.info("%s: written without its comments (a layout that cannot be edited line by line)", yaml_rel)
            data = {k: v for k, v in self.yaml_data.items() if changes.get(k, None) is not DELETE}
            data.update({k: v for k, v in changes.items() if v is not DELETE})
            new = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        with atomic_text(dst / yaml_rel, newline="") as fh:
            fh.write(new)
        written.append(yaml_rel)
        return written

    def _split_value(self, key: str, raw, rels: list[str], dst: Path, written: list[str]):
        """The value of split ``key`` in the new data.yaml: folders as they were written (made
        relative where they were not), or a ``.txt`` list written again for the new images."""
        entries = self._keys.get(key, [])
        if all(kind == "dir" for _, kind, _ in entries):
            texts = []
            for text, _, where in entries:
                kept = _inside_text(text)
                if kept is not None:
                    texts.append(text)
                    continue
                rel = posix_rel(where, self.root)
                if rel != ".." and not rel.startswith("../"):  # (outside the root nothing was written)
                    texts.append(rel)
            return texts if isinstance(raw, list) else (texts[0] if texts else raw)
        # the source listed files: list the written images the same way, where they travel along
        text, _, where = next(e for e in entries if e[1] == "txt")
        list_rel = posix_rel(where, self.root)
        folder = posixpath.dirname(list_rel)
        if list_rel.startswith("../") or (folder and not all(r.startswith(folder + "/") for r in rels)):
            list_rel, folder = f"{key}.txt", ""  # a list outside the set, or above none of its images
        with atomic_text(dst / list_rel) as fh:
            for rel in sorted(rels):
                fh.write(f"./{posixpath.relpath(rel, folder) if folder else rel}\n")
        written.append(list_rel)
        return text if _inside_text(text) == list_rel else list_rel


def _names_own_folder(value) -> bool:
    """True for a data.yaml ``path`` that means the yaml's own folder wherever the set is."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    return isinstance(value, str) and not os.path.isabs(os.path.expanduser(value)) and os.path.normpath(value) == "."


def _inside_text(text) -> str | None:
    """The normalised relative path of a data.yaml entry that stays inside the set, else None."""
    if not isinstance(text, str) or os.path.isabs(os.path.expanduser(text)):
        return None
    norm = posixpath.normpath(text.replace(os.sep, "/"))
    return None if norm == ".." or norm.startswith("../") else norm


class YoloFormat:
    name = "yolo"
    looks_for = "data.yaml, or images/ + labels/"
    fallback = False

    def detect(self, root: Path) -> str | None:
        root = Path(root)
        y = find_yaml(root)
        if y is not None:
            try:
                data = _load_yaml(y)
            except InputError:
                return f"YOLO data set ({y.name}, which does not parse)"
            if isinstance(data, dict) and ("train" in data or "val" in data):
                names = data.get("names")
                n = len(names) if isinstance(names, (list, dict)) else "?"
                splits = [k for k in SPLIT_KEYS if data.get(k)]
                return f"YOLO data set ({y.name}: {n} classes, splits {', '.join(splits)})"
        if (root / "images").is_dir() and (root / "labels").is_dir() and has_images(root / "images"):
            if any(p.suffix == ".txt" for p in (root / "labels").rglob("*.txt")):
                return "YOLO data set (images/ and labels/, no data.yaml)"
        return None

    def open(self, root: Path) -> YoloDataset:
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: no such folder")
        y = find_yaml(root)
        if y is None:
            return self._open_plain(root)
        data = _load_yaml(y)
        names = _names(data, y)
        keys = [k for k in SPLIT_KEYS if data.get(k)]
        if not keys:
            raise InputError(f"{y}: names no train/val/test folders")
        bases = []
        if data.get("path"):
            p = Path(str(data["path"])).expanduser()
            bases.append(p if p.is_absolute() else y.parent / p)
        bases.append(y.parent)
        missing_first = None
        for base in bases:
            sources, by_key, missing = self._sources(base, data, keys)
            if missing is None:
                break
            missing_first = missing_first or missing
        else:
            key, where = missing_first
            raise InputError(f"{y}: {key}: {where} does not exist")
        info = {"names": names, "yaml": y.name, "description": f"YOLO ({y.name})"}
        return YoloDataset(Path(os.path.normpath(base)), list(sources), info, sources, y, data, by_key)

    @staticmethod
    def _sources(base: Path, data: dict, keys: list[str]):
        """({split: [(kind, path)]}, {key: [(entry, kind, path)]}, None), or (None, None, (key, the
        first path missing)) when ``base`` does not hold the named folders."""
        sources: dict[str, list] = {}
        by_key: dict[str, list] = {}
        for key in keys:
            raw = data[key]
            entries = raw if isinstance(raw, list) else [raw]
            for e in entries:
                if not isinstance(e, str):
                    raise InputError(f"{key}: expected a folder or a .txt list, got {e!r}")
                p = Path(e) if os.path.isabs(e) else base / e
                p = Path(os.path.normpath(p))
                if not p.exists() and e.startswith("../"):
                    p = Path(os.path.normpath(base / e[3:]))  # Ultralytics' second try
                if not p.exists():
                    return None, None, (key, p)
                kind = "txt" if p.is_file() and p.suffix.lower() == ".txt" else "dir"
                if kind == "dir" and not p.is_dir():
                    raise InputError(f"{key}: {p} is neither a folder nor a .txt list of images")
                sources.setdefault(canonical_split(key), []).append((kind, p))
                by_key.setdefault(key, []).append((e, kind, p))
        return sources, by_key, None

    def _open_plain(self, root: Path) -> YoloDataset:
        images = root / "images"
        if not images.is_dir():
            raise InputError(f"{root}: no data.yaml and no images/ folder (a YOLO set has one or both)")
        sources: dict[str, list] = {}
        subs = sorted(d for d in images.iterdir() if d.is_dir() and not d.name.startswith("."))
        if subs and not any(is_image(p) for p in images.iterdir() if p.is_file()) and all(is_split_name(d.name) for d in subs):
            for d in subs:
                sources.setdefault(canonical_split(d.name), []).append(("dir", d))
        else:
            sources[""] = [("dir", images)]
        info = {"names": None, "yaml": None, "description": "YOLO (images/ + labels/)"}
        return YoloDataset(root, list(sources), info, sources, None, None)


FORMAT = YoloFormat()
