"""Time each background check (backdrop.checks) per generated background, at 640x480.

    python benchmarks/bench_checks.py [--n 10]

Backgrounds are the `random` generator's (all styles); the input is a synthetic micrograph-like
image with an elliptical object. The salient-object check is timed with the classical segmenter
and, when the model store holds it, with rembg + ISNet-medium. Prints a table; never asserts.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
from PIL import Image

from backdrop import models
from backdrop.checks import BackgroundChecker
from backdrop.config import ChecksConfig
from backdrop.generate.random import render


def scene(width=640, height=480):
    rng = np.random.default_rng(0)
    old = np.clip(np.array([225, 185, 215]) + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 6, height // 5), 15, 0, 360, 255, -1)
    img = old.copy()
    obj = np.clip(np.array([120, 60, 160]) + rng.normal(0, 20, old.shape), 0, 255).astype(np.uint8)
    img[mask == 255] = obj[mask == 255]
    known = np.where(cv2.dilate(mask, np.ones((15, 15), np.uint8)) == 0, 255, 0).astype(np.uint8)
    return [Image.fromarray(a) for a in (img, mask, old, known)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10, help="backgrounds per check")
    args = parser.parse_args()
    img, mask, old, known = scene()
    backgrounds = [Image.fromarray(render(640, 480, s, ("any", "microscopy", "studio", "outdoor")[s % 4]))
                   for s in range(args.n)]
    setups = {"default (object_copy, too_close, near_duplicate)": ChecksConfig(),
              "salient_object, classical": ChecksConfig(salient_object=True, object_copy=False, too_close=False,
                                                        near_duplicate=False)}
    if models.find("isnet-medium") is not None:
        setups["salient_object, rembg isnet-medium"] = ChecksConfig(
            salient_object=True, segmenter="rembg", object_copy=False, too_close=False, near_duplicate=False)
    print("| checks | check | median ms per background | fired on clean random backgrounds |")
    print("|---|---|---|---|")
    for label, cfg in setups.items():
        checker = BackgroundChecker(cfg)
        checker.check(img, mask, old, known, backgrounds[0], [])  # warm-up: the segmenter loads once
        seconds: dict[str, list[float]] = {}
        fired: dict[str, int] = {}
        for i, bg in enumerate(backgrounds):
            res = checker.check(img, mask, old, known, bg, backgrounds[max(0, i - 4):i])
            for name, s in res.seconds.items():
                seconds.setdefault(name, []).append(s)
                fired[name] = fired.get(name, 0) + (name in res.failed)
        for name, values in seconds.items():
            print(f"| {label} | {name} | {1000 * statistics.median(values):.1f} | {fired[name]}/{len(values)} |")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.1f} s in all)")
