"""`--generator swap`: each variant's background is another image's clean background, of another
class first, from a donor store built in a first pass; generator mixes (`swap+random`).

The sets are built here: class folders whose classes each live on their own background family
(a colour of its own), objects drawn with known masks. Pixels are read back and compared:
objects unchanged, backgrounds from another class's family, the same files whatever the order
or the engine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from backdrop.cli import app
from backdrop.config import GenerateConfig
from backdrop.errors import ConfigError
from backdrop.generate import GENERATORS
from backdrop.generate.mix import parse_mix

ROOT = Path(__file__).resolve().parents[1]
W, H = 96, 72
# one background family per class: its colour, far from the others' and from the objects'
FAMILIES = {"ant": (200, 60, 60), "bee": (60, 180, 70), "cat": (70, 90, 210)}
FAST = ["--segmenter", "classical", "--image-format", "png", "-q"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def class_image(cls: str, i: int) -> Image.Image:
    rng = np.random.default_rng(hash((cls, i)) % 2**32)
    arr = np.array(FAMILIES[cls], float) + rng.normal(0, 8, (H, W, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    cx, cy, r = 30 + 4 * i % 40, 30 + 3 * i % 20, 12 + i % 5
    ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=(245, 245, 240))
    return img


def make_folders(root: Path, per_class: int = 5) -> Path:
    for cls in FAMILIES:
        d = root / "train" / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            class_image(cls, i).save(d / f"{cls}_{i}.png")
    (root / "val" / "ant").mkdir(parents=True)
    class_image("ant", 99).save(root / "val" / "ant" / "ant_99.png")
    return root


def family_of(rgb: np.ndarray, fg: np.ndarray) -> str:
    """The family whose colour the background's real pixels are nearest to."""
    mean = rgb[~fg].reshape(-1, 3).mean(0)
    return min(FAMILIES, key=lambda c: np.linalg.norm(mean - np.array(FAMILIES[c])))


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def files_of(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))
            if ".backdrop" not in p.parts}


def pixels_of(out: Path) -> dict[str, bytes]:
    """Each written image's decoded pixels (the files' metadata names the source path and the time)."""
    return {p.relative_to(out).as_posix(): np.asarray(Image.open(p).convert("RGB")).tobytes()
            for p in sorted(out.rglob("*.png")) if ".backdrop" not in p.parts}


def test_class_folders_get_other_classes_backgrounds_and_rerun_is_a_no_op(tmp_path):
    src = make_folders(tmp_path / "set")
    out = tmp_path / "out"
    r = invoke("augment", src, "-o", out, "-n", 2, "--generator", "swap", "--seed", 3, *FAST)
    assert r.exit_code == 0, r.output
    rows = [m for m in manifest(out) if m.get("split") == "train" and not m.get("copied")]
    assert len(rows) == 15 * 2  # every training image: 2 variants
    other = 0
    for m in rows:
        src_img = np.asarray(Image.open(src / m["source"]).convert("RGB"))
        new = np.asarray(Image.open(out / m["image"]).convert("RGB"))
        fg = (src_img.astype(int).sum(2) > 700)  # the white object
        assert np.array_equal(src_img[fg], new[fg])  # objects pixel-identical
        assert m["label_check"]["foreground_unchanged"]
        own = Path(m["source"]).parent.name
        fam = family_of(new, fg)
        other += fam != own
        assert m["background"] != m["source"]  # never the image itself
        assert Path(m["background"]).parent.name == fam  # the manifest names the donor truly
        assert m["background_other_class"] is True
    assert other / len(rows) >= 0.8
    # no donor is used twice by one class while unused ones of other classes remain (10 per class, 10 picks)
    for cls in FAMILIES:
        picks = [m["background"] for m in rows if Path(m["source"]).parent.name == cls]
        assert len(set(picks)) == len(picks)
    # val was copied, never a donor
    assert not any(m.get("background", "").startswith("val/") for m in rows)
    before = files_of(out)
    mtimes = {p: (out / p).stat().st_mtime_ns for p in before}
    store = {p: p.stat().st_mtime_ns for p in (out / ".backdrop" / "donors").rglob("*") if p.is_file()}
    r = invoke("augment", src, "-o", out, "-n", 2, "--generator", "swap", "--seed", 3, *FAST)
    assert r.exit_code == 0, r.output
    after = files_of(out)
    assert after == before and {p: (out / p).stat().st_mtime_ns for p in after} == mtimes
    # the donor store too: nothing made again, the index not rewritten
    assert {p: p.stat().st_mtime_ns for p in (out / ".backdrop" / "donors").rglob("*") if p.is_file()} == store


