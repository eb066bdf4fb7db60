"""Generate the small example images in examples/ (and their true masks in examples/masks/).

Deterministic (fixed seeds, numpy + OpenCV + Pillow only), so the files can be regenerated:

    python scripts/make_examples.py            # writes examples/*.png and examples/masks/*.png
    python scripts/make_examples.py --out DIR  # somewhere else

- ``micrograph.png``: a stained, parasite-like cell (purple, granular, nucleus, darker soft
  membrane) on a pale pink, grainy, unevenly lit microscopy field with a little debris;
- ``product.png``: a glazed mug with cylindrical shading, a rim, a handle (whose hole shows the
  backdrop) and a soft contact shadow, on a smooth studio gradient.

The masks are 255 where the object's coverage is at least one half (the shadow and the debris
are background). The images are the inputs of the README's first command and of the
classical segmenter's tests and benchmark.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SS = 4  # supersampling factor for anti-aliased shape edges


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid, upsampled smoothly."""
    ch, cw = max(2, h * cells // max(h, w)), max(2, w * cells // max(h, w))
    coarse = rng.standard_normal((ch, cw)).astype(np.float32)
    up = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(up, (0, 0), max(h, w) / cells / 2)


def _coverage(inside: np.ndarray, h: int, w: int) -> np.ndarray:
    """Downsample a supersampled boolean shape to a float coverage map of size (h, w)."""
    return cv2.resize(inside.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)


def _grid(h: int, w: int, ss: int = 1) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0 : h * ss, 0 : w * ss].astype(np.float32)
    return (xs + 0.5) / ss - 0.5, (ys + 0.5) / ss - 0.5


def _to_u8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_micrograph(size: tuple[int, int] = (640, 480), seed: int = 7) -> tuple[Image.Image, Image.Image]:
    """A stained parasite-like cell on a pale pink grainy field; returns (RGB image, L mask)."""
    w, h = size
    rng = np.random.default_rng(seed)
    x, y = _grid(h, w)

    # -- the field: pale pink, unevenly lit (vignette + low-frequency blotches), grainy ----------
    base = np.array([238, 212, 222], np.float32)
    light = 1.0 - 0.10 * (((x - w * 0.55) / w) ** 2 + ((y - h * 0.45) / h) ** 2) * 2.2
    light += 0.025 * _smooth_noise(rng, h, w, 6)
    tint = 4.0 * _smooth_noise(rng, h, w, 5)
    field = base[None, None, :] * light[..., None]
    field[..., 1] -= tint  # slightly more or less pink from place to place
    # grain: fine luminance noise plus a faint coarser clumping, as in a stained smear
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.8) * 7.0
    grain += cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 2.5) * 5.0
    field += grain[..., None] * np.array([1.0, 0.9, 0.95], np.float32)
    # debris: a few small faint specks (background, not in the mask)
    for _ in range(7):
        cx, cy = rng.uniform(20, w - 20), rng.uniform(20, h - 20)
        r = rng.uniform(1.5, 3.5)
        d = np.hypot(x - cx, y - cy)
        field -= (np.clip(1.5 - d / r, 0, 1) * rng.uniform(15, 35))[..., None] * np.array([0.8, 1.0, 0.6])

    # -- the cell: an irregular, slightly elongated blob --------------------------------------
    cx, cy, rad = w * 0.48, h * 0.52, min(w, h) * 0.23
    angle = rng.uniform(0, np.pi)
    harmonics = [(k, rng.uniform(0.03, 0.09) / k ** 0.5, rng.uniform(0, 2 * np.pi)) for k in range(2, 7)]

    def radius(theta: np.ndarray) -> np.ndarray:
        r = np.ones_like(theta)
        for k, a, phi in harmonics:
            r += a * np.cos(k * theta + phi)
        return rad * r

    xs, ys = _grid(h, w, SS)
    dx, dy = xs - cx, ys - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    u, v = u / 1.25, v / 0.85  # elongated
    theta = np.arctan2(v, u)
    rel_ss = np.hypot(u, v) / radius(theta)  # < 1 inside
    alpha = _coverage(rel_ss < 1.0, h, w)
    rel = cv2.resize(rel_ss, (w, h), interpolation=cv2.INTER_AREA)
    mask = alpha >= 0.5

    # cytoplasm: purple, lighter towards the middle, granular
    cyto = np.array([150, 92, 172], np.float32)
    body = cyto[None, None, :] * (0.92 + 0.10 * np.clip(1 - rel, 0, 1))[..., None]
    gran = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.6)
    gran = np.clip(gran * 3.0, -1, 1)
    body += (gran * 14.0)[..., None] * np.array([1.0, 0.8, 0.9], np.float32)
    # dark granules (e.g. pigment) scattered inside
    for _ in range(26):
        t, rr = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 0.7))
        gx = cx + rr * rad * 1.1 * np.cos(t + angle)
        gy = cy + rr * rad * 0.75 * np.sin(t + angle)
        d = np.hypot(x - gx, y - gy)
        body -= (np.clip(1.6 - d / rng.uniform(1.5, 3.0), 0, 1) * rng.uniform(25, 55))[..., None]
    # nucleus: a darker, denser, off-centre blob
    nx, ny = cx + 0.25 * rad * np.cos(angle + 0.8), cy + 0.2 * rad * np.sin(angle + 0.8)
    nd = np.hypot((x - nx) / 1.15, (y - ny) / 0.9) / (rad * 0.32)
    nuc = np.clip(1.4 - nd, 0, 1) ** 0.7
    body = body * (1 - nuc[..., None]) + (np.array([92, 40, 128], np.float32) * (0.9 + 0.1 * gran[..., None])) * nuc[..., None]
    # soft membrane: a darker, more saturated rim that fades outwards
    rim = np.exp(-(((rel - 0.965) / 0.035) ** 2))
    body = body * (1 - 0.35 * rim[..., None]) + np.array([110, 50, 140], np.float32) * (0.35 * rim[..., None])
    # the cell is slightly out of focus at its edge: a soft halo blends it into the field
    soft = cv2.GaussianBlur(alpha, (0, 0), 1.2)
    a3 = np.maximum(soft, alpha * 0.0)[..., None]
    img = field * (1 - a3) + body * a3
    # the same grain lies over everything (it is in the optics and sensor, not the sample)
    img += (cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.7) * 2.5)[..., None]
    return Image.fromarray(_to_u8(img), "RGB"), Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L")


