"""Time each pipeline stage on the example images and print the figures (never fails on timing).

    .venv/bin/python benchmarks/bench_pipeline.py                      # default profile
    .venv/bin/python benchmarks/bench_pipeline.py --preset offline -n 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from backdrop import Pipeline, PipelineConfig
from backdrop.config import preset
from backdrop.images import load_image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("images", nargs="*", type=Path, default=sorted((ROOT / "examples").glob("*.png")))
    ap.add_argument("--preset", default="default")
    ap.add_argument("-n", "--variants", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="runs per image (the first also loads models)")
    ap.add_argument("--generator", default=None)
    args = ap.parse_args()

    cfg = preset(args.preset, PipelineConfig(variants=args.variants, seed=1))
    if args.generator:
        cfg = cfg.with_overrides(generate={"backend": args.generator})
    t0 = time.perf_counter()
    pipe = Pipeline.from_config(cfg)
    build = time.perf_counter() - t0
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}")
    print("backends:", {k: v.get("name") + (f" ({v['model']})" if v.get("model") else "") for k, v in pipe.backends().items()})
    print(f"pipeline build: {build:.2f} s; variants per image: {args.variants}")
    for path in args.images:
        img = load_image(path)
        runs = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            res = pipe(img, seed=1)
            runs.append((time.perf_counter() - t, res.timings))
        w, h = img.image.size
        print(f"\n{path.name} ({w}x{h})")
        stages = runs[-1][1].keys()
        for stage in stages:
            vals = [r[1].get(stage, 0.0) for r in runs]
            per = " (all variants)" if stage in ("generate", "composite") else ""
            print(f"  {stage:10s} first {vals[0]:7.3f} s   warm {statistics.median(vals[1:] or vals):7.3f} s{per}")
        print(f"  {'total':10s} first {runs[0][0]:7.3f} s   warm {statistics.median([r[0] for r in runs[1:]] or [runs[0][0]]):7.3f} s")


if __name__ == "__main__":
    main()
