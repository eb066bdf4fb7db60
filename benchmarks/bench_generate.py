"""Time the weight-free generators (texture, pool) and the composite, per variant.

    python benchmarks/bench_generate.py [--repeat 3]

Inputs are synthetic (a speckled "micrograph" with an elliptical object, and a pool of 4000x3000
JPEGs written to a temporary folder), so the figures can be reproduced anywhere. Prints a table;
never asserts on timing. CPU time is printed beside wall time: on a busy machine it is the
steadier figure (it sums all threads, so it can exceed wall time when OpenCV runs in parallel).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from backdrop.composite import composite
from backdrop.config import CompositeConfig, GenerateConfig
from backdrop.generate.pool import PoolGenerator
from backdrop.generate.texture import TextureGenerator
from backdrop.types import GenerateRequest, Prompt

SIZES = [(640, 480), (1920, 1080)]


def scene(width: int, height: int, seed: int = 0) -> GenerateRequest:
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), (205, 185, 215), np.float32)
    for _ in range(width * height // 1500):
        c = (int(rng.integers(width)), int(rng.integers(height)))
        colour = (float(rng.integers(90, 170)), 60.0, float(rng.integers(120, 200)))
        cv2.circle(img, c, int(rng.integers(3, 14)), colour, -1)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 5, height // 4), 0, 0, 360, 255, -1)
    known = np.where(cv2.dilate(mask, np.ones((15, 15), np.uint8)) == 0, 255, 0).astype(np.uint8)
    pil = Image.fromarray(img)
    return GenerateRequest(pil, Image.fromarray(mask), pil, Image.fromarray(known), Prompt("cells"), seed=0)


def with_seed(req: GenerateRequest, seed: int) -> GenerateRequest:
    return GenerateRequest(req.image, req.mask, req.background, req.known, req.prompt, seed)


def timed(fn, repeat: int) -> tuple[float, float, float]:
    """Median and best wall time, and median CPU time (the honest figure on a shared machine)."""
    wall, cpu = [], []
    for k in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(k)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="variants (seeds) timed per row")
    args = parser.parse_args()

    print(f"cores: {os.cpu_count()}, cv2 threads: {cv2.getNumThreads()}, repeat: {args.repeat}")
    print(f"load average: {os.getloadavg()[0]:.1f}")
    print(f"{'what':<34}{'size':>11}{'wall med s':>12}{'wall min s':>12}{'cpu med s':>11}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pool_dir = Path(tmp) / "pool"
        pool_dir.mkdir()
        for i in range(4):
            arr = np.asarray(scene(4000, 3000, seed=100 + i).image)
            Image.fromarray(arr).save(pool_dir / f"bg{i}.jpg", quality=90)
        for width, height in SIZES:
            req = scene(width, height)
            texture = TextureGenerator(GenerateConfig())
            rows.append(("texture (patch 48)", (width, height), timed(lambda k: texture(with_seed(req, k)), args.repeat)))
            pool = PoolGenerator(GenerateConfig(backend="pool", backgrounds=str(pool_dir)))
            rows.append(("pool (4000x3000 JPEG sources)", (width, height),
                         timed(lambda k: pool(with_seed(req, k)), args.repeat)))
            bg = texture(req)
            for harmonize in (False, True):
                cfg = CompositeConfig(feather=2, harmonize=harmonize)
                rows.append((f"composite (harmonize={harmonize})", (width, height),
                             timed(lambda k: composite(req.image, req.mask, bg, cfg), args.repeat)))
            for what, (w, h), (med, best, cpu) in rows[-4:]:
                print(f"{what:<34}{f'{w}x{h}':>11}{med:>12.3f}{best:>12.3f}{cpu:>11.3f}")


if __name__ == "__main__":
    main()
