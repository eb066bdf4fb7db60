"""Time ReplaceBackground inside a training loop: per image, the store lookup, and a DataLoader.

    python benchmarks/bench_transforms.py [--repeat 20] [--images 32] [--quick]

1. ms per image of the core transform with a given mask, per generator (random, pool, texture) at
   640x480 and 1024x768, single thread (OpenCV and torch held to one thread), beside a plain
   albumentations pipeline (flip + brightness/contrast + shift-scale-rotate) on the same image;
2. the mask-store lookup (hash the pixels, read and check the PNG) and a whole call that finds
   its mask there (image + boxes only, as after ``backdrop masks``);
3. DataLoader throughput (images/s) with 0 and 2 workers: a dataset that decodes a JPEG and its
   mask, without and with the transform.

Inputs are synthetic (written to a temporary folder), so the figures can be reproduced anywhere.
Prints tables; never asserts on timing. CPU time is printed beside wall time: on a shared machine
it is the steadier figure. The load average is printed first: quote it with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SIZES = [(640, 480), (1024, 768)]


def scene(width: int, height: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A speckled image with an elliptical object: (image, mask, the object's box)."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), (205, 185, 215), np.float32)
    for _ in range(width * height // 1500):
        c = (int(rng.integers(width)), int(rng.integers(height)))
        cv2.circle(img, c, int(rng.integers(3, 14)), (float(rng.integers(90, 170)), 60.0, 150.0), -1)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 5, height // 4), 0, 0, 360, 1, -1)
    box = np.array([[width / 2 - width / 5, height / 2 - height / 4, width / 2 + width / 5, height / 2 + height / 4]])
    return img, mask, box


def timed(fn, repeat: int, warm: int = 2) -> tuple[float, float]:
    """Median wall and median CPU milliseconds of ``fn(k)``."""
    for k in range(warm):
        fn(10_000 + k)
    wall, cpu = [], []
    for k in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(k)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def per_image(repeat: int, tmp: Path, sizes) -> None:
    from backdrop.transforms import ReplaceBackground

    pool = tmp / "pool"
    pool.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(pool / f"{i}.jpg", quality=90)
    plain = None
    try:
        import albumentations as A

        plain = A.Compose([A.HorizontalFlip(), A.RandomBrightnessContrast(p=1.0),
                           A.Affine(scale=(0.9, 1.1), rotate=(-10, 10), p=1.0)], seed=0)
    except ImportError:
        pass
    print("\n1. ms per image, mask given, single thread (median wall / CPU)")
    print(f"{'size':>10} {'generator':>10} {'wall ms':>9} {'cpu ms':>9}")
    for w, h in sizes:
        img, mask, _ = scene(w, h)
        for name, kw in (("random", {}), ("pool", {"backgrounds": pool}), ("texture", {})):
            t = ReplaceBackground(name, seed=0, masks=None, **kw)
            n = repeat if name != "texture" else max(3, repeat // 4)
            wall, cpu = timed(lambda k: t(image=img, mask=mask, seed=k), n)
            print(f"{w}x{h:<5} {name:>10} {wall:9.1f} {cpu:9.1f}")
        if plain is not None:
            wall, cpu = timed(lambda k: plain(image=img, mask=mask), repeat)
            print(f"{w}x{h:<5} {'plain A.*':>10} {wall:9.1f} {cpu:9.1f}   (flip + brightness/contrast + affine, no backdrop)")


def lookups(repeat: int, tmp: Path) -> None:
    from backdrop.maskstore import MaskStore
    from backdrop.transforms import ReplaceBackground

    print("\n2. the mask store (image + boxes only, as after `backdrop masks`)")
    print(f"{'size':>10} {'what':>22} {'wall ms':>9} {'cpu ms':>9}")
    for w, h in SIZES:
        img, mask, box = scene(w, h)
        t = ReplaceBackground(seed=0, masks=tmp / "store", on_miss="error")
        store = MaskStore(tmp / "store")
        store.put(img, box, t.store_settings("segment"), mask > 0)
        wall, cpu = timed(lambda k: store.get(img, box, t.store_settings("segment")), repeat)
        print(f"{w}x{h:<5} {'lookup (hash + PNG)':>22} {wall:9.2f} {cpu:9.2f}")
        wall, cpu = timed(lambda k: t(image=img, bboxes=box, seed=k), repeat)
        print(f"{w}x{h:<5} {'random, mask from store':>22} {wall:9.1f} {cpu:9.1f}")


class _Set:
    def __init__(self, folder: Path, n: int, transform):
        self.files = sorted(folder.glob("*.jpg"))[:n]
        self.transform = transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import torch

        img = cv2.cvtColor(cv2.imread(str(self.files[i])), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(self.files[i].with_suffix(".png")), cv2.IMREAD_GRAYSCALE)
        if self.transform is not None:
            img = self.transform(image=img, mask=mask)["image"]
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)


def dataloader(n_images: int, tmp: Path) -> None:
    try:
        import torch
    except ImportError:
        print("\n3. DataLoader: torch not installed, skipped")
        return
    from backdrop.transforms import ReplaceBackground

    folder = tmp / "set"
    folder.mkdir()
    for i in range(n_images):
        img, mask, _ = scene(640, 480, seed=i)
        Image.fromarray(img).save(folder / f"{i:04d}.jpg", quality=92)
        Image.fromarray(mask * 255).save(folder / f"{i:04d}.png")
    print(f"\n3. DataLoader, {n_images} JPEGs 640x480 + masks, batch 8 (images/s, one epoch after a warm one)")
    print(f"{'workers':>8} {'plain':>9} {'+random':>9}")
    for workers in (0, 2):
        row = []
        for transform in (None, ReplaceBackground("random")):
            loader = torch.utils.data.DataLoader(_Set(folder, n_images, transform), batch_size=8,
                                                 num_workers=workers, persistent_workers=workers > 0)
            for _ in loader:  # warm: workers started, generators loaded
                pass
            t0 = time.perf_counter()
            count = sum(len(b) for b in loader)
            row.append(count / (time.perf_counter() - t0))
        print(f"{workers:>8} {row[0]:9.1f} {row[1]:9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--images", type=int, default=32, help="DataLoader: images in the set")
    ap.add_argument("--quick", action="store_true", help="640x480 only, few repeats")
    args = ap.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} on {os.cpu_count()} CPUs "
          "(figures on a shared machine vary with it)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        repeat = 5 if args.quick else args.repeat
        per_image(repeat, tmp, SIZES[:1] if args.quick else SIZES)
        lookups(repeat, tmp)
        dataloader(16 if args.quick else args.images, tmp)


if __name__ == "__main__":
    main()
