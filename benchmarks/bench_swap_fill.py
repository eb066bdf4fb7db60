"""Do a donor's objects survive in `swap`'s backgrounds? Object-shaped remnants, per hole fill.

    python benchmarks/bench_swap_fill.py            # ~1 min on 2 shared cores
    python benchmarks/bench_swap_fill.py --quick    # seconds

Donors are made as the augmentation benchmark makes its training images (five background
families: smooth gradient, fine noise, blotches, stripes, speckle; one shape object each with
its exact mask), at ``--side`` px. Each donor's hole (the mask grown by the inpainter's
``dilate``) is filled by each fill, and the filled background is measured where the object was:

- **segmenter IoU**: the classical segmenter run on the clean background; IoU of what it finds
  with the hole, minus the same IoU for the hole moved to a random place of the same image
  (chance). Above 0: the segmenter still finds an object where the donor's was;
- **outline**: mean gradient magnitude on the hole's outline over the mean on the same outline
  moved to random places (1.0: the outline cannot be told from any other curve of that shape);
- **grain inside**: RMS of the high-pass (image minus its 3x3 median) inside the hole over
  outside (1.0: the hole has the background's grain; well below 1: a smooth, object-shaped smear);
- **filled in crop**: the share of filled pixels in the background ``swap`` finally hands over,
  with one crop window (no avoidance) and with ``WINDOWS`` windows (the one with most real pixels).

The fill with the remnant figures nearest to no object at all is `donors.FILL`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from backdrop.config import InpaintConfig, SegmentConfig
from backdrop.generate import donors, swap
from backdrop.inpaint.opencv import TeleaInpainter, hole_mask
from backdrop.segment.classical import ClassicalSegmenter

FILLS = ("inpaint", "quilt", "quilt-all")


def _bench_module():
    path = Path(__file__).with_name("augmentation_value.py")
    spec = importlib.util.spec_from_file_location("augmentation_value", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def outline(hole: np.ndarray) -> np.ndarray:
    return cv2.morphologyEx(hole.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0


def shifted(m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = m.shape
    return np.roll(m, (int(rng.integers(h // 4, 3 * h // 4)), int(rng.integers(w // 4, 3 * w // 4))), (0, 1))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = (a | b).sum()
    return float((a & b).sum() / u) if u else 0.0


def measure(clean: np.ndarray, real: np.ndarray, hole: np.ndarray, seg, rng) -> dict[str, float]:
    grey = cv2.cvtColor(clean, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    hp = grey - cv2.medianBlur(grey.astype(np.uint8), 3).astype(np.float32)
    found = np.asarray(seg(Image.fromarray(clean))) > 0
    moved = [shifted(hole, rng) for _ in range(4)]
    line = outline(hole)
    chance_line = np.mean([grad[outline(m)].mean() for m in moved])
    return {
        "seg_iou": iou(found, hole) - float(np.mean([iou(found, m) for m in moved])),
        "outline": float(grad[line].mean() / max(chance_line, 1e-6)),
        "grain": float(np.sqrt((hp[hole] ** 2).mean()) / max(np.sqrt((hp[~hole] ** 2).mean()), 1e-6)),
    }


def run(n: int, side: int, out=sys.stdout) -> dict:
    import logging

    logging.getLogger("backdrop").setLevel(logging.ERROR)  # the segmenter's border notes, once per donor
    bench = _bench_module()
    rng = np.random.default_rng(0)
    seg = ClassicalSegmenter(SegmentConfig())
    inpainter = TeleaInpainter(InpaintConfig())
    dilate = InpaintConfig().dilate
    rows = {f: [] for f in FILLS}
    crops = {f: {1: [], swap.WINDOWS: []} for f in FILLS}
    t0 = time.perf_counter()
    for i in range(n):
        cls = i % bench.K
        bg = bench.train_family(int(rng.integers(bench.K)), side, rng)
        s = bench.make_sample(cls, side, rng, bg)
        mask = Image.fromarray(s.mask)
        hole = np.asarray(hole_mask(mask, dilate)) > 0
        for fill in FILLS:
            clean = donors.fill_hole(s.image, hole, fill, seed=i, inpainter=inpainter, mask=mask)
            rows[fill].append(measure(clean, ~hole, hole, seg, np.random.default_rng(i)))
            for windows in crops[fill]:
                old = swap.WINDOWS
                swap.WINDOWS = windows
                try:  # a target a little smaller than the donor: room to move the crop
                    got = swap.fit(np.dstack([~hole] * 3).astype(np.uint8), ~hole, (side * 3 // 4, side * 3 // 4),
                                   np.random.default_rng(i))
                finally:
                    swap.WINDOWS = old
                crops[fill][windows].append(1 - got[..., 0].mean())
    # the no-fill reference: the donor as it was, object and all (what an object scores)
    ref = [measure(s.image, None, s.mask > 0, seg, np.random.default_rng(0)) for s in
           [bench.make_sample(i % bench.K, side, np.random.default_rng(100 + i),
                              bench.train_family(i % bench.K, side, np.random.default_rng(200 + i))) for i in range(min(n, 20))]]
    print(f"{n} donors of {side}x{side} px (augmentation_value.py's families and shapes), hole = mask grown "
          f"{dilate} px; {time.perf_counter() - t0:.0f} s", file=out)
    print(file=out)
    print("| fill | segmenter IoU over chance | outline gradient / chance | grain inside / outside "
          f"| filled share of crop (1 window / {swap.WINDOWS}) |", file=out)
    print("|---|---|---|---|---|", file=out)
    table = {}
    for name, rs in [("object left in (reference)", ref)] + [(f, rows[f]) for f in FILLS]:
        m = {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
        table[name] = m
        crop = (f"{100 * np.mean(crops[name][1]):.1f} % / {100 * np.mean(crops[name][swap.WINDOWS]):.1f} %"
                if name in crops else "")
        print(f"| {name} | {m['seg_iou']:+.3f} | {m['outline']:.2f} | {m['grain']:.2f} | {crop} |", file=out)
    return table


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--side", type=int, default=96)
    a = p.parse_args(argv)
    run(6 if a.quick else a.n, a.side)


if __name__ == "__main__":
    main()
