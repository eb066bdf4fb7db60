"""Throughput of `backdrop augment` beside a naive script, measured side by side in one run.

Builds a YOLO set of N images (default 200) of 1024x768 with cells-like objects, in two label
flavours: boxes (the segmenter must run, limited to the boxes) and polygons (the labels are the
masks: no segmenter). Then, one variant per image, prints images/s for:

  naive            benchmarks/naive_pipeline.py: new rembg session + LLM load per image, every stage
  run (today)      `backdrop run` on the same images, default profile
  augment boxes    default profile: ISNet within the boxes + the `random` generator
  augment again    the same boxes set with another seed: the segmenter's masks come from the cache
  augment polygons default profile: masks from the labels, no segmenter
  augment offline  weight-free: classical segmenter within the boxes + `random`

The naive script and `run` take --naive-images of them (they are slow); the rest take all.
Needs ISNet and SmolLM2 in the store (`backdrop models pull isnet-medium smollm2-135m-instruct`).

    .venv/bin/python benchmarks/bench_augment.py [--images 200] [--naive-images 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
EXE = [sys.executable, "-c", "from backdrop.cli import main; main()"]
W, H = 1024, 768


def make_sets(root: Path, n: int) -> tuple[Path, Path]:
    """The same n images, once with box labels and once with polygon labels."""
    boxes, polys = root / "boxes", root / "polygons"
    for s in (boxes, polys):
        (s / "images/train").mkdir(parents=True)
        (s / "labels/train").mkdir(parents=True)
        (s / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [cell, parasite]\n")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    for i in range(n):
        tint = rng.uniform(150, 235, 3)
        bg = tint + 18 * np.sin(xx[..., None] / rng.uniform(40, 90) + rng.uniform(0, 6)) + rng.normal(0, 5, (H, W, 3))
        img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        box_lines, poly_lines = [], []
        for j in range(int(rng.integers(2, 5))):
            r = float(rng.uniform(50, 110))
            cx, cy = float(rng.uniform(r, W - r)), float(rng.uniform(r, H - r))
            a = np.linspace(0, 2 * np.pi, 32, endpoint=False)
            rad = r * (1 + 0.12 * np.sin(3 * a + j))
            pts = list(zip(np.clip(cx + rad * np.cos(a), 0, W - 1), np.clip(cy + rad * np.sin(a), 0, H - 1)))
            draw.polygon(pts, fill=tuple(int(v) for v in rng.uniform(30, 140, 3)))
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            box_lines.append(f"{j % 2} {(x0 + x1) / 2 / W:.6f} {(y0 + y1) / 2 / H:.6f} {(x1 - x0) / W:.6f} {(y1 - y0) / H:.6f}")
            poly_lines.append(f"{j % 2} " + " ".join(f"{x / W:.6f} {y / H:.6f}" for x, y in pts))
        name = f"img{i:04d}"
        img.save(boxes / "images/train" / f"{name}.jpg", quality=92)
        shutil.copy(boxes / "images/train" / f"{name}.jpg", polys / "images/train" / f"{name}.jpg")
        (boxes / "labels/train" / f"{name}.txt").write_text("\n".join(box_lines) + "\n")
        (polys / "labels/train" / f"{name}.txt").write_text("\n".join(poly_lines) + "\n")
    return boxes, polys


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(EXE + [str(a) for a in args], capture_output=True, text=True)
    secs = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, args))}\n{proc.stderr}")
    return secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--naive-images", type=int, default=20)
    args = ap.parse_args()
    from backdrop.generate import GENERATORS
    from backdrop.models import find

    if not (find("isnet-medium") and find("smollm2-135m-instruct")):
        raise SystemExit("needs isnet-medium and smollm2-135m-instruct: backdrop models pull NAME")
    gen = "random" if "random" in GENERATORS else "texture"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}; "
          f"{args.images} images of {W}x{H} (JPEG), 1 variant each, generator {gen}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        boxes, polys = make_sets(tmp, args.images)
        subset = tmp / "subset"
        subset.mkdir()
        for p in sorted((boxes / "images/train").iterdir())[: args.naive_images]:
            shutil.copy(p, subset / p.name)
        rows = []
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from naive_pipeline import naive

        n = args.naive_images
        secs = naive(sorted(subset.iterdir()), tmp / "naive-out")
        rows.append(("naive script", n, secs))
        rows.append(("backdrop run (default)", n, timed(["run", subset, "-o", tmp / "run-out", "-n", "1", "--seed", "1",
                                                          "--mask-cache", "off", "-q"])))
        cache = ["--mask-cache", str(tmp / "mask-cache")]  # empty at first: the first run is cold
        common = ["-n", "1", "--generator", gen, "-q"]
        rows.append(("augment, boxes (ISNet)", args.images,
                     timed(["augment", boxes, "-o", tmp / "a1", "--seed", "1", *cache, *common])))
        rows.append(("augment again, other seed", args.images,
                     timed(["augment", boxes, "-o", tmp / "a1b", "--seed", "2", *cache, *common])))
        rows.append(("augment, polygons", args.images,
                     timed(["augment", polys, "-o", tmp / "a2", "--seed", "1", "--mask-cache", "off", *common])))
        rows.append(("augment, boxes, offline", args.images,
                     timed(["augment", boxes, "-o", tmp / "a3", "--seed", "1", "--segmenter", "classical",
                            "--mask-cache", "off", *common])))
    base = rows[0][1] / rows[0][2]
    print(f"\n{'what':28s} {'images':>7s} {'seconds':>9s} {'images/s':>9s} {'vs naive':>9s}")
    for name, count, secs in rows:
        rate = count / secs
        print(f"{name:28s} {count:7d} {secs:9.1f} {rate:9.3f} {rate / base:8.2f}x")
    print("\n(times include each command's start-up and model loading; `run` also writes masks, clean "
          "backgrounds and backgrounds per image)")


if __name__ == "__main__":
    main()
