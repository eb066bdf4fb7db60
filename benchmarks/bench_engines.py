"""The local engine vs the Ray engine on this machine, side by side, for a weight-free profile:
what Ray costs (start-up, per item) where it cannot help, and the per-item cost that sets how
far it scales out. Prints figures; never fails on timing.

    .venv/bin/python benchmarks/bench_engines.py                       # yolo-cells x4 (32 images), 2 variants
    .venv/bin/python benchmarks/bench_engines.py --copies 8 --concurrency 1 2

The set is examples/datasets/yolo-cells with its training images repeated ``--copies`` times
(under new names, so each is its own item). The Ray run starts a private local Ray with every
core of this machine (``num_cpus``), as ``--engine ray`` does without ``--ray-address``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from backdrop.config import PipelineConfig, preset
from backdrop.engine.local import run_local
from backdrop.job import Job

ROOT = Path(__file__).resolve().parents[1]
SET = ROOT / "examples" / "datasets" / "yolo-cells"


def make_set(dst: Path, copies: int) -> int:
    dst.mkdir(parents=True)
    shutil.copy(SET / "data.yaml", dst / "data.yaml")
    for sub in ("images/val", "labels/val"):
        shutil.copytree(SET / sub, dst / sub)
    n = 0
    for img in sorted((SET / "images" / "train").iterdir()):
        label = SET / "labels" / "train" / f"{img.stem}.txt"
        for k in range(copies):
            name = f"{img.stem}_{k}"
            (dst / "images" / "train").mkdir(parents=True, exist_ok=True)
            (dst / "labels" / "train").mkdir(parents=True, exist_ok=True)
            shutil.copy(img, dst / "images" / "train" / f"{name}{img.suffix}")
            if label.exists():
                shutil.copy(label, dst / "labels" / "train" / f"{name}.txt")
            n += 1
    return n


def manifest(out: Path) -> list[dict]:
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("sha256", None)
    return sorted(lines, key=lambda d: (d["image"], d.get("variant", 0)))


class Clock:
    """Outcome times, for the steady rate (first to last finished item: start-up left out)."""

    def __init__(self) -> None:
        self.t: list[float] = []
        self.per_item: list[float] = []

    def __call__(self, o) -> None:
        self.t.append(time.perf_counter())
        if o.status == "done":
            self.per_item.append(o.seconds)

    def steady(self) -> float:
        return (len(self.t) - 1) / (self.t[-1] - self.t[0]) if len(self.t) > 1 and self.t[-1] > self.t[0] else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=4, help="repeat the 8 training images this many times")
    ap.add_argument("-n", "--variants", type=int, default=2)
    ap.add_argument("--preset", default="offline", help="a weight-free profile measures the engine, not a model")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2], help="Ray actor counts to try")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    cfg = preset(args.preset, PipelineConfig(variants=args.variants, seed=1))
    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    try:
        src = work / "set"
        items = make_set(src, args.copies)
        print(f"machine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"set: yolo-cells x{args.copies}: {items} training images (256x192) + 2 val copied; "
              f"preset {args.preset}, {args.variants} variant(s) each")

        def job(out: Path) -> Job:
            return Job(config=cfg, out=str(out), kind="dataset", inputs=(str(src),), format="yolo")

        rows = []
        clock = Clock()
        t0 = time.perf_counter()
        s = run_local(job(work / "local"), progress=False, on_outcome=clock)
        wall = time.perf_counter() - t0
        per_item = statistics.median(clock.per_item)
        rows.append(("local", wall, s.done / wall, clock.steady(), per_item, "-"))
        ref = manifest(work / "local")

        import ray

        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        from backdrop.engine.ray import run_ray

        overhead = None
        try:
            for c in args.concurrency:
                clock_r = Clock()
                out = work / f"ray-{c}"
                t0 = time.perf_counter()
                s = run_ray(job(out), progress=False, on_outcome=clock_r, concurrency=c)
                wall = time.perf_counter() - t0
                same = "yes" if manifest(out) == ref else "NO"
                rows.append((f"ray, {c} actor(s)", wall, s.done / wall, clock_r.steady(), statistics.median(clock_r.per_item), same))
                if c == 1 and clock_r.steady() > 0:  # one actor: the gap between items beyond the item's own work
                    overhead = 1 / clock_r.steady() - statistics.mean(clock_r.per_item)
        finally:
            ray.shutdown()

        print(f"per-item cost (local, median of {len(clock.per_item)}): {per_item:.3f} s "
              f"= {args.variants} variant(s) + segment/inpaint/caption once")
        print(f"Ray start-up (ray.init, local, {os.cpu_count()} CPUs): {ray_start:.1f} s (not in the rows below)")
        print(f"{'engine':<18} {'wall s':>8} {'items/s':>8} {'steady items/s':>15} {'s/item in worker':>17}  same manifest")
        for name, wall, rate, steady, item, same in rows:
            print(f"{name:<18} {wall:>8.1f} {rate:>8.2f} {steady:>15.2f} {item:>17.3f}  {same}")
        print("wall: the whole run (plan, actor start, items, manifest); steady: first to last finished item "
              "(as the driver sees them); s/item in worker: median time one item takes inside its worker")
        if overhead is not None:
            print(f"Ray cost per item (1 actor: time between items minus the item's own work): {overhead * 1000:.0f} ms")
        print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
