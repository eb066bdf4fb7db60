"""`backdrop preview`: the contact sheet of a data set, read back from the HTML it writes.

Sets are made by the real `augment` CLI (test_augment's builders), the sheet's embedded data is
parsed back and compared with the set on disk: every image named, every label a shape, every
path relative and pointing at a file. One test opens the sheet in headless Chromium and counts
the SVG shapes it draws (screenshot in test-artifacts/).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from test_augment import FAST, invoke, make_coco, make_yolo

from backdrop.cli import app  # noqa: F401  (the CLI under test, through invoke)
from backdrop.preview import build_preview

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


def sheet_data(html: Path) -> dict:
    text = html.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="sheet-data">(.*?)</script>', text, re.S)
    assert m, "no data in the sheet"
    return json.loads(m.group(1))


def set_images(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.suffix.lower() in (".png", ".jpg") and ".backdrop" not in p.parts)


def cards(data: dict) -> list[dict]:
    return [c for r in data["rows"] for c in r["c"]]


@pytest.fixture(scope="module")
def yolo_set(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("yolo")
    src = tmp / "cells"
    make_yolo(src)
    out = tmp / "cells-aug"
    res = invoke("augment", src, "-o", out, "-n", "2", "--seed", "5", *FAST[:-1])
    assert res.exit_code == 0, res.output
    return src, out, res


def test_augment_prints_the_sheet_and_it_names_every_image(yolo_set):
    src, out, res = yolo_set
    sheet = out / "preview.html"
    assert f"contact sheet: {sheet}" in res.output
    data = sheet_data(sheet)
    named = {c["n"] for c in cards(data) if c["k"] != "source"}
    assert named == set(set_images(out))  # every image of the set, nothing else
    # one row per source image: the source first, then its variants in order
    train = [r for r in data["rows"] if r["sp"] == "train"]
    assert sorted(r["s"] for r in train) == [f"images/train/img{i}.png" for i in range(4)]
    for r in train:
        assert [c["k"] for c in r["c"]] == ["source", "variant", "variant"]
        assert [c.get("v") for c in r["c"][1:]] == [1, 2]
        assert all(isinstance(c["seed"], int) and c["gen"] == "texture" for c in r["c"][1:])
        assert all("object_copy" in c["scores"] for c in r["c"][1:])
    val = [r for r in data["rows"] if r["sp"] == "val"]
    assert [[c["k"] for c in r["c"]] for r in val] == [["copy"]]
    assert data["names"] == {"0": "cell", "1": "parasite"}


def test_every_label_is_a_shape_and_every_path_is_relative(yolo_set):
    src, out, _ = yolo_set
    sheet = out / "preview.html"
    data = sheet_data(sheet)
    for c in cards(data):
        if c["k"] == "source":
            label = src / "labels" / Path(c["n"]).relative_to("images").with_suffix(".txt")
        else:
            label = out / "labels" / Path(c["n"]).relative_to("images").with_suffix(".txt")
        lines = [ln for ln in label.read_text().splitlines() if ln.strip()]
        assert len(c.get("l", [])) == len(lines) > 0, c["n"]
        for cls, x0, y0, x1, y1, _polys in c["l"]:
            assert cls in (0, 1) and 0 <= x0 < x1 <= c["w"] and 0 <= y0 < y1 <= c["H"]
        for key in ("t", "h"):
            ref = unquote(c[key])
            assert not ref.startswith(("/", "file:", "http")), ref
            assert (sheet.parent / ref).is_file(), ref
        assert ".backdrop/preview/thumbs/" in c["t"]
        with Image.open(sheet.parent / unquote(c["t"])) as im:
            assert max(im.size) <= 320 and im.size[0] * c["H"] == pytest.approx(im.size[1] * c["w"], rel=0.05)
    assert "/tmp" not in sheet.read_text() and str(out) not in sheet.read_text()


def test_rerun_reuses_thumbnails_and_a_changed_image_gets_a_new_one(yolo_set, tmp_path):
    src, out, _ = yolo_set
    work = tmp_path / "copy"
    shutil.copytree(out, work / "cells-aug")
    shutil.copytree(src, work / "cells")
    moved = work / "cells-aug"
    first = build_preview(moved, source=work / "cells")  # a moved set keeps its thumbnails
    assert first.thumbs_made == 0 and first.thumbs_reused == first.images == 4 * 3 + 1
    # the set's sheet still works where it now lies
    data = sheet_data(moved / "preview.html")
    assert all((moved / unquote(c["t"])).is_file() for c in cards(data))
    victim = moved / "images/train/img0_bd1.png"
    old_thumb = next(c["t"] for c in cards(data) if c["n"] == "images/train/img0_bd1.png")
    Image.new("RGB", (160, 120), (0, 0, 255)).save(victim)
    os.utime(victim, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = build_preview(moved, source=work / "cells")
    assert again.thumbs_made == 1 and again.thumbs_reused == again.images - 1
    new_thumb = next(c["t"] for c in cards(sheet_data(moved / "preview.html")) if c["n"] == "images/train/img0_bd1.png")
    assert new_thumb != old_thumb and not (moved / unquote(old_thumb)).exists()  # the stale one is gone
    with Image.open(moved / unquote(new_thumb)) as im:
        assert im.convert("RGB").getpixel((5, 5))[2] > 200  # the new picture


def test_coco_polygons_are_drawn_as_polygons(tmp_path):
    src = tmp_path / "coco"
    make_coco(src)
    out = tmp_path / "coco-aug"
    res = invoke("augment", src, "-o", out, "-n", "1", "--seed", "1", *FAST)
    assert res.exit_code == 0, res.output
    data = sheet_data(out / "preview.html")
    variants = [c for c in cards(data) if c["k"] == "variant"]
    assert len(variants) == 3
    assert all(c["l"] and all(len(o[5]) >= 1 and len(o[5][0]) >= 6 for o in c["l"]) for c in variants)
    assert {c["n"] for c in cards(data) if c["k"] != "source"} == set(set_images(out))
    assert sum(c["k"] == "source" for c in cards(data)) == 3  # augment names its source: each row leads with it


def test_a_bad_label_is_flagged_not_fatal_and_no_preview_writes_none(tmp_path):
    src = tmp_path / "cells"
    make_yolo(src)
    (src / "labels/train/img2.txt").write_text("0 0.5 0.5 0.2\n")  # four numbers: not a YOLO line
    res = invoke("preview", src)
    assert res.exit_code == 0, res.output
    data = sheet_data(src / "preview.html")
    bad = [c for c in cards(data) if c["n"] == "images/train/img2.png"]
    assert bad and "error" in bad[0]["flags"] and "img2.txt" in bad[0]["err"]
    assert all(c["k"] == "image" for c in cards(data))  # not a set backdrop wrote
    out = tmp_path / "aug"
    (src / "labels/train/img2.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    res = invoke("augment", src, "-o", out, "-n", "1", "--no-preview", *FAST)
    assert res.exit_code == 0, res.output
    assert not (out / "preview.html").exists() and not (out / ".backdrop" / "preview").exists()


def test_bad_input_is_one_line_and_a_users_file_is_never_replaced(tmp_path):
    res = invoke("preview", tmp_path / "nope")
    assert res.exit_code != 0 and res.output.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such folder"]
    empty = tmp_path / "empty"
    empty.mkdir()
    res = invoke("preview", empty)
    assert res.exit_code != 0 and res.output.startswith("error: ") and "Traceback" not in res.output
    src = tmp_path / "cells"
    make_yolo(src)
    mine = src / "preview.html"
    mine.write_text("<p>my own notes</p>")
    res = invoke("preview", src)
    assert res.exit_code != 0 and "not written by backdrop preview" in res.output
    assert mine.read_text() == "<p>my own notes</p>"
    res = invoke("preview", src, "-o", tmp_path / "sheets" / "cells.html", "--splits", "val")
    assert res.exit_code == 0, res.output
    data = sheet_data(tmp_path / "sheets" / "cells.html")
    assert [c["n"] for c in cards(data)] == ["images/val/img4.png"]
    assert all((tmp_path / "sheets" / unquote(c["t"])).is_file() for c in cards(data))
    assert not list(src.rglob("*.bdtmp")) and not list(src.rglob("*.tmp"))
    assert (tmp_path / "sheets" / "cells_files").is_dir()


def test_a_sheet_elsewhere_writes_nothing_into_the_set(tmp_path):
    src = tmp_path / "cells"
    make_yolo(src)
    before = sorted(p.relative_to(src).as_posix() for p in src.rglob("*"))
    res = invoke("preview", src, "-o", tmp_path / "cells.html")
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*")) == before
    data = sheet_data(tmp_path / "cells.html")
    assert all(unquote(c["t"]).startswith("cells_files/") and unquote(c["h"]).startswith("cells/")
               for c in cards(data))


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent")
def test_sheet_in_chromium_draws_a_shape_per_label(yolo_set, tmp_path):
    from playwright.sync_api import sync_playwright

    _, out, _ = yolo_set
    sheet = out / "preview.html"
    data = sheet_data(sheet)
    n_labels = sum(len(c.get("l", [])) for c in cards(data))
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(sheet.as_uri() + "#per=2")
            page.wait_for_selector("body[data-rendered='1']")
            assert page.locator(".row").count() == 2
            assert "page 1 of 3" in page.locator("#pager").inner_text()
            page.goto(sheet.as_uri() + "#per=100")
            page.wait_for_function("document.querySelectorAll('.row').length === 5")
            shapes = page.locator("svg rect, svg polygon").count()
            assert shapes == n_labels
            page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "preview_yolo.png"), full_page=True)
            page.select_option("#split", "val")
            page.wait_for_function("document.querySelectorAll('.row').length === 1")
            assert "split=val" in page.url
            page.go_back()  # the filter lives in the URL: back shows every row again
            page.wait_for_function("document.querySelectorAll('.row').length === 5")
        finally:
            browser.close()
    assert not errors


def test_kill_9_mid_run_then_rerun_finishes_with_whole_thumbnails(tmp_path):
    import signal
    import subprocess
    import sys

    root = tmp_path / "many"
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(240):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(root / "img" / f"{i:03d}.png")
    thumbs = root / ".backdrop" / "preview" / "thumbs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "backdrop.cli", "preview", str(root), "-q"], env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if thumbs.is_dir() and sum(1 for _ in thumbs.rglob("*.jpg")) >= 10:
            break
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    print('killed mid-run:', killed, sum(1 for _ in thumbs.rglob('*.jpg')), 'thumbnails made')
    if killed:  # the sheet is written last: a killed run leaves none, never half of one
        assert not (root / "preview.html").exists()
    sheet = build_preview(root)
    assert sheet.images == 240 and sheet.thumbs_made + sheet.thumbs_reused == 240
    for f in thumbs.rglob("*.jpg"):  # every thumbnail whole: it decodes
        with Image.open(f) as im:
            im.load()
    assert {c["n"] for c in cards(sheet_data(root / "preview.html"))} == {f"img/{i:03d}.png" for i in range(240)}
    # the killed run's temporary file (if it was mid-write) went at the rerun's start
    assert not [p for p in root.rglob("*") if p.is_file() and p.name.endswith((".tmp", ".bdtmp", ".part"))]


def test_inline_page_needs_no_files(yolo_set):
    from backdrop.preview import inline_page

    _, out, _ = yolo_set
    html, pages = inline_page(out / "preview.html", page=2, per_page=2)
    assert pages == 3
    m = re.search(r'<script type="application/json" id="sheet-data">(.*?)</script>', html, re.S)
    data = json.loads(m.group(1))
    assert [r["s"] for r in data["rows"]] == ["images/train/img2.png", "images/train/img3.png"]
    for c in cards(data):
        assert c["t"].startswith("data:image/jpeg;base64,") and "h" not in c
    assert ".backdrop" not in html


@pytest.fixture
def small_fs(tmp_path):
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_or_read_only_disk_is_one_line_and_no_sheet(tmp_path, small_fs):
    import subprocess

    src = tmp_path / "cells"
    make_yolo(src)
    res = invoke("preview", src, "-o", small_fs / "cells.html")
    assert res.exit_code == 7, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write ") and lines[0].endswith("the disk is full")
    assert str(small_fs) in lines[0] and "Traceback" not in res.output
    assert not (small_fs / "cells.html").exists()
    assert not [p for p in small_fs.rglob("*") if p.is_file() and not p.name.endswith(".jpg")]  # no temp files
    subprocess.run(["rm", "-rf", str(small_fs / "cells_files")], check=True)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    res = invoke("preview", src, "-o", small_fs / "cells.html")
    assert res.exit_code == 7 and "read-only" in res.output and len(res.output.strip().splitlines()) == 1


def test_dead_writers_temps_go_live_ones_stay(tmp_path):
    import subprocess
    import sys

    from backdrop.outputs import remove_dead_temps, write_new

    tmp = tmp_path / ".partial"
    tmp.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp / f"{int(dead.stdout)}.abc.part").write_bytes(b"half")  # a writer that is gone
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp / f"{live.pid}.def.part").write_bytes(b"being written")
        (tmp / "notes.txt").write_text("not a temp file")
        assert remove_dead_temps(tmp) == 1
        assert sorted(p.name for p in tmp.iterdir()) == sorted([f"{live.pid}.def.part", "notes.txt"])
    finally:
        live.kill()
        live.wait()
    assert write_new(tmp_path / "a.bin", b"x", tmp_dir=tmp) and not write_new(tmp_path / "a.bin", b"y", tmp_dir=tmp)
    assert (tmp_path / "a.bin").read_bytes() == b"x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".a.bin")]  # no temp beside the target


def test_mask_pairs_are_drawn_as_their_masks_outlines(tmp_path, monkeypatch):
    from PIL import ImageDraw

    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(2):
        Image.new("RGB", (200, 150), (200, 180, 160)).save(root / "images" / f"c{i}.png")
        m = Image.new("L", (200, 150), 0)
        ImageDraw.Draw(m).rectangle((40 + 10 * i, 30, 120, 100), fill=255)
        ImageDraw.Draw(m).ellipse((150, 100, 190, 140), fill=255)
        m.save(root / "masks" / f"c{i}.png")
    first = build_preview(root)
    data = sheet_data(root / "preview.html")
    for c in cards(data):
        (shape,) = c["l"]  # one label: the mask
        cls, x0, y0, x1, y1, polys = shape
        assert cls == -1 and len(polys) == 2  # the two blobs
        i = int(c["n"][-5])
        assert (x0, y0, x1, y1) == pytest.approx((40 + 10 * i, 30, 190, 140), abs=2)
    assert len(list((root / ".backdrop/preview/thumbs").rglob("*.outline.json"))) == 2

    def traced(*a, **k):
        raise AssertionError("a cached outline was traced again")

    monkeypatch.setattr("backdrop.preview.thumbs.mask_outline", traced)
    again = build_preview(root)  # outlines come from the cache the second time
    assert again.thumbs_made == 0 and sheet_data(root / "preview.html") == data and first.labels == 2
