"""Contact sheets: ``backdrop preview SET`` writes one offline HTML page that shows a data set.

One row per source image: the source (``source=``: the set that was augmented; or the original
when the set includes it), then its variants, each a thumbnail with its labels drawn over it as
SVG (boxes as ``<rect>``, polygons as ``<polygon>``, class names and colours from the set's
names), the variant's seed, generator and check scores from ``manifest.jsonl``, and flags for
what deserves a look (a failed check kept, a box fallback, a changed object, a label error).
The page filters by split, class and flag and shows one page of rows at a time, so a set of
10 000 images opens at once.

Where things go::

    SET/preview.html                       the sheet; every path in it is relative to it
    SET/.backdrop/preview/thumbs/ab/*.jpg  its thumbnails, cached by file (see thumbs.py)
    OUT.html, OUT_files/ab/*.jpg           with ``out=`` elsewhere: the sheet and its thumbnails,
                                           and nothing is written into the set (a source set, a
                                           read-only one)

``.backdrop/`` is the folder every loader already passes over (see ``datasets/side.py``), so
the thumbnails never become training images, and the set moves or zips with its sheet.

>>> from backdrop.preview import build_preview
>>> sheet = build_preview("cells-backdrop", source="cells")   # doctest: +SKIP
>>> sheet.path, sheet.images, sheet.rows                       # doctest: +SKIP
(PosixPath('cells-backdrop/preview.html'), 26, 10)
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote

from ..errors import InputError, OutputError
from ..outputs import MANIFEST, RECORD_DIR
from .page import MARKER, render
from .thumbs import THUMB_PX, ThumbCache

log = logging.getLogger(__name__)

PREVIEW_DIR = f"{RECORD_DIR}/preview"
SHEET_NAME = "preview.html"
FLAGS = {
    "failed": "a background check failed; the variant was kept",
    "retried": "a background was made again after a failed check",
    "fallback": "the mask missed a labelled object: its whole box was kept",
    "changed": "object pixels differ from the source",
    "error": "the labels cannot be read",
    "unreadable": "the image cannot be read",
    "empty": "no labelled object",
}


@dataclass(frozen=True)
class Sheet:
    path: Path
    images: int  # cards on the sheet (source images included)
    rows: int  # source images (one row each)
    labels: int  # label shapes drawn
    thumbs_made: int
    thumbs_reused: int
    flagged: int  # cards with at least one flag


def class_names(ds) -> dict[int, str]:
    names = ds.info.get("names")
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items()}
    out = {}
    for c in ds.info.get("categories") or ():
        if isinstance(c, dict) and "id" in c:
            out[int(c["id"])] = str(c.get("name", c["id"]))
    return out


def _manifest(root: Path) -> dict[str, dict]:
    """image rel -> the few manifest fields the sheet shows (the lines' other fields are dropped
    as they are read, so a large manifest is never held whole)."""
    found: dict[str, dict] = {}
    path = root / MANIFEST
    if not path.is_file():
        return found
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                m = json.loads(line)
            except ValueError:
                log.warning("%s:%d: not a JSON line; passed over", path, n)
                continue
            if not isinstance(m, dict) or not isinstance(m.get("image"), str):
                continue
            c: dict = {"src": m.get("source") or m["image"], "v": int(m.get("variant") or 0)}
            if m.get("original"):
                c["orig"] = True
            if m.get("seed") is not None:
                c["seed"] = m["seed"]
            gen = (m.get("backends") or {}).get("generate")
            if gen:
                c["gen"] = gen
            flags = []
            checks = m.get("checks") or {}
            if checks.get("scores"):
                c["scores"] = checks["scores"]
            if checks and checks.get("passed") is False:
                flags.append("failed")
            if (checks.get("tries") or 1) > 1:
                flags.append("retried")
            lc = m.get("label_check") or {}
            if lc.get("box_fallback"):
                flags.append("fallback")
            if lc.get("objects") is not None and lc.get("unchanged") is not None and lc["unchanged"] < lc["objects"]:
                flags.append("changed")
            if flags:
                c["flags"] = flags
            found[m["image"]] = c
    return found


def _shapes(labels, names: dict[int, str]) -> list:
    """[class id, x0, y0, x1, y1, [polygon, ...]] per object, pixels rounded to 0.1."""
    out = []
    if labels is None:
        return out
    for o in labels.objects:
        polys = [[round(float(v), 1) for v in p] for p in o.polygons]
        out.append([int(o.category), *(round(float(v), 1) for v in o.box), polys])
    return out


def _href(target: Path, base: Path) -> str:
    return quote(Path(os.path.relpath(target, base)).as_posix())


def _rows_of(ds, man: dict[str, dict], names: dict[int, str], splits) -> tuple[dict[str, dict], list[dict]]:
    rows: dict[str, dict] = {}
    cards: list[dict] = []
    for item in ds.items(splits):
        m = man.get(item.rel, {})
        key = m.get("src", item.rel)
        # a variant; the original kept beside its variants; a file copied unchanged (another split);
        # or, in a set that backdrop did not write, just an image
        kind = ("variant" if m.get("v") else "original" if m.get("orig") else "copy" if m or man else "image")
        card = {"rel": item.rel, "path": item.path, "k": kind, "v": m.get("v", 0),
                "l": _shapes(item.labels, names)}
        if item.labels is not None and item.labels.mask_file is not None:
            card["mask_file"] = item.labels.mask_file
        for f in ("seed", "gen", "scores"):
            if f in m:
                card[f] = m[f]
        flags = list(m.get("flags", ()))
        if item.error:
            flags.append("error")
            card["err"] = item.error
        elif item.labels is not None and not item.labels.objects and item.labels.mask_file is None:
            flags.append("empty")
        if flags:
            card["flags"] = flags
        cls = item.meta.get("class") if isinstance(item.meta, dict) else None
        if isinstance(cls, str):
            card["cls"] = cls
        row = rows.get(key)
        if row is None:
            row = rows[key] = {"src": key, "sp": item.split, "c": []}
        row["c"].append(len(cards))
        cards.append(card)
    return rows, cards


def build_preview(set_root: str | Path, out: str | Path | None = None, *, source: str | Path | None = None,
                  format: str = "auto", splits: Iterable[str] | None = None, thumb_px: int = THUMB_PX,
                  per_page: int = 50, workers: int | None = None, title: str | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> Sheet:
    """Write the contact sheet of the data set at ``set_root`` (see the module docstring).

    ``source`` is the set it was augmented from: its images lead each row; ``title`` heads the
    page (default: the set's folder name). ``on_progress(done,
    total)`` is called as thumbnails are made. Raises InputError when ``set_root`` holds no data
    set, OutputError when the sheet cannot be written or its name is taken by a file backdrop did
    not write.
    """
    from ..datasets import open_dataset

    root = Path(set_root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    out_path = Path(out) if out is not None else root / SHEET_NAME
    if out_path.is_dir():
        out_path = out_path / SHEET_NAME
    if out_path.exists() and not _is_ours(out_path):
        raise OutputError(f"{out_path} exists and was not written by backdrop preview; choose another name with -o")
    ds = open_dataset(root, format)
    names = class_names(ds)
    man = _manifest(root)
    chosen = list(splits) if splits else None
    rows, cards = _rows_of(ds, man, names, chosen)
    if source is not None:
        src_root = Path(source)
        sds = open_dataset(src_root, "auto")
        names = {**class_names(sds), **names}
        for item in sds.items(chosen):
            row = rows.get(item.rel)
            # only rows with variants; a copied or included original is this same picture already
            if row is None or {cards[i]["k"] for i in row["c"]} & {"copy", "original", "image"} \
                    or not row["c"]:
                continue
            card = {"rel": item.rel, "path": item.path, "k": "source", "v": 0, "l": _shapes(item.labels, names)}
            if item.labels is not None and item.labels.mask_file is not None:
                card["mask_file"] = item.labels.mask_file
            if item.error:
                card["flags"], card["err"] = ["error"], item.error
            row["c"].insert(0, len(cards))
            cards.append(card)
    if not cards:
        raise InputError(f"{root}: the data set has no images" + (f" in splits {', '.join(chosen)}" if chosen else ""))

    if out_path.absolute() == (root / SHEET_NAME).absolute():
        thumbs_dir = root / PREVIEW_DIR / "thumbs"
    else:  # a sheet elsewhere keeps its thumbnails beside it ("Save page as" style): the set is not written to
        thumbs_dir = out_path.with_name(out_path.stem + "_files")
    from ..outputs import io_error
    from .files import Writer

    try:
        thumbs_dir.mkdir(parents=True, exist_ok=True)
        writer = Writer(thumbs_dir / ".partial")  # same file system as the thumbnails and the sheet beside them
        cache = ThumbCache(thumbs_dir, thumb_px, root, writer)
        _thumbnails(cards, cache, workers, on_progress)
        cache.prune()
    except OSError as exc:  # read-only, full disk: one line naming the folder, and no sheet
        raise io_error(exc, thumbs_dir, "cannot write the thumbnails to") from None

    base = out_path.parent.resolve() if out_path.parent.exists() else out_path.parent.absolute()
    order = sorted(rows.values(), key=lambda r: r["src"])
    data_rows = []
    n_labels = flagged = 0
    for row in order:
        cs = sorted((cards[i] for i in row["c"]), key=lambda c: ({"source": 0, "variant": 2}.get(c["k"], 1), c["v"], c["rel"]))
        out_cards = []
        for c in cs:
            d = {"n": c["rel"], "k": c["k"], "h": _href(c["path"], base)}
            if "thumb" in c:
                d["t"] = _href(thumbs_dir / c["thumb"], base)
                d["w"], d["H"] = c["size"]
            for f in ("v", "seed", "gen", "scores", "flags", "err", "cls", "l"):
                if c.get(f) not in (None, [], {}, 0):
                    d[f] = c[f]
            n_labels += len(c["l"])
            flagged += bool(c.get("flags"))
            out_cards.append(d)
        data_rows.append({"s": row["src"], "sp": row["sp"], "c": out_cards})
    used = sorted({o[0] for c in cards for o in c["l"]} | set())
    data = {
        "title": title or root.resolve().name, "format": ds.format, "per": int(per_page),
        "names": {str(k): v for k, v in sorted(names.items())},
        "classes": [str(k) for k in used] + sorted({c["cls"] for c in cards if "cls" in c}),
        "splits": list(dict.fromkeys(r["sp"] for r in data_rows)),
        "flags": FLAGS, "rows": data_rows,
    }
    html = render(data)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        _write_sheet(out_path, html.encode("utf-8"), writer)
        writer.close()
    except OSError as exc:
        raise io_error(exc, out_path) from None
    return Sheet(out_path, len(cards), len(data_rows), n_labels, cache.made, cache.reused, flagged)


def _is_ours(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return MARKER.encode() in fh.read(2048)
    except OSError:
        return False


def _write_sheet(path: Path, data: bytes, writer) -> None:
    if writer.new(path, data):
        return
    if not _is_ours(path):  # made by someone else since we looked
        raise OutputError(f"{path} exists and was not written by backdrop preview; choose another name with -o")
    writer.replace(path, data)  # our own earlier sheet: replaced whole


def _thumbnails(cards: list[dict], cache: ThumbCache, workers: int | None,
                on_progress: Callable[[int, int], None] | None) -> None:
    """Fill each card's thumbnail, a few at a time (PIL decodes outside the GIL)."""
    n = len(cards)
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    done = 0

    def one(card: dict) -> None:
        try:
            t = cache.get(Path(card["path"]))
            card["thumb"], card["size"] = t.rel, t.size
        except ValueError as exc:
            card.setdefault("flags", []).append("unreadable")
            card["err"] = f"{card['rel']}: {exc}"
        mask = card.pop("mask_file", None)
        if mask is not None:  # a mask-pair set: the mask's outline is the label
            try:
                polys = cache.outline(Path(mask))
            except ValueError as exc:
                card.setdefault("flags", []).append("error")
                card["err"] = f"{mask}: {exc}"
                return
            if polys:
                xs = [v for p in polys for v in p[0::2]]
                ys = [v for p in polys for v in p[1::2]]
                card["l"] = [*card["l"], [-1, min(xs), min(ys), max(xs), max(ys), polys]]

    with ThreadPoolExecutor(workers) as pool:
        window: deque = deque()
        for card in cards:
            window.append(pool.submit(one, card))
            if len(window) >= workers * 4:
                window.popleft().result()
                done += 1
                if on_progress is not None:
                    on_progress(done, n)
        while window:
            window.popleft().result()
            done += 1
            if on_progress is not None:
                on_progress(done, n)


