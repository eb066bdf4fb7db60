"""`backdrop augment` at two commits, side by side: the same set, seed and settings, runs
interleaved (A, B, A, B, ...) so a shared machine's load falls on both alike; prints the wall
time of each run, the means, and whether the two outputs hold the same files and pixels.

Each commit's ``src/`` is exported with ``git archive`` into a temporary folder and put first on
PYTHONPATH (the venv's dependencies serve both). Weight-free settings by default (classical
segmenter, random generator), so it runs anywhere.

    .venv/bin/python benchmarks/bench_refs.py 3b80aa1 HEAD [--rounds 3] [--variants 4] [--set DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def export(ref: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def run(src: Path, dataset: Path, out: Path, variants: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-c", "from backdrop.cli import main; main()", "augment", str(dataset), "-o", str(out),
           "-n", str(variants), "--seed", "1", "--generator", "random", "--segmenter", "classical",
           "--mask-cache", "off", "-q"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    return time.perf_counter() - t0


def differences(a: Path, b: Path) -> tuple[list[str], int]:
    """The files (labels, index files, decoded pixels) that differ between two output sets."""
    files = lambda root: {p.relative_to(root) for p in root.rglob("*")  # noqa: E731
                          if p.is_file() and ".backdrop" not in p.parts and p.name != "manifest.jsonl"}
    fa, fb = files(a), files(b)
    diff = [f"{p} (only in one)" for p in sorted(fa ^ fb)]
    for rel in sorted(fa & fb):
        if rel.suffix.lower() in (".png", ".jpg", ".jpeg"):
            if not np.array_equal(np.asarray(Image.open(a / rel)), np.asarray(Image.open(b / rel))):
                diff.append(str(rel))
        elif (a / rel).read_bytes() != (b / rel).read_bytes():
            diff.append(str(rel))
    return diff, len(fa | fb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--set", type=Path, default=ROOT / "examples" / "datasets" / "yolo-cells")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        srcs = {args.a: export(args.a, tmp / "a"), args.b: export(args.b, tmp / "b")}
        times: dict[str, list[float]] = {args.a: [], args.b: []}
        for r in range(args.rounds):
            for ref, src in srcs.items():
                out = tmp / f"out-{'a' if ref == args.a else 'b'}-{r}"
                times[ref].append(run(src, args.set, out, args.variants))
        diff, n = differences(tmp / "out-a-0", tmp / "out-b-0")
    print(f"set {args.set.name}, {args.variants} variant(s), random + classical, {args.rounds} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'commit':<12} " + " ".join(f"run{i + 1:>2}" for i in range(args.rounds)) + "    mean")
    for ref, ts in times.items():
        print(f"{ref:<12} " + " ".join(f"{t:5.2f}" for t in ts) + f"   {statistics.mean(ts):5.2f} s")
    print(f"outputs: {n} files, " + ("the same files, labels and pixels" if not diff else
                                      f"{len(diff)} differ: {', '.join(diff[:8])}{' ...' if len(diff) > 8 else ''}"))


if __name__ == "__main__":
    main()
