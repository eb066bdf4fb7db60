"""Time the weight-free middle stages: OpenCV inpainting, the describe captioner, the template refiner.

    python benchmarks/bench_weightfree_stages.py             # default sizes, best of 3
    python benchmarks/bench_weightfree_stages.py --repeat 5 --max-side 1024

Synthetic scenes (grainy background, an object covering ~20% of the image) are generated here
with fixed seeds. Also prints how far the fill's mean colour is from the true background's
(OpenCV's 8-bit Telea would drift brighter; the backends fill in float). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from backdrop.caption.describe import DescribeCaptioner
from backdrop.config import CaptionConfig, InpaintConfig, RefineConfig
from backdrop.inpaint.opencv import NavierStokesInpainter, TeleaInpainter, hole_mask
from backdrop.refine.template import TemplateRefiner

BACKGROUND = np.array([225, 200, 205], np.float32)


def scene(w: int, h: int, seed: int = 0) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    rgb = BACKGROUND + rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    yy, xx = np.ogrid[0:h, 0:w]
    inside = ((xx - w / 2) / (0.3 * w)) ** 2 + ((yy - h / 2) / (0.3 * h)) ** 2 <= 1  # ~28% of the image
    rgb[inside] = (30, 120, 40)
    mask = np.where(inside, 255, 0).astype(np.uint8)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)), Image.fromarray(mask, mode="L")


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-side", type=int, default=InpaintConfig().max_side)
    ap.add_argument("--sizes", default="640x480,1920x1080,4000x3000")
    args = ap.parse_args()

    print(f"{'stage':10} {'backend':9} {'size':>10} {'seconds':>8}  notes")
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        image, mask = scene(w, h)
        cfg = InpaintConfig(max_side=args.max_side)
        hole = np.asarray(hole_mask(mask, cfg.dilate)) > 0
        clean = None
        for cls in (TeleaInpainter, NavierStokesInpainter):
            secs, out = best(lambda: cls(cfg)(image, mask), args.repeat)
            clean = clean or out
            fill = np.asarray(out)[hole].reshape(-1, 3).astype(np.float64).mean(0)
            drift = np.abs(fill - BACKGROUND).max()
            print(f"{'inpaint':10} {cls.name:9} {size:>10} {secs:8.3f}  fill mean off by {drift:.1f} levels")
        secs, text = best(lambda: DescribeCaptioner(CaptionConfig())(clean), args.repeat)
        print(f"{'caption':10} {'describe':9} {size:>10} {secs:8.3f}  {text!r}")

    refiner = TemplateRefiner(RefineConfig(style="photographic"))
    secs, prompt = best(lambda: refiner("a photo of a cat sitting on a wooden table in a kitchen"), args.repeat)
    print(f"{'refine':10} {'template':9} {'-':>10} {secs:8.5f}  {prompt.positive!r}")


if __name__ == "__main__":
    main()
