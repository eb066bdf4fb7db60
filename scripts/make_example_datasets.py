"""Generate the small example data sets in examples/datasets/ (free to redistribute: synthetic).

Deterministic (fixed seeds, numpy + Pillow only), so the files can be regenerated:

    python scripts/make_example_datasets.py             # writes examples/datasets/
    python scripts/make_example_datasets.py --out DIR   # somewhere else

Each image is a 256x192 JPEG of a stained blood-smear-like field: a pale, grainy, unevenly lit
background whose stain tint varies from image to image, with two to four cells of two classes:

- ``parasite`` (0): a purple, granular, irregular cell with a dark off-centre nucleus;
- ``red_cell`` (1): a pink-red disc with a paler centre.

Every cell is drawn from its own polygon (anti-aliased), so the polygon *is* the object's
outline: the COCO polygons below are the exact shapes, and the YOLO boxes are their bounds.

- ``yolo-cells/``: Ultralytics layout, detection boxes: ``data.yaml`` (no ``path``: the yaml's
  folder is the root), ``images/{train,val}/``, ``labels/{train,val}/``; 8 train + 2 val images.
- ``coco-cells/``: COCO instances, polygons for the cells and one crowd RLE (``iscrowd`` 1, a
  clump of platelets, category ``platelets``) per image: ``annotations/instances_{train,val}.json``
  and ``images/{train,val}/``; 8 train + 2 val images.
- ``masks-cells/``: image + mask pairs (``images/``, ``masks/<stem>_mask.png``, 255 = cell); 4 images.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

W, H = 256, 192
SS = 4  # supersampling for anti-aliased outlines
NAMES = {0: "parasite", 1: "red_cell"}
QUALITY = 88


def _smooth(rng: np.random.Generator, cells: int, sigma: float = 0.0) -> np.ndarray:
    """Low-frequency noise in about [-1, 1], size H x W."""
    coarse = rng.standard_normal((max(2, cells * H // W), cells)).astype(np.float32)
    lo, hi = coarse.min(), coarse.max()
    im = Image.fromarray(((coarse - lo) / (hi - lo + 1e-9) * 255).astype(np.uint8), "L")
    im = im.resize((W, H), Image.BICUBIC)
    if sigma:
        im = im.filter(ImageFilter.GaussianBlur(sigma))
    return np.asarray(im, np.float32) / 127.5 - 1.0


def _blur_noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    n = rng.standard_normal((H, W)).astype(np.float32)
    im = Image.fromarray(np.clip(n * 40 + 128, 0, 255).astype(np.uint8), "L").filter(ImageFilter.GaussianBlur(sigma))
    return (np.asarray(im, np.float32) - 128) / 40


def _polygon(rng: np.random.Generator, cx: float, cy: float, r: float, wobble: float, n: int = 28) -> list[float]:
    """An irregular closed outline (flat x, y list, pixels) around (cx, cy)."""
    harm = [(k, rng.uniform(0.2, 1.0) * wobble / k ** 0.5, rng.uniform(0, 2 * np.pi)) for k in range(2, 6)]
    stretch, angle = rng.uniform(1.0, 1.25), rng.uniform(0, np.pi)
    pts = []
    for t in np.linspace(0, 2 * np.pi, n, endpoint=False):
        rr = r * (1 + sum(a * np.cos(k * t + p) for k, a, p in harm))
        u, v = rr * np.cos(t) * stretch, rr * np.sin(t) / stretch
        pts += [round(float(cx + u * np.cos(angle) - v * np.sin(angle)), 2),
                round(float(cy + u * np.sin(angle) + v * np.cos(angle)), 2)]
    return pts


def _coverage(polys: list[list[float]]) -> np.ndarray:
    """Anti-aliased coverage (0..1, H x W) of the union of polygons."""
    im = Image.new("L", (W * SS, H * SS), 0)
    d = ImageDraw.Draw(im)
    for p in polys:
        d.polygon([((x + 0.5) * SS - 0.5, (y + 0.5) * SS - 0.5) for x, y in zip(p[0::2], p[1::2])], fill=255)
    return np.asarray(im.resize((W, H), Image.BOX), np.float32) / 255.0


def make_field(seed: int) -> dict:
    """One image: its RGB array and its objects [(class, polygon)], plus a platelet clump mask."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    # the field: pale, with a stain tint that varies per image, unevenly lit, grainy
    tint = np.array([236, 214, 224], np.float32) + rng.uniform(-14, 10, 3).astype(np.float32)
    light = 1.0 - 0.22 * (((xs - W * rng.uniform(0.3, 0.7)) / W) ** 2 + ((ys - H * rng.uniform(0.3, 0.7)) / H) ** 2)
    light += 0.03 * _smooth(rng, 6, 2)
    img = tint[None, None] * light[..., None]
    img[..., 1] -= 5 * _smooth(rng, 5, 2)
    img += (_blur_noise(rng, 0.8) * 6 + _blur_noise(rng, 2.2) * 4)[..., None]

    objects, placed = [], []
    n = int(rng.integers(2, 5))
    tries = 0
    while len(objects) < n and tries < 200:
        tries += 1
        cls = int(rng.integers(0, 2)) if objects else int(seed % 2)
        r = rng.uniform(20, 30) if cls == 0 else rng.uniform(14, 20)
        cx, cy = rng.uniform(r + 8, W - r - 8), rng.uniform(r + 8, H - r - 8)
        if any(np.hypot(cx - px, cy - py) < r + pr + 6 for px, py, pr in placed):
            continue
        placed.append((cx, cy, r * 1.3))
        objects.append((cls, _polygon(rng, cx, cy, r, 0.10 if cls == 0 else 0.04)))

    for cls, poly in objects:
        a = _coverage([poly])
        pxs, pys = np.array(poly[0::2]), np.array(poly[1::2])
        cx, cy = pxs.mean(), pys.mean()
        rad = max(np.hypot(pxs - cx, pys - cy).max(), 1.0)
        d = np.hypot(xs - cx, ys - cy) / rad  # 0 at the centre, ~1 at the rim
        if cls == 0:
            body = np.array([148, 90, 170], np.float32)[None, None] * (0.9 + 0.12 * np.clip(1 - d, 0, 1))[..., None]
            body += (np.clip(_blur_noise(rng, 1.4) * 3, -1, 1) * 14)[..., None] * np.array([1.0, 0.8, 0.9], np.float32)
            nx, ny = cx + rng.uniform(-0.3, 0.3) * rad, cy + rng.uniform(-0.3, 0.3) * rad
            nuc = np.clip(1.4 - np.hypot(xs - nx, ys - ny) / (rad * 0.32), 0, 1) ** 0.7
            body = body * (1 - nuc[..., None]) + np.array([90, 38, 126], np.float32) * nuc[..., None]
        else:
            pale = np.exp(-((d / 0.45) ** 2))
            body = np.array([214, 112, 122], np.float32)[None, None] * (1 - 0.18 * pale)[..., None]
            body += np.array([30, 40, 36], np.float32) * pale[..., None]
            body += (_blur_noise(rng, 1.0) * 4)[..., None]
        rim = np.exp(-(((d - 0.95) / 0.06) ** 2))
        body *= (1 - 0.18 * rim)[..., None]
        img = img * (1 - a[..., None]) + body * a[..., None]

    # a small clump of platelets (a crowd region in COCO; background elsewhere)
    clump = []
    for _ in range(60):
        px, py = rng.uniform(12, W - 12), rng.uniform(12, H - 12)
        if all(np.hypot(px - x, py - y) > pr + 10 for x, y, pr in placed):
            for _ in range(int(rng.integers(3, 6))):
                qx, qy = px + rng.uniform(-5, 5), py + rng.uniform(-5, 5)
                clump.append(_polygon(rng, qx, qy, rng.uniform(1.6, 2.6), 0.1, n=10))
            break
    ca = _coverage(clump) if clump else np.zeros((H, W), np.float32)
    img = img * (1 - ca[..., None]) + np.array([120, 70, 150], np.float32) * ca[..., None]
    img += (_blur_noise(rng, 0.6) * 2)[..., None]
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return {"rgb": rgb, "objects": objects, "clump": ca >= 0.5}


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=QUALITY, optimize=True)
    return buf.getvalue()


