"""A cold `backdrop augment` side by side with a capable user's rembg script, same ISNet weights.

The set: 24 box-labelled 640x480 YOLO images (scripts/cluttered_scenes.py), half on plain studio
backdrops, half on histology, foliage, gravel and brick, 3-4 objects each with their true masks.
Both sides get 1 new background per image:

- the rembg script (written out below, as a user would): one rembg session of the store's
  isnet-medium file (dis_custom), the mask at 1024x1024 for each whole image, a random
  two-colour gradient background, PIL's composite, the label file copied;
- `backdrop augment SRC -o OUT -n 1 --generator random --mask-cache off` (box-prompted masks).

Each runs in its own process (start-up and model loading counted on both sides), alternately,
best of ``--repeats``. Then every labelled object is compared with the source through its true
mask: the count of objects whose pixels all came out identical, per side.

    .venv/bin/python benchmarks/bench_augment_vs_rembg.py [--repeats 2] [--keep /tmp/cmp]

Prints figures side by side; never fails on timing.
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

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

KINDS = ("plain", "histology", "plain", "foliage", "plain", "gravel", "plain", "brick")

REMBG_SCRIPT = r'''
import os, shutil, sys, zlib
from pathlib import Path
import numpy as np
from PIL import Image
src, out, model = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
os.environ["U2NET_HOME"] = str(model.parent)  # rembg loads custom files from its home only
import rembg
session = rembg.new_session("dis_custom", model_path=str(model), providers=["CPUExecutionProvider"])
(out / "images/train").mkdir(parents=True, exist_ok=True)
(out / "labels/train").mkdir(parents=True, exist_ok=True)
for path in sorted((src / "images/train").glob("*.png")):
    img = Image.open(path).convert("RGB")
    mask = rembg.remove(img, session=session, only_mask=True).point(lambda v: 255 if v >= 128 else 0)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    t = np.linspace(0, 1, img.height, dtype=np.float32)[:, None, None]
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    bg = Image.fromarray((a * (1 - t) + b * t + np.zeros((img.height, img.width, 3))).astype(np.uint8))
    Image.composite(img, bg, mask).save(out / "images/train" / path.name)
    shutil.copy(src / "labels/train" / (path.stem + ".txt"), out / "labels/train" / (path.stem + ".txt"))
'''


def build(src: Path, count: int) -> None:
    import cluttered_scenes as cs

    cs.write_yolo(src, count, (640, 480), KINDS)


def objects_intact(src: Path, out_images: dict[str, Path]) -> tuple[int, int, list[str]]:
    """(objects whose true pixels all came out identical, objects, the cut ones)."""
    ok = total = 0
    cut = []
    for stem, out in sorted(out_images.items()):
        before = np.asarray(Image.open(src / "images/train" / f"{stem}.png").convert("RGB"))
        after = np.asarray(Image.open(out).convert("RGB"))
        k = 0
        while (src / "truth" / f"{stem}_{k}.png").exists():
            truth = np.asarray(Image.open(src / "truth" / f"{stem}_{k}.png")) > 127
            same = np.array_equal(before[truth], after[truth])
            ok += same
            total += 1
            if not same:
                changed = (before[truth] != after[truth]).any(1).mean()
                cut.append(f"{stem}#{k} ({changed:.1%} of its pixels)")
            k += 1
    return ok, total, cut


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", help="build the set and write the outputs here (default: a temporary folder)")
    ap.add_argument("--backdrop-args", default="", help="extra arguments for backdrop augment (e.g. '--seg-size 768')")
    args = ap.parse_args()

    from backdrop import models

    model = models.path("isnet-medium")
    work = Path(args.keep or tempfile.mkdtemp(prefix="bd-vs-rembg-"))
    src = work / "src"
    if not (src / "data.yaml").exists():
        build(src, args.count)
    script = work / "rembg_script.py"
    script.write_text(REMBG_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    py = sys.executable
    times: dict[str, list[float]] = {"rembg script": [], "backdrop augment": []}
    print(f"{args.count} images 640x480 ({', '.join(sorted(set(KINDS)))}), 1 variant; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared machine)", flush=True)
    for r in range(args.repeats):
        for name in times:
            out = work / f"{'rembg' if name.startswith('rembg') else 'backdrop'}-{r}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            cmd = ([py, str(script), str(src), str(out), str(model)] if name.startswith("rembg") else
                   [py, "-m", "backdrop.cli", "augment", str(src), "-o", str(out), "-n", "1", "--generator", "random",
                    "--mask-cache", "off", "--seed", "1", "-q", *args.backdrop_args.split()])
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"{name} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
            times[name].append(dt)
            print(f"run {r + 1}: {name:17} {dt:6.1f} s  (load average {os.getloadavg()[0]:.1f})", flush=True)
    last = args.repeats - 1
    rembg_out = {p.stem: p for p in (work / f"rembg-{last}" / "images/train").glob("*.png")}
    bd_out = {p.stem.rsplit("_bd", 1)[0]: p for p in (work / f"backdrop-{last}" / "images/train").glob("*_bd1.*")}
    r_ok, r_total, r_cut = objects_intact(src, rembg_out)
    b_ok, b_total, b_cut = objects_intact(src, bd_out)
    manifest = [json.loads(line) for line in (work / f"backdrop-{last}" / "manifest.jsonl").read_text().splitlines()]
    checks = [m["label_check"] for m in manifest if m.get("variant")]
    claimed = sum(c.get("unchanged", 0) for c in checks)
    unknown = sum(len(c.get("not_known_whole", [])) for c in checks)
    best_r, best_b = min(times["rembg script"]), min(times["backdrop augment"])
    print()
    print(f"{'':20}{'best s':>8}{'images/s':>10}{'objects intact (true masks)':>30}")
    print(f"{'rembg script':20}{best_r:8.1f}{args.count / best_r:10.2f}{f'{r_ok}/{r_total}':>30}")
    print(f"{'backdrop augment':20}{best_b:8.1f}{args.count / best_b:10.2f}{f'{b_ok}/{b_total}':>30}")
    print(f"\nbackdrop is {best_r / best_b:.2f}x the rembg script's speed (goal: >= 2x)")
    print(f"backdrop's label check: {claimed} object(s) claimed unchanged, {unknown} flagged as not known whole")
    if b_cut:
        print("backdrop cut:", ", ".join(b_cut))
    if r_cut:
        print("rembg script cut:", ", ".join(r_cut[:12]) + (" ..." if len(r_cut) > 12 else ""))
    print(f"outputs in {work}")


if __name__ == "__main__":
    main()
