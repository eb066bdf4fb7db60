"""How long `backdrop preview` takes on a large set: the first sheet, a rerun, and opening it.

    python benchmarks/bench_preview.py                 # 2 000 images (about a minute on 2 cores)
    python benchmarks/bench_preview.py --images 10000  # the size the issue names

Builds a YOLO set of ``--images`` JPEGs (640x480, 1-4 boxes each) in a temporary folder, then
prints side by side: the first ``build_preview`` (every thumbnail made), a rerun (every thumbnail
reused from ``.backdrop/preview/thumbs``), the sheet's size, and, where Chromium and Playwright
are here, the time from ``goto`` until the first page of rows is drawn. Never fails on timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def make_set(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    (root / "images/train").mkdir(parents=True)
    (root / "labels/train").mkdir(parents=True)
    base = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).resize((640, 480))
    for i in range(n):
        img = base.copy()
        draw = ImageDraw.Draw(img)
        lines = []
        for _ in range(int(rng.integers(1, 5))):
            w, h = rng.integers(40, 200, 2)
            x, y = rng.integers(0, 640 - w), rng.integers(0, 480 - h)
            draw.ellipse((x, y, x + w, y + h), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
            lines.append(f"{i % 3} {(x + w / 2) / 640:.5f} {(y + h / 2) / 480:.5f} {w / 640:.5f} {h / 480:.5f}")
        img.save(root / f"images/train/{i:06d}.jpg", quality=85)
        (root / f"labels/train/{i:06d}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("train: images/train\nnames: [cat, dog, bird]\n")


def open_time(sheet: Path) -> float | None:
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = b.new_page()
            t0 = time.perf_counter()
            page.goto(sheet.as_uri())
            page.wait_for_selector("body[data-rendered='1']", timeout=120_000)
            return time.perf_counter() - t0
        finally:
            b.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    from backdrop.preview import build_preview

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        t0 = time.perf_counter()
        make_set(root, args.images)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        first = build_preview(root, workers=args.workers)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = build_preview(root, workers=args.workers)
        t_again = time.perf_counter() - t0
        opened = open_time(first.path)
        size = first.path.stat().st_size
    load = os.getloadavg()[0]
    print(f"set: {args.images} JPEGs 640x480 (made in {made:.1f} s); load average {load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':24s}{'first sheet':>14s}{'rerun':>14s}")
    print(f"{'seconds':24s}{t_first:14.1f}{t_again:14.1f}")
    print(f"{'images per second':24s}{first.images / t_first:14.0f}{again.images / t_again:14.0f}")
    print(f"{'thumbnails made':24s}{first.thumbs_made:14d}{again.thumbs_made:14d}")
    print(f"{'thumbnails reused':24s}{first.thumbs_reused:14d}{again.thumbs_reused:14d}")
    print(f"sheet: {size / 1e6:.1f} MB, {first.labels} labels; "
          + (f"opens in Chromium (first page drawn) in {opened:.2f} s" if opened is not None else "Chromium not here"))


if __name__ == "__main__":
    main()