def _bounds(poly: list[float]) -> tuple[float, float, float, float]:
    xs, ys = poly[0::2], poly[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)


SPLITS = {"train": range(8), "val": range(8, 10)}


def make_yolo(out: Path) -> None:
    root = out / "yolo-cells"
    for split, idx in SPLITS.items():
        for i in idx:
            f = make_field(100 + i)
            name = f"cells_{i:03d}"
            _write(root / f"images/{split}/{name}.jpg", _jpeg(f["rgb"]))
            lines = []
            for cls, poly in f["objects"]:
                x0, y0, x1, y1 = _bounds(poly)
                lines.append(f"{cls} {(x0 + x1) / 2 / W:.6f} {(y0 + y1) / 2 / H:.6f} {(x1 - x0) / W:.6f} {(y1 - y0) / H:.6f}")
            _write(root / f"labels/{split}/{name}.txt", "\n".join(lines) + "\n")
    _write(root / "data.yaml",
           "# backdrop example: synthetic blood-smear cells, detection boxes (Ultralytics YOLO layout).\n"
           "# No 'path': the folder of this file is the data set root.\n"
           "train: images/train\nval: images/val\nnames:\n  0: parasite\n  1: red_cell\n")


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major runs, zeros first), as crowd annotations use."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def _poly_area(poly: list[float]) -> float:
    x, y = np.array(poly[0::2]), np.array(poly[1::2])
    return round(float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))), 2)