def _rounded_box(xs, ys, x0, y0, x1, y1, r):
    """Inside test for an axis-aligned rectangle with rounded corners."""
    qx = np.maximum(np.maximum(x0 + r - xs, xs - (x1 - r)), 0)
    qy = np.maximum(np.maximum(y0 + r - ys, ys - (y1 - r)), 0)
    inside_core = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    return inside_core & (np.hypot(qx, qy) <= r)


def make_product(size: tuple[int, int] = (640, 480), seed: int = 11) -> tuple[Image.Image, Image.Image]:
    """A shaded mug with a handle on a smooth studio gradient; returns (RGB image, L mask)."""
    w, h = size
    rng = np.random.default_rng(seed)
    x, y = _grid(h, w)

    # -- the backdrop: a vertical grey-blue to warm white sweep with a soft spot light ------------
    t = y / (h - 1)
    top, bottom = np.array([196, 204, 214], np.float32), np.array([240, 238, 233], np.float32)
    sweep = top[None, None, :] * (1 - t[..., None]) + bottom[None, None, :] * t[..., None]
    spot = np.exp(-(((x - w * 0.5) / (w * 0.45)) ** 2 + ((y - h * 0.4) / (h * 0.55)) ** 2))
    backdrop = sweep * (0.93 + 0.08 * spot[..., None])

    # -- the mug: body (cylinder), rim ellipse, handle ring ---------------------------------------
    bx0, bx1 = w * 0.33, w * 0.61
    by0, by1 = h * 0.26, h * 0.78
    rx, ry = (bx1 - bx0) / 2, h * 0.045  # the rim ellipse
    mcx = (bx0 + bx1) / 2
    xs, ys = _grid(h, w, SS)
    body_ss = _rounded_box(xs, ys, bx0, by0, bx1, by1, h * 0.025)
    body_ss |= ((xs - mcx) / rx) ** 2 + ((ys - by0) / ry) ** 2 <= 1  # round top
    body_ss |= (((xs - mcx) / rx) ** 2 + ((ys - by1 + h * 0.012) / ry) ** 2 <= 1) & (ys > by0)  # round base
    # handle: an elliptical ring on the right side
    hcx, hcy = bx1 + w * 0.015, (by0 + by1) / 2 - h * 0.02
    hd = np.hypot((xs - hcx) / (w * 0.085), (ys - hcy) / (h * 0.15))
    handle_ss = (hd <= 1.0) & (hd >= 0.58) & (xs > bx1 - w * 0.02)
    mug_ss = body_ss | handle_ss
    alpha = _coverage(mug_ss, h, w)
    handle = _coverage(handle_ss & ~body_ss, h, w)
    mask = alpha >= 0.5

    # shading: a glazed teal cylinder lit from the upper left
    base = np.array([34, 128, 140], np.float32)
    s = np.clip((x - mcx) / rx, -1, 1)
    lam = 0.55 + 0.5 * np.cos((s + 0.35) * np.pi / 2.2)  # diffuse, brightest left of centre
    shade = base[None, None, :] * lam[..., None]
    highlight = np.exp(-(((s + 0.45) / 0.08) ** 2)) * np.clip((y - by0) / (by1 - by0) * 4, 0, 1)
    shade += (highlight * 70.0)[..., None] * np.array([0.9, 1.0, 1.0], np.float32)
    shade *= (1.0 - 0.18 * np.clip((y - by0) / (by1 - by0), 0, 1) ** 2)[..., None]  # darker near the base
    # handle: its own shading along the ring
    ring = np.clip(1 - np.abs(np.hypot((x - hcx) / (w * 0.085), (y - hcy) / (h * 0.15)) - 0.79) / 0.21, 0, 1)
    handle_col = base[None, None, :] * (0.55 + 0.35 * ring)[..., None]
    shade = shade * (1 - handle[..., None]) + handle_col * handle[..., None]
    # the open top: the inside of the mug, darker, seen as an ellipse
    inner = ((x - mcx) / (rx * 0.9)) ** 2 + ((y - by0) / (ry * 0.75)) ** 2 <= 1
    inner_a = cv2.GaussianBlur(inner.astype(np.float32), (0, 0), 0.8)
    shade = shade * (1 - inner_a[..., None]) + (base * 0.42)[None, None, :] * inner_a[..., None]
    # glaze: very faint mottling
    shade += (cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 3.0) * 4.0)[..., None]

    # -- contact shadow on the backdrop (background) ------------------------------------------------
    sh = np.exp(-(((x - mcx - w * 0.03) / (w * 0.2)) ** 2 + ((y - by1 - h * 0.005) / (h * 0.035)) ** 2))
    backdrop *= (1 - 0.22 * sh)[..., None]
    img = backdrop * (1 - alpha[..., None]) + shade * alpha[..., None]
    img += rng.normal(0, 0.6, (h, w, 1)).astype(np.float32)  # sensor noise, so the sweep does not band
    return Image.fromarray(_to_u8(img), "RGB"), Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L")


EXAMPLES = {"micrograph": make_micrograph, "product": make_product}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--out", type=Path, default=root / "examples", help="output folder (default: examples/)")
    args = parser.parse_args(argv)
    (args.out / "masks").mkdir(parents=True, exist_ok=True)
    for name, make in EXAMPLES.items():
        image, mask = make()
        image.save(args.out / f"{name}.png", optimize=True)
        mask.save(args.out / "masks" / f"{name}.png", optimize=True)
        size = (args.out / f"{name}.png").stat().st_size
        print(f"{args.out / (name + '.png')}: {image.size[0]}x{image.size[1]}, {size / 1024:.0f} KiB, "
              f"foreground {np.mean(np.asarray(mask) > 0):.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
