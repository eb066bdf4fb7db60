"""Box-labelled test scenes over cluttered backgrounds, with the true mask of every object.

Backgrounds are made procedurally (no files, no downloads): an H&E/IHC-like histology slide
(pink stroma, purple nuclei, brown DAB spots, fibres), foliage, gravel, brick. Objects: the two
example cut-outs (the mug, the cell; examples/masks/) and two drawn ones that are hard on purpose:
a figure in a near-white dress (the issue's baby on the histology slide) and a dark car. Each
scene holds 3-4 objects of mixed sizes, some about 60 px tall, with non-overlapping boxes.

    .venv/bin/python scripts/cluttered_scenes.py OUT [--count 8] [--size 640x480]

writes a YOLO set (OUT/images/train/*.png, OUT/labels/train/*.txt, OUT/data.yaml) and the true
instance masks (OUT/truth/<name>_<k>.png, one per object, in label order). Functions here are
used by tests/test_segment_boxes.py and benchmarks/bench_boxes.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
TEXTURES = ("histology", "foliage", "gravel", "brick")


def _noise(rng, h, w, scale, ch=1):
    small = rng.random((max(2, h // scale), max(2, w // scale), ch))
    img = Image.fromarray((small * 255).astype(np.uint8).squeeze()).resize((w, h), Image.Resampling.BICUBIC)
    a = np.asarray(img, np.float32) / 255.0
    return a if ch > 1 else a[..., None]


def texture(kind: str, size=(640, 480), seed=0) -> np.ndarray:
    """A busy background, HxWx3 uint8."""
    w, h = size
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size)
    d = ImageDraw.Draw(img)
    if kind == "histology":
        base = np.array([228, 196, 214], np.float32) + (_noise(rng, h, w, 30) - 0.5) * 40
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(60):  # fibres
            x, y = rng.integers(0, w), rng.integers(0, h)
            pts = [(x, y)]
            for _ in range(6):
                x, y = x + rng.integers(-40, 41), y + rng.integers(-40, 41)
                pts.append((x, y))
            d.line(pts, fill=tuple(int(c) for c in rng.integers([200, 140, 180], [235, 175, 210])), width=2)
        for _ in range(int(w * h / 900)):  # nuclei
            x, y = rng.integers(0, w), rng.integers(0, h)
            rx, ry = rng.integers(3, 11), rng.integers(3, 9)
            c = tuple(int(v) for v in rng.integers([70, 30, 110], [140, 80, 180]))
            d.ellipse((x - rx, y - ry, x + rx, y + ry), fill=c)
        for _ in range(int(w * h / 6000)):  # DAB-brown and white gaps
            x, y = rng.integers(0, w), rng.integers(0, h)
            r = rng.integers(4, 14)
            c = (150, 95, 50) if rng.random() < 0.6 else (250, 248, 250)
            d.ellipse((x - r, y - r, x + r, y + r), fill=c)
        out = np.asarray(img.filter(ImageFilter.GaussianBlur(1.0)), np.float32)
    elif kind == "foliage":
        base = np.array([40, 80, 30], np.float32) + _noise(rng, h, w, 20) * 40
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(int(w * h / 250)):
            x, y = rng.integers(-10, w + 10), rng.integers(-10, h + 10)
            rx, ry = rng.integers(4, 16), rng.integers(2, 7)
            g = int(rng.integers(70, 200))
            c = (int(g * rng.uniform(0.3, 0.7)), g, int(g * rng.uniform(0.1, 0.4)))
            ang = rng.uniform(0, np.pi)
            pts = [(x + rx * np.cos(t) * np.cos(ang) - ry * np.sin(t) * np.sin(ang),
                    y + rx * np.cos(t) * np.sin(ang) + ry * np.sin(t) * np.cos(ang)) for t in np.linspace(0, 2 * np.pi, 10)]
            d.polygon(pts, fill=c)
        out = np.asarray(img, np.float32)
    elif kind == "gravel":
        base = np.full((h, w, 3), 70, np.float32)
        img = Image.fromarray(base.astype(np.uint8))
        d = ImageDraw.Draw(img)
        for _ in range(int(w * h / 120)):
            x, y = rng.integers(-10, w + 10), rng.integers(-10, h + 10)
            r = rng.integers(3, 12)
            g = rng.integers(90, 215)
            tint = rng.integers(-20, 21, 3)
            c = tuple(int(np.clip(g + t, 0, 255)) for t in tint)
            d.ellipse((x - r, y - r * rng.uniform(0.6, 1), x + r, y + r), fill=c, outline=(50, 48, 45))
        out = np.asarray(img, np.float32) + (_noise(rng, h, w, 3) - 0.5) * 25
    elif kind == "brick":
        out = np.full((h, w, 3), 185, np.float32)  # mortar
        bh, bw = 26, 64
        for row in range(h // bh + 1):
            off = (row % 2) * bw // 2
            for col in range(-1, w // bw + 2):
                x0, y0 = col * bw + off, row * bh
                c = np.array([150, 62, 45], np.float32) + rng.integers(-30, 31, 3)
                out[y0 + 3: y0 + bh, max(0, x0 + 3): max(0, x0 + bw)] = c
        out += (_noise(rng, h, w, 2) - 0.5) * 40 + (_noise(rng, h, w, 40) - 0.5) * 30
    elif kind == "plain":  # a studio backdrop: a soft vertical gradient, a little noise
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        top, bottom = rng.integers(150, 235, 3), rng.integers(120, 220, 3)
        out = top * (1 - t) + bottom * t + np.zeros((h, w, 3), np.float32) + rng.normal(0, 2, (h, w, 3))
    else:
        raise ValueError(f"unknown texture {kind!r}; known: {', '.join(TEXTURES)}, plain")
    return np.clip(out, 0, 255).astype(np.uint8)


def _example_cutouts() -> list[tuple[str, np.ndarray, np.ndarray]]:
    items = []
    for img_path in sorted((ROOT / "examples").glob("*.png")):
        mask_path = ROOT / "examples" / "masks" / img_path.name
        if not mask_path.exists():
            continue
        rgb = np.asarray(Image.open(img_path).convert("RGB"))
        m = np.asarray(Image.open(mask_path).convert("L")) > 127
        ys, xs = np.nonzero(m)
        items.append((img_path.stem, rgb[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1],
                      m[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]))
    return items


def _figure(rng) -> tuple[str, np.ndarray, np.ndarray]:
    """A person-like figure: skin head and arms, a near-white dress (the part a whole-frame pass misses)."""
    w, h = 120, 240
    img = Image.new("RGB", (w, h), (0, 0, 0))
    m = Image.new("L", (w, h), 0)
    for draw, is_mask in ((ImageDraw.Draw(img), False), (ImageDraw.Draw(m), True)):
        skin, dress, hair = (255, 255, 255) if is_mask else ((224, 180, 150), (246, 244, 240), (70, 45, 30))
        draw.ellipse((38, 4, 82, 52), fill=skin)  # head
        draw.chord((36, 0, 84, 34), 180, 360, fill=hair)
        draw.polygon([(40, 56), (80, 56), (110, 220), (10, 220)], fill=dress)  # dress
        draw.line([(42, 62), (8, 140)], fill=skin, width=10)  # arms
        draw.line([(78, 62), (112, 140)], fill=skin, width=10)
        draw.rectangle((40, 220, 50, 238), fill=skin)  # legs
        draw.rectangle((70, 220, 80, 238), fill=skin)
    a = np.asarray(img).astype(np.float32)
    shade = np.linspace(1.0, 0.9, h)[:, None, None]
    return "figure", np.clip(a * shade, 0, 255).astype(np.uint8), np.asarray(m) > 127


def _car(rng) -> tuple[str, np.ndarray, np.ndarray]:
    """A dark car seen from the side: near-black body, grey windows, black wheels."""
    w, h = 260, 110
    img = Image.new("RGB", (w, h), (0, 0, 0))
    m = Image.new("L", (w, h), 0)
    for draw, is_mask in ((ImageDraw.Draw(img), False), (ImageDraw.Draw(m), True)):
        body, glass, tyre = (255, 255, 255) if is_mask else ((32, 34, 40), (90, 100, 110), (15, 15, 15))
        draw.rounded_rectangle((0, 40, w - 1, 88), 14, fill=body)
        draw.polygon([(50, 42), (80, 6), (180, 6), (215, 42)], fill=body)
        draw.polygon([(62, 40), (86, 12), (128, 12), (128, 40)], fill=glass)
        draw.polygon([(136, 40), (136, 12), (176, 12), (200, 40)], fill=glass)
        draw.ellipse((30, 62, 78, 109), fill=tyre)
        draw.ellipse((182, 62, 230, 109), fill=tyre)
    return "car", np.asarray(img), np.asarray(m) > 127


def objects(seed=0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return _example_cutouts() + [_figure(rng), _car(rng)]


def scene(kind: str, size=(640, 480), seed=0, n_objects: int | None = None):
    """(image, [(category, box, true mask HxW bool), ...]) for one scene. Boxes are (x0, y0, x1, y1),
    the tight bounds of each true mask; objects never overlap."""
    w, h = size
    rng = np.random.default_rng(seed + 1000 * (TEXTURES + ("plain",)).index(kind))
    bg = texture(kind, size, seed)
    img = bg.copy()
    cats = objects(seed)
    n = n_objects or int(rng.integers(3, 5))
    heights = [60, int(rng.integers(90, 140)), int(rng.integers(150, 230)), int(rng.integers(60, 110))][:n]
    taken = np.zeros((h, w), bool)
    placed = []
    order = rng.permutation(len(cats))
    for k, target in enumerate(heights):
        name, rgb, m = cats[order[k % len(cats)]]
        scale = target / rgb.shape[0]
        ow, oh = max(8, int(rgb.shape[1] * scale)), max(8, int(rgb.shape[0] * scale))
        if ow > w * 0.6:
            f = w * 0.6 / ow
            ow, oh = int(ow * f), int(oh * f)
        obj = np.asarray(Image.fromarray(rgb).resize((ow, oh), Image.Resampling.LANCZOS))
        om = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((ow, oh), Image.Resampling.NEAREST)) > 127
        for _ in range(200):
            x0, y0 = int(rng.integers(4, max(5, w - ow - 4))), int(rng.integers(4, max(5, h - oh - 4)))
            if not taken[max(0, y0 - 6): y0 + oh + 6, max(0, x0 - 6): x0 + ow + 6].any():
                break
        else:
            continue
        taken[y0: y0 + oh, x0: x0 + ow] = True
        region = img[y0: y0 + oh, x0: x0 + ow]
        region[om] = obj[om]
        truth = np.zeros((h, w), bool)
        truth[y0: y0 + oh, x0: x0 + ow] = om
        ys, xs = np.nonzero(truth)
        placed.append((name, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), truth))
    out = Image.fromarray(img).filter(ImageFilter.GaussianBlur(0.6))  # a photo's edge, not a cut
    return out, placed


def scenes(count=8, size=(640, 480), kinds=TEXTURES, n_objects: int | None = None):
    for i in range(count):
        kind = kinds[i % len(kinds)]
        img, placed = scene(kind, size, seed=i, n_objects=n_objects)
        yield f"{kind}_{i:02d}", img, placed


def write_yolo(out: Path, count=8, size=(640, 480), kinds=TEXTURES, n_objects: int | None = None) -> Path:
    out = Path(out)
    names = sorted({name for name, *_ in objects()})
    for sub in ("images/train", "labels/train", "truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for stem, img, placed in scenes(count, size, kinds, n_objects):
        img.save(out / "images/train" / f"{stem}.png")
        w, h = size
        lines = []
        for k, (name, (x0, y0, x1, y1), truth) in enumerate(placed):
            lines.append(f"{names.index(name)} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
                         f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
            Image.fromarray(truth.astype(np.uint8) * 255).save(out / "truth" / f"{stem}_{k}.png")
        (out / "labels/train" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (out / "data.yaml").write_text("path: .\ntrain: images/train\nnames:\n" +
                                   "".join(f"  {i}: {n}\n" for i, n in enumerate(names)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--kinds", default=",".join(TEXTURES), help=f"backgrounds, in turn: {', '.join(TEXTURES)}, plain")
    ap.add_argument("--objects", type=int, default=None, help="objects per scene (default: 3-4)")
    args = ap.parse_args()
    w, h = map(int, args.size.lower().split("x"))
    out = write_yolo(Path(args.out), args.count, (w, h), tuple(args.kinds.split(",")), args.objects)
    print(f"wrote {args.count} scenes to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