def make_coco(out: Path) -> None:
    root = out / "coco-cells"
    cats = [{"id": 1, "name": "parasite", "supercategory": "cell"},
            {"id": 2, "name": "red_cell", "supercategory": "cell"},
            {"id": 3, "name": "platelets", "supercategory": "cell"}]
    for split, idx in SPLITS.items():
        images, anns = [], []
        for i in idx:
            f = make_field(200 + i)
            name = f"smear_{i:03d}.jpg"
            _write(root / f"images/{split}/{name}", _jpeg(f["rgb"]))
            iid = 1000 + i
            images.append({"id": iid, "file_name": name, "width": W, "height": H, "license": 1,
                           "date_captured": "2026-01-01 00:00:00"})
            for cls, poly in f["objects"]:
                x0, y0, x1, y1 = _bounds(poly)
                anns.append({"id": len(anns) + 1 + 100 * i, "image_id": iid, "category_id": cls + 1,
                             "segmentation": [poly], "area": _poly_area(poly),
                             "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                             "iscrowd": 0})
            if f["clump"].any():
                ys, xs = np.nonzero(f["clump"])
                anns.append({"id": len(anns) + 1 + 100 * i, "image_id": iid, "category_id": 3,
                             "segmentation": _rle(f["clump"]), "area": float(f["clump"].sum()),
                             "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                      int(ys.max() - ys.min() + 1)], "iscrowd": 1})
        data = {"info": {"description": "backdrop example: synthetic blood-smear cells", "version": "1.0",
                         "year": 2026, "contributor": "backdrop", "date_created": "2026-01-01"},
                "licenses": [{"id": 1, "name": "CC0 1.0",
                              "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
                "images": images, "annotations": anns, "categories": cats}
        _write(root / f"annotations/instances_{split}.json", json.dumps(data, indent=1) + "\n")


def make_masks(out: Path) -> None:
    root = out / "masks-cells"
    for i in range(4):
        f = make_field(300 + i)
        name = f"cell_{i:03d}"
        _write(root / f"images/{name}.jpg", _jpeg(f["rgb"]))
        fg = _coverage([p for _, p in f["objects"]]) >= 0.5
        buf = io.BytesIO()
        Image.fromarray(np.where(fg, 255, 0).astype(np.uint8), "L").save(buf, "PNG", optimize=True)
        _write(root / f"masks/{name}_mask.png", buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent / "examples" / "datasets"
    parser.add_argument("--out", type=Path, default=default, help="output folder (default: examples/datasets/)")
    args = parser.parse_args(argv)
    for name, make in (("yolo-cells", make_yolo), ("coco-cells", make_coco), ("masks-cells", make_masks)):
        if (args.out / name).exists():
            shutil.rmtree(args.out / name)
        make(args.out)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
