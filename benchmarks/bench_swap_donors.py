"""Memory and time of `swap`'s first pass (the donor store) as the set grows: flat memory expected.

    python benchmarks/bench_swap_donors.py                 # 1 000 and 10 000 images of 48 px
    python benchmarks/bench_swap_donors.py --sizes 200     # quick

For each size a class-folder set (5 classes, each on its own background colour, one disc each)
is written to a temporary folder and the engine's own ``start()`` runs in a fresh process (the
first pass: segmenter, mask cache, quilted clean backgrounds, the index); the process's peak
resident memory (``ru_maxrss``) and the pass's time are printed side by side. Then the first
item's variants are made, to show the store is read memory-mapped. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from backdrop.config import GenerateConfig, PipelineConfig, SegmentConfig
from backdrop.engine.work import Job, start
src, out = sys.argv[1], sys.argv[2]
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = PipelineConfig(variants=1, seed=1, segment=SegmentConfig(backend="classical"), generate=GenerateConfig(backend="swap"))
t0 = time.perf_counter()
plan, worker = start(Job(config=cfg, out=out, kind="dataset", inputs=(src,), image_format="png"))
t1 = time.perf_counter()
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
task = next(iter(plan.tasks()))
worker(task)
plan.close()
print(json.dumps({"pass_s": t1 - t0, "rss_before_mb": rss0 / 1024, "rss_after_pass_mb": rss1 / 1024,
                  "rss_after_item_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_set(root: Path, n: int, side: int) -> None:
    import numpy as np
    from PIL import Image, ImageDraw

    colours = [(200, 60, 60), (60, 180, 70), (70, 90, 210), (180, 170, 60), (90, 90, 90)]
    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % 5
        d = root / "train" / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        arr = np.clip(np.array(colours[c], float) + rng.normal(0, 8, (side, side, 3)), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        r = side // 5
        cx, cy = int(rng.integers(r, side - r)), int(rng.integers(r, side - r))
        ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=(245, 245, 240))
        img.save(d / f"img_{i:06d}.png")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--side", type=int, default=48)
    a = p.parse_args(argv)
    src_dir = Path(__file__).resolve().parents[1] / "src"
    print(f"machine load (1 min) {os.getloadavg()[0]:.1f}; {a.side} px images, classical segmenter, swap -n 1")
    print("| images | first pass | per image | peak RSS before | after the pass | after one item |")
    print("|---|---|---|---|---|---|")
    for n in a.sizes:
        with tempfile.TemporaryDirectory(prefix="backdrop-donors-") as tmp:
            make_set(Path(tmp) / "set", n, a.side)
            env = {**os.environ, "PYTHONPATH": str(src_dir), "BACKDROP_HOME": str(Path(tmp) / "home")}
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "set"), str(Path(tmp) / "out")],
                               env=env, capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-2000:])
                continue
            f = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"| {n} | {f['pass_s']:.0f} s | {1000 * f['pass_s'] / n:.1f} ms | {f['rss_before_mb']:.0f} MB "
                  f"| {f['rss_after_pass_mb']:.0f} MB | {f['rss_after_item_mb']:.0f} MB |", flush=True)
            del t0


if __name__ == "__main__":
    main()