__all__ = ["FLAGS", "PREVIEW_DIR", "SHEET_NAME", "Sheet", "build_preview", "class_names", "inline_page", "read_sheet"]



def read_sheet(sheet: str | Path) -> dict:
    """The data a sheet embeds (rows, cards, names), read back from its HTML."""
    text = Path(sheet).read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="sheet-data">') + len('<script type="application/json" id="sheet-data">')
    end = text.index("</script>", start)
    return json.loads(text[start:end])


def inline_page(sheet: str | Path, page: int = 1, per_page: int = 20) -> tuple[str, int]:
    """(HTML of page ``page`` of ``sheet`` with its thumbnails inlined as data URIs, number of
    pages): a piece of the sheet that needs no files, for a web page to show (the studio)."""
    import base64
    from urllib.parse import unquote

    sheet = Path(sheet)
    data = read_sheet(sheet)
    rows = data["rows"]
    pages = max(1, -(-len(rows) // max(1, per_page)))
    page = min(max(1, page), pages)
    part = rows[(page - 1) * per_page: page * per_page]
    for row in part:
        for c in row["c"]:
            c.pop("h", None)  # a link to a file next to the sheet means nothing inside another page
            if "t" in c:
                try:
                    raw = (sheet.parent / unquote(c["t"])).read_bytes()
                    c["t"] = "data:image/jpeg;base64," + base64.b64encode(raw).decode("ascii")
                except OSError:
                    c.pop("t")
    data.update(rows=part, per=max(1, len(part)))
    return render(data), pages