def test_same_files_in_another_order_and_on_ray(tmp_path):
    """Determinism: the same set listed in another order (other names on disk, same relative
    paths: a copy made in reverse) and augmented by the Ray engine gives byte-identical files."""
    src = make_folders(tmp_path / "set", per_class=3)
    rev = tmp_path / "rev"
    for p in sorted((src).rglob("*.png"), reverse=True):  # created in reverse: another directory order
        d = rev / p.relative_to(src)
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, d)
    a, b = tmp_path / "a", tmp_path / "b"
    for s, o in ((src, a), (rev, b)):
        r = invoke("augment", s, "-o", o, "-n", 2, "--generator", "swap+random", "--seed", 11, *FAST)
        assert r.exit_code == 0, r.output
    assert pixels_of(a) == pixels_of(b)
    assert [{k: v for k, v in m.items() if k != "sha256"} for m in manifest(a)] == \
        [{k: v for k, v in m.items() if k != "sha256"} for m in manifest(b)]
    # the items run in reverse order through the engine's own worker: the same pixels
    from backdrop.config import PipelineConfig, SegmentConfig
    from backdrop.engine.work import Job, start

    cfg = PipelineConfig(variants=2, seed=11, segment=SegmentConfig(backend="classical"),
                         generate=GenerateConfig(backend="swap+random"))
    d = tmp_path / "d"
    plan, worker = start(Job(config=cfg, out=str(d), kind="dataset", inputs=(str(src),), image_format="png"))
    try:
        for task in reversed(list(plan.tasks())):
            assert worker(task).status in ("done", "copied")
        plan.job.finalize(plan.out, plan.dataset)
    finally:
        plan.close()
    assert pixels_of(d) == pixels_of(a)
    picks = [m.get("generator") for m in manifest(a) if not m.get("copied")]
    assert set(picks) == {"swap", "random"}  # a mix records its pick per image
    pytest.importorskip("ray")
    c = tmp_path / "c"
    r = invoke("augment", src, "-o", c, "-n", 2, "--generator", "swap+random", "--seed", 11, "--engine", "ray",
               "--concurrency", 1, *FAST)
    assert r.exit_code == 0, r.output
    assert pixels_of(c) == pixels_of(a)


def test_set_without_classes_falls_back_to_any_other_image_said_once(tmp_path, caplog):
    src = tmp_path / "plain"
    src.mkdir()
    for i in range(4):
        class_image(list(FAMILIES)[i % 3], i).save(src / f"img_{i}.png")
    out = tmp_path / "out"
    r = invoke("augment", src, "-o", out, "-n", 3, "--generator", "swap", "--seed", 1,
               "--segmenter", "classical", "--image-format", "png")
    assert r.exit_code == 0, r.output
    assert r.output.count("backgrounds come from any other image") == 1
    rows = [m for m in manifest(out) if not m.get("copied")]
    assert len(rows) == 12 and all(m["background"] != m["source"] for m in rows)
    # 3 variants, 3 other images: each image gets all three of them
    for i in range(4):
        picks = {m["background"] for m in rows if m["source"] == f"img_{i}.png"}
        assert picks == {f"img_{j}.png" for j in range(4) if j != i}


