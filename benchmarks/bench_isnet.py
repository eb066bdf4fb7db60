"""ISNet small vs medium (and the classical segmenter): IoU against known masks, seconds per image.

The objects of examples/*.png (cut out with examples/masks/*.png) are pasted, at a few scales and
places, onto procedurally made backgrounds (gradients, smooth noise, stripes, a checkerboard, a
background the colour of the object), so the true mask of every composite is known exactly. The
examples themselves are scored too.

    .venv/bin/python benchmarks/bench_isnet.py                  # models from the default store
    .venv/bin/python benchmarks/bench_isnet.py --home /data/backdrop --models isnet-medium
    .venv/bin/python benchmarks/bench_isnet.py --threads 2 --out /tmp/isnet.json

Prints a table; never fails on timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


# -- composites with known masks ------------------------------------------------------------------


def _smooth_noise(rng, h, w, scale):
    small = rng.random((max(2, h // scale), max(2, w // scale), 3))
    img = Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(img).astype(np.float32)


def backgrounds(h: int, w: int, obj_colour: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    grad = np.stack([x / w * 200 + 30, y / h * 150 + 60, (1 - x / w) * 180 + 40], -1)
    noise = _smooth_noise(rng, h, w, 40) * 0.8 + 30
    stripes = np.where(((x + 0.5 * y) // 24) % 2 == 0, 1.0, 0.0)[..., None] * np.array([150, 120, 60]) + 60
    checker = np.where(((x // 32) + (y // 32)) % 2 == 0, 210.0, 60.0)[..., None].repeat(3, -1)
    near = obj_colour[None, None, :] * 0.75 + _smooth_noise(rng, h, w, 12) * 0.25  # low contrast
    fine = np.clip(rng.normal(128, 45, (h, w, 3)), 0, 255)  # pixel noise
    out = {"gradient": grad, "smooth-noise": noise, "stripes": stripes, "checker": checker,
           "object-coloured": near, "pixel-noise": fine}
    return {k: np.clip(v, 0, 255).astype(np.uint8) for k, v in out.items()}


def cutouts() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, rgb, bool mask) cropped to each example object's bounding box, with a margin."""
    items = []
    for img_path in sorted((ROOT / "examples").glob("*.png")):
        mask_path = ROOT / "examples" / "masks" / img_path.name
        if not mask_path.exists():
            continue
        rgb = np.asarray(Image.open(img_path).convert("RGB"))
        m = np.asarray(Image.open(mask_path).convert("L")) > 127
        ys, xs = np.nonzero(m)
        if not len(ys):
            continue
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        items.append((img_path.stem, rgb[y0:y1, x0:x1], m[y0:y1, x0:x1]))
    return items


def composites(size=(640, 480), seed=0):
    """Yield (label, image, truth) for every object x background, object scaled and moved per case."""
    w, h = size
    rng = np.random.default_rng(seed)
    for name, rgb, m in cutouts():
        colour = rgb[m].mean(0)
        for i, (bg_name, bg) in enumerate(backgrounds(h, w, colour, seed).items()):
            scale = [0.9, 0.6, 1.1, 0.75, 1.0, 0.5][i % 6] * min(w / rgb.shape[1], h / rgb.shape[0]) * 0.8
            ow, oh = max(8, int(rgb.shape[1] * scale)), max(8, int(rgb.shape[0] * scale))
            obj = np.asarray(Image.fromarray(rgb).resize((ow, oh), Image.Resampling.LANCZOS))
            om = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((ow, oh), Image.Resampling.NEAREST)) > 127
            x0 = int(rng.integers(0, max(1, w - ow)))
            y0 = int(rng.integers(0, max(1, h - oh)))
            img = bg.copy()
            truth = np.zeros((h, w), bool)
            region = img[y0 : y0 + oh, x0 : x0 + ow]
            region[om] = obj[om]
            truth[y0 : y0 + oh, x0 : x0 + ow] = om
            # a little blur over the whole frame, so the paste edge looks like a photo's, not a cut
            out = Image.fromarray(img).filter(ImageFilter.GaussianBlur(0.6))
            yield f"{name}/{bg_name}", out, truth
    for img_path in sorted((ROOT / "examples").glob("*.png")):
        mask_path = ROOT / "examples" / "masks" / img_path.name
        if mask_path.exists():
            yield (f"{img_path.stem}/original", Image.open(img_path).convert("RGB"),
                   np.asarray(Image.open(mask_path).convert("L")) > 127)


