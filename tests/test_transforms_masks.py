"""`backdrop masks SRC`: the mask store filled once, found by the transform from pixels and boxes."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from backdrop.cli import app
from backdrop.datasets import open_dataset
from backdrop.maskstore import MaskStore
from backdrop.transforms import ReplaceBackground

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "datasets"


@pytest.fixture(autouse=True)
def _restore_backdrop_logger():
    logger = logging.getLogger("backdrop")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def invoke(*args):
    return CliRunner().invoke(app, ["masks", *map(str, args)])


def yolo_boxes(label_file: Path, w: int, h: int) -> np.ndarray:
    """Pixel xyxy from YOLO lines, the way a training loop computes them (not backdrop's reader)."""
    rows = [list(map(float, line.split()[1:5])) for line in label_file.read_text().splitlines() if line.strip()]
    out = [[(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h] for cx, cy, bw, bh in rows]
    return np.array(out, np.float32).reshape(-1, 4)


@pytest.fixture
def yolo(tmp_path):
    dst = tmp_path / "yolo"
    shutil.copytree(EXAMPLES / "yolo-cells", dst)
    return dst


def test_yolo_masks_then_transform_needs_no_segmenter(yolo, tmp_path, monkeypatch):
    store = tmp_path / "store"
    result = invoke(yolo, "--store", store, "--segmenter", "classical")
    assert result.exit_code == 0, result.output
    assert "8 segmented" in result.output and "0 failed" in result.output
    # the segmenter is now unavailable: a miss would have to call it, and fail
    from backdrop.segment import SEGMENTERS

    def unavailable(*a, **k):
        raise AssertionError("the segmenter was called")

    monkeypatch.setattr(SEGMENTERS, "create", unavailable)
    t = ReplaceBackground(masks=store, on_miss="segment", segment="classical", seed=0)
    for img_path in sorted((yolo / "images" / "train").glob("*.jpg")):
        img = np.asarray(Image.open(img_path).convert("RGB"))  # a loader's own decode
        h, w = img.shape[:2]
        boxes = yolo_boxes(yolo / "labels" / "train" / f"{img_path.stem}.txt", w, h)
        out = t(image=img, bboxes=boxes)
        fg = MaskStore(store).get(img, boxes, t.store_settings("segment"))
        assert fg is not None and fg.any()
        assert np.array_equal(out["image"][fg], img[fg]) and not np.array_equal(out["image"], img)
        assert out["bboxes"] is boxes
    assert t.stats["stored"] == 8 and t.stats["segmented"] == 0
    # the mask is augment's: the segmenter's inside the grown boxes, every box covered
    record = MaskStore(store).record(img, boxes, t.store_settings("segment"))
    assert record["made_by"] == "backdrop masks" and record["source"].startswith("images/train/")


def test_rerun_resumes_and_other_settings_are_other_masks(yolo, tmp_path):
    store = tmp_path / "store"
    assert invoke(yolo, "--store", store, "--segmenter", "classical").exit_code == 0
    files = {p: p.stat().st_mtime_ns for p in store.rglob("*.png")}
    again = invoke(yolo, "--store", store, "--segmenter", "classical")
    assert again.exit_code == 0 and "8 already stored" in again.output
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*.png")} == files  # nothing rewritten
    # another box_grow is another rule: made anew, beside the first
    other = invoke(yolo, "--store", store, "--segmenter", "classical", "--box-grow", "0.2", "--splits", "all")
    assert other.exit_code == 0 and "10 segmented" in other.output
    assert len(list(store.rglob("*.png"))) == 18


def test_polygon_labels_are_the_masks(tmp_path):
    src = tmp_path / "coco"
    shutil.copytree(EXAMPLES / "coco-cells", src)
    store = tmp_path / "store"
    result = invoke(src, "--store", store, "--segmenter", "classical")
    assert result.exit_code == 0, result.output
    assert "0 segmented" in result.output and "from labels" in result.output
    t = ReplaceBackground(masks=store, on_miss="error", seed=1)
    ds = open_dataset(src)
    n = 0
    for item in ds.items(["train"]):
        img = np.asarray(Image.open(item.path).convert("RGB"))
        h, w = img.shape[:2]
        fg = item.labels.foreground((w, h))
        out = t(image=img, bboxes=np.array(item.labels.boxes()))
        assert np.array_equal(out["image"][fg], img[fg]) and (out["image"][~fg] != img[~fg]).any()
        n += 1
    assert n and t.stats["stored"] == n


def test_kill_9_mid_run_leaves_no_partial_mask_and_rerun_completes(yolo, tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "backdrop.cli", "masks", str(yolo), "--store", str(store), "--segmenter",
           "classical", "--splits", "all", "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not any(store.rglob("*.png")):
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for p in store.rglob("*.png"):  # whatever is there is whole
        with Image.open(p) as im:
            im.load()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(store.rglob("*.png"))) == 10
    assert "0 failed" in rerun.stderr


def test_bad_input_one_line_and_a_broken_image_is_reported_not_fatal(yolo, tmp_path):
    result = invoke(tmp_path / "nope")
    assert result.exit_code != 0 and "error:" in result.output and "Traceback" not in result.output
    bad = yolo / "images" / "train" / "cells_000.jpg"
    bad.write_bytes(b"not a jpeg")
    store = tmp_path / "store"
    result = invoke(yolo, "--store", store, "--segmenter", "classical")
    assert result.exit_code == 1
    assert "cells_000.jpg" in result.output and "7 segmented" in result.output and "1 failed" in result.output
    assert "Traceback" not in result.output
    result = invoke(yolo, "--store", store, "--segmenter", "nope")
    assert result.exit_code != 0 and "choose one of" in result.output


def test_full_disk_is_one_error_line(yolo, tmp_path, monkeypatch):
    from backdrop import outputs

    def full(path, data):
        raise outputs.io_error(OSError(28, "No space left on device"), path)

    monkeypatch.setattr(outputs, "write_new", full)
    result = invoke(yolo, "--store", tmp_path / "store", "--segmenter", "classical")
    assert result.exit_code != 0 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "the disk is full" in errors[0], result.output
    assert not any((tmp_path / "store").rglob("*.png"))


def test_two_concurrent_runs_share_the_store(yolo, tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "backdrop.cli", "masks", str(yolo), "--store", str(store), "--segmenter",
           "classical", "--splits", "all", "-q"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    pngs = list(store.rglob("*.png"))
    assert len(pngs) == 10
    for p in pngs:
        with Image.open(p) as im:
            im.load()
    assert not [p for p in store.rglob("*") if p.is_file() and p.suffix != ".png"]  # no temporary left


def test_stored_masks_are_the_masks_augment_uses(yolo, tmp_path):
    """One rule: `backdrop masks` stores, pixel for pixel, the mask `augment` composites with
    (box-prompted, box fallbacks included), read back from augment's --save-masks side files."""
    store = tmp_path / "store"
    assert invoke(yolo, "--store", store, "--segmenter", "classical").exit_code == 0
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["augment", str(yolo), "--out", str(out), "--segmenter", "classical", "-n", "1",
                                      "--save-masks", "--mask-cache", "off", "-q"])
    assert result.exit_code == 0, result.output
    t = ReplaceBackground(masks=store, segment="classical")
    n = 0
    for item in open_dataset(yolo).items(["train"]):
        img = np.asarray(Image.open(item.path).convert("RGB"))
        stored = MaskStore(store).get(img, item.labels.boxes(), t.store_settings("segment"))
        side = np.asarray(Image.open(out / ".backdrop" / "side" / "mask" / f"{item.rel}.png").convert("L")) > 127
        assert stored is not None and np.array_equal(stored, side), item.rel
        n += 1
    assert n == 8
