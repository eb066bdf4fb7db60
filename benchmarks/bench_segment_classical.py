"""Benchmark the classical (weight-free) segmenter: IoU against true masks and time per image.

    python benchmarks/bench_segment_classical.py              # examples/ + synthetic cases
    python benchmarks/bench_segment_classical.py --repeat 3   # best time of 3 runs
    python benchmarks/bench_segment_classical.py --no-grabcut

Prints one row per image: size, IoU, wall and CPU seconds (best of --repeat; CPU time is the
steadier figure on a busy machine), the recorded confidence and the warnings. Synthetic cases
are generated here with fixed seeds (numpy + OpenCV only). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from backdrop import runlog
from backdrop.config import SegmentConfig
from backdrop.segment.classical import ClassicalSegmenter

ROOT = Path(__file__).resolve().parent.parent


def _blob(h: int, w: int, cx: float, cy: float, rx: float, ry: float, seed: int, wobble: float = 0.12) -> np.ndarray:
    """Anti-aliased coverage (0..1) of an irregular blob."""
    rng = np.random.default_rng(seed)
    ss = 4
    ys, xs = np.mgrid[0 : h * ss, 0 : w * ss].astype(np.float32) / ss
    th = np.arctan2((ys - cy) / ry, (xs - cx) / rx)
    r = 1 + sum(rng.uniform(0, wobble) / k * np.cos(k * th + rng.uniform(0, 6.3)) for k in range(2, 6))
    inside = np.hypot((xs - cx) / rx, (ys - cy) / ry) <= r
    return cv2.resize(inside.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)


def _compose(bg: np.ndarray, fg: np.ndarray, alpha: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    img = bg * (1 - alpha[..., None]) + fg * alpha[..., None]
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8)), alpha >= 0.5


def synthetic_cases(h: int = 360, w: int = 480) -> dict[str, tuple[Image.Image, np.ndarray]]:
    rng = np.random.default_rng(3)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cases = {}
    # plain background, one object
    bg = np.full((h, w, 3), (225, 228, 232), np.float32)
    a = _blob(h, w, w * 0.5, h * 0.5, w * 0.2, h * 0.25, 1)
    cases["plain"] = _compose(bg, np.array([180, 60, 40], np.float32), a)
    # strong diagonal gradient + vignette, a darker-than-top, lighter-than-bottom object
    t = (xs / w + ys / h)[..., None] / 2
    bg = (1 - t) * np.array([250, 240, 220], np.float32) + t * np.array([120, 130, 160], np.float32)
    a = _blob(h, w, w * 0.45, h * 0.55, w * 0.18, h * 0.2, 2)
    cases["gradient"] = _compose(bg, np.array([60, 140, 70], np.float32), a)
    # heavy grain (sigma 14) on pale pink, a pale purple object with its own granular texture
    grain = rng.normal(0, 14, (h, w, 1)).astype(np.float32)
    bg = np.array([235, 205, 215], np.float32) + grain
    fg = np.array([185, 140, 200], np.float32) + cv2.GaussianBlur(rng.normal(0, 30, (h, w)).astype(np.float32), (0, 0), 1.5)[..., None]
    a = _blob(h, w, w * 0.55, h * 0.45, w * 0.15, h * 0.22, 3)
    cases["grainy"] = _compose(bg, fg, a)
    # a texture-only object: same mean colour as the field, much coarser texture
    bg = np.array([200, 200, 200], np.float32) + rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    fg = np.array([200, 200, 200], np.float32) + cv2.GaussianBlur(rng.normal(0, 60, (h, w)).astype(np.float32), (0, 0), 1.2)[..., None]
    a = _blob(h, w, w * 0.5, h * 0.5, w * 0.2, h * 0.22, 4, wobble=0.05)
    cases["texture-only"] = _compose(bg, fg, a)
    # two objects and debris specks
    bg = np.full((h, w, 3), (240, 240, 235), np.float32)
    a = np.maximum(_blob(h, w, w * 0.3, h * 0.5, w * 0.14, h * 0.2, 5), _blob(h, w, w * 0.72, h * 0.45, w * 0.1, h * 0.14, 6))
    img, truth = _compose(bg, np.array([40, 60, 150], np.float32), a)
    arr = np.asarray(img).copy()
    for _ in range(12):
        cy, cx = rng.integers(10, h - 10), rng.integers(10, w - 10)
        if not truth[max(0, cy - 4) : cy + 4, max(0, cx - 4) : cx + 4].any():
            cv2.circle(arr, (int(cx), int(cy)), 1, (60, 70, 140), -1)
    cases["two+specks"] = (Image.fromarray(arr), truth)
    # a dark object with a hole (a ring): the hole shows the background
    bg = np.full((h, w, 3), (245, 245, 245), np.float32)
    outer = _blob(h, w, w * 0.5, h * 0.5, w * 0.22, h * 0.3, 7, wobble=0.0)
    inner = _blob(h, w, w * 0.5, h * 0.5, w * 0.1, h * 0.14, 7, wobble=0.0)
    cases["ring"] = _compose(bg, np.array([30, 30, 35], np.float32), np.clip(outer - inner, 0, 1))
    # an object cut by the left edge
    bg = np.full((h, w, 3), (210, 220, 235), np.float32) + rng.normal(0, 2, (h, w, 1)).astype(np.float32)
    a = _blob(h, w, w * 0.05, h * 0.5, w * 0.25, h * 0.3, 8)
    cases["touches-border"] = _compose(bg, np.array([200, 120, 40], np.float32), a)
    return cases


def busy_case(h: int = 360, w: int = 480) -> Image.Image:
    """A cluttered scene (random coloured rectangles): no plain background to model."""
    rng = np.random.default_rng(9)
    arr = np.zeros((h, w, 3), np.uint8)
    for _ in range(600):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        cv2.rectangle(arr, (int(x0), int(y0)), (int(x0 + rng.integers(10, 90)), int(y0 + rng.integers(10, 90))),
                      tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    return Image.fromarray(arr)


def iou(mask: Image.Image, truth: np.ndarray) -> float:
    m = np.asarray(mask) > 127
    return float((m & truth).sum() / max(1, (m | truth).sum()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per image; the best time is shown")
    parser.add_argument("--no-grabcut", action="store_true", help="skip the GrabCut refinement")
    parser.add_argument("--large", action="store_true", help="also time a 4000x3000 upscale of the micrograph")
    args = parser.parse_args(argv)
    logging.getLogger("backdrop").setLevel(logging.ERROR)  # warnings are shown in the table instead
    seg = ClassicalSegmenter(SegmentConfig(grabcut=not args.no_grabcut))

    items: list[tuple[str, Image.Image, np.ndarray | None]] = []
    for name in ("micrograph", "product"):
        path = ROOT / "examples" / f"{name}.png"
        if not path.exists():
            print(f"{path} missing: run scripts/make_examples.py first", file=sys.stderr)
            continue
        truth = np.asarray(Image.open(ROOT / "examples" / "masks" / f"{name}.png")) > 127
        items.append((f"examples/{name}", Image.open(path).convert("RGB"), truth))
        if args.large:
            big = Image.open(path).convert("RGB").resize((4000, 3000), Image.BICUBIC)
            big_truth = np.asarray(Image.open(ROOT / "examples" / "masks" / f"{name}.png").resize((4000, 3000), Image.BILINEAR)) > 127
            items.append((f"examples/{name}@4000x3000", big, big_truth))
    items += [(f"synthetic/{k}", img, t) for k, (img, t) in synthetic_cases().items()]
    items.append(("synthetic/busy (no truth)", busy_case(), None))
    items.append(("synthetic/blank (no truth)", Image.new("RGB", (320, 240), (128, 128, 128)), None))

    print(f"classical segmenter, grabcut={not args.no_grabcut}")
    print(f"{'image':34} {'size':>10} {'IoU':>7} {'wall s':>7} {'cpu s':>6} {'conf':>6}  warnings")
    ious = []
    for name, img, truth in items:
        best = cpu = float("inf")
        for _ in range(max(1, args.repeat)):
            with runlog.collecting() as rec:
                t0, c0 = time.perf_counter(), time.process_time()
                mask = seg(img)
                best = min(best, time.perf_counter() - t0)
                cpu = min(cpu, time.process_time() - c0)
        score = iou(mask, truth) if truth is not None else None
        if score is not None:
            ious.append(score)
        warns = "; ".join(w[:70] for w in rec["warnings"]) or "-"
        size = f"{img.width}x{img.height}"
        shown = f"{score:.4f}" if score is not None else "   -  "
        conf = rec["notes"].get("segment_confidence", float("nan"))
        print(f"{name:34} {size:>10} {shown:>7} {best:7.3f} {cpu:6.3f} {conf:6.3f}  {warns}")
    if ious:
        print(f"mean IoU over {len(ious)} images with a true mask: {np.mean(ious):.4f} (min {np.min(ious):.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