def iou(mask: Image.Image, truth: np.ndarray) -> float:
    m = np.asarray(mask) > 127
    union = (m | truth).sum()
    return float((m & truth).sum() / union) if union else 1.0


# -- runners ------------------------------------------------------------------------------------------


def make(backend: str, model: str | None, device: str):
    from backdrop.config import SegmentConfig

    if backend == "classical":
        from backdrop.segment.classical import ClassicalSegmenter

        return ClassicalSegmenter(SegmentConfig(backend="classical"))
    from backdrop.segment.rembg import RembgSegmenter

    return RembgSegmenter(SegmentConfig(backend="rembg", model=model, device=device))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["isnet-small", "isnet-medium", "classical"])
    ap.add_argument("--home", help="BACKDROP_HOME holding the models (default: the usual store)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for onnxruntime (0: its default)")
    ap.add_argument("--size", default="640x480", help="composite size WxH")
    ap.add_argument("--only", help="only the images whose label contains this (e.g. 'original')")
    ap.add_argument("--out", help="also write the per-image figures as JSON here")
    args = ap.parse_args()
    if args.home:
        os.environ["BACKDROP_HOME"] = args.home
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    w, h = map(int, args.size.lower().split("x"))
    cases = [c for c in composites((w, h)) if not args.only or args.only in c[0]]
    if not cases:
        sys.exit("no examples/*.png with examples/masks/*.png to build composites from")

    from backdrop import models
    from backdrop.errors import BackdropError

    print(f"{len(cases)} images ({args.size} composites + originals); {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    rows, per_image = [], {}
    for name in args.models:
        backend = "classical" if name == "classical" else "rembg"
        try:
            t0 = time.perf_counter()
            seg = make(backend, None if backend == "classical" else name, args.device)
            load = time.perf_counter() - t0
        except (BackdropError, ImportError) as exc:
            print(f"skip {name}: {exc}")
            continue
        scores, secs = [], []
        for label, img, truth in cases:
            t0 = time.perf_counter()
            mask = seg(img)
            secs.append(time.perf_counter() - t0)
            scores.append(iou(mask, truth))
            per_image.setdefault(label, {})[name] = round(scores[-1], 4)
        size = models.find(name).stat().st_size / 1e6 if backend == "rembg" and models.find(name) else 0
        rows.append((name, size, load, statistics.mean(scores), statistics.median(scores), min(scores),
                     secs[0], statistics.mean(secs[1:] or secs)))
        print(f"{name}: mean IoU {rows[-1][3]:.3f}, {rows[-1][7]:.2f} s/image", flush=True)

    labels = list(per_image)
    names = [r[0] for r in rows]
    print()
    print(f"{'image':32}" + "".join(f"{n:>14}" for n in names))
    for label in labels:
        print(f"{label:32}" + "".join(f"{per_image[label].get(n, float('nan')):14.3f}" for n in names))
    print()
    print(f"{'model':14}{'MB':>7}{'load s':>8}{'mean IoU':>10}{'median':>8}{'worst':>8}{'1st s':>8}{'s/image':>9}")
    for name, size, load, mean, med, worst, first, per in rows:
        print(f"{name:14}{size:7.1f}{load:8.2f}{mean:10.3f}{med:8.3f}{worst:8.3f}{first:8.2f}{per:9.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "per_image": per_image}, indent=2))


if __name__ == "__main__":
    main()
