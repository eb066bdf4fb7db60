"""Peak memory of a run stays a few dozen bytes a pixel (issue 9, case 11).

A 143 kB PNG of 49 Mpx passed the default pixel limit and took 3.3 GB (about 67 bytes a pixel,
most of it full-size float32 copies in composite). The README states the figure for the largest
accepted image (60 Mpx: about 1.9 GB with -n 1); this test checks the same rate on a 12 Mpx image,
small enough to stay quick, whose objects span the frame (so no stage can crop its work away).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw

PROBE = textwrap.dedent(
    """
    import atexit, json, re, sys
    # VmHWM is this process's own peak; ru_maxrss would also count the parent's (pytest's) peak,
    # which Linux folds in at exec after a vfork
    hwm = lambda: int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
    atexit.register(lambda: print(json.dumps({"peak_kb": hwm()}), file=sys.stderr))
    from backdrop.cli import main
    sys.argv = ["backdrop", "run", sys.argv[1], "-o", sys.argv[2], "--preset", "offline", "-n", sys.argv[3],
                "--seed", "1"]
    main()
    """
)


def _scene(tmp_path, w, h):
    im = Image.new("RGB", (w, h), (90, 140, 80))
    d = ImageDraw.Draw(im)
    d.ellipse((w * 0.05, h * 0.05, w * 0.3, h * 0.3), fill=(220, 40, 50))
    d.ellipse((w * 0.7, h * 0.7, w * 0.95, h * 0.95), fill=(220, 40, 50))
    d.ellipse((w * 0.4, h * 0.4, w * 0.6, h * 0.6), fill=(40, 40, 220))
    im.save(tmp_path / "big.png")


def _peak(tmp_path, variants: int) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "big.png"), str(tmp_path / f"out{variants}"),
                           str(variants)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stderr.strip().splitlines()[-1])["peak_kb"] * 1024


def test_run_peak_memory_is_bounded_per_pixel(tmp_path):
    w, h = 4000, 3000
    _scene(tmp_path, w, h)
    peak = _peak(tmp_path, 1)
    per_pixel = (peak - 250 * 2**20) / (w * h)  # less what Python, numpy, OpenCV and Pillow take
    assert per_pixel < 40, f"peak {peak / 2**20:.0f} MB: {per_pixel:.0f} bytes a pixel"


def test_more_variants_take_no_more_memory(tmp_path):
    """Variants are written as they are made: -n 4 holds one at a time, as -n 1 does (holding
    them all would add 3 x 72 MB at this size)."""
    w, h = 4000, 3000
    _scene(tmp_path, w, h)
    one, four = _peak(tmp_path, 1), _peak(tmp_path, 4)
    assert four - one < 60 * 2**20, f"-n 1: {one / 2**20:.0f} MB, -n 4: {four / 2**20:.0f} MB"