def test_a_set_of_one_falls_back_to_random_in_one_line(tmp_path):
    src = tmp_path / "one"
    src.mkdir()
    class_image("ant", 0).save(src / "a.png")
    r = invoke("augment", src, "-o", tmp_path / "out", "--generator", "swap", "-n", 2, "--segmenter", "classical")
    assert r.exit_code == 0, r.output
    assert r.output.count("swapping needs 2") == 1 and "Traceback" not in r.output
    rows = manifest(tmp_path / "out")
    assert len(rows) == 2 and {m["generator"] for m in rows} == {"random"}


def test_swap_outside_a_set_says_how_to_use_it():
    from backdrop.types import GenerateRequest, Prompt

    gen = GENERATORS.create("swap", GenerateConfig(backend="swap"))
    img = class_image("ant", 0)
    with pytest.raises(ConfigError, match="other images of a set"):
        gen(GenerateRequest(img, img.convert("L"), img, img.convert("L"), Prompt(""), seed=1))


def test_mix_names_parse_and_bad_ones_are_one_line():
    assert parse_mix("swap+random") == (("swap", 0.5), ("random", 0.5))
    assert parse_mix("swap:3,random:1") == (("swap", 0.75), ("random", 0.25))
    for bad in ("swap+swap", "swap:-1,random:1", "swap:x,random", "+random"):
        with pytest.raises(ConfigError):
            parse_mix(bad)
    cls = GENERATORS.load("swap+random")
    assert cls.needs_set and not cls.uses_prompt
    gen = GENERATORS.create("swap:0.7,random:0.3", GenerateConfig(backend="swap:0.7,random:0.3"))
    picks = [gen.choose(s) for s in range(2000)]
    assert 0.65 < picks.count(0) / 2000 < 0.75  # shares hold
    assert picks == [gen.choose(s) for s in range(2000)]  # and depend on the seed only


def test_killed_first_pass_resumes(tmp_path):
    """kill -9 during the first pass: the rerun makes only the missing clean backgrounds and the
    same files as an uninterrupted run."""
    src = make_folders(tmp_path / "set", per_class=12)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "BACKDROP_THREADS": "1"}
    cmd = [sys.executable, "-m", "backdrop.cli", "augment", str(src), "-o", str(out), "-n", "1", "--generator",
           "swap", "--seed", "5", *FAST]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = out / ".backdrop" / "donors"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(store.rglob("bg/*/*.png"))) < 5:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    made = {p.name: p.stat().st_mtime_ns for p in store.rglob("bg/*/*.png")}
    assert 5 <= len(made) < 36
    for p in store.rglob("bg/*/*.png"):  # whole files only
        Image.open(p).load()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in store.rglob("bg/*/*.png") if p.name in made} == made
    ref = tmp_path / "ref"
    r = invoke("augment", src, "-o", ref, "-n", 1, "--generator", "swap", "--seed", 5, *FAST)
    assert r.exit_code == 0, r.output
    assert pixels_of(ref) == pixels_of(out)


def test_backends_lists_swap():
    r = invoke("backends")
    assert r.exit_code == 0
    line = next(line for line in r.output.splitlines() if " swap " in line)
    assert "yes" in line and "another image of the set" in line


def test_python_api_runs_swap(tmp_path):
    import backdrop
    from backdrop.config import PipelineConfig, SegmentConfig

    src = make_folders(tmp_path / "set", per_class=2)
    cfg = PipelineConfig(variants=1, seed=2, segment=SegmentConfig(backend="classical"),
                         generate=GenerateConfig(backend="swap"))
    summary = backdrop.augment(src, tmp_path / "out", config=cfg, image_format="png")
    assert summary.images == 6 and not summary.failed
    rows = [m for m in manifest(tmp_path / "out") if not m.get("copied")]
    assert all(m["background_other_class"] for m in rows)
