"""Box-prompted masks (segment.boxes): objects pasted on busy textures (histology, foliage, gravel,
brick; scripts/cluttered_scenes.py), their true masks known, several per image and some 60 px tall,
must keep >= 99 % of their pixels; the per-object record is judged against the box; the mask cache
gives back the first run's warnings and record."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from backdrop.cli import app
from backdrop.config import SegmentConfig
from backdrop.engine.work import label_check
from backdrop.segment import SEGMENTERS
from backdrop.segment.boxes import METHOD, box_masks
from backdrop.segment.itemmask import MaskCache, item_mask

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import cluttered_scenes as cs  # noqa: E402


def _classical():
    return SEGMENTERS.create("classical", SegmentConfig(backend="classical"))


def _kept(mask: Image.Image, truth: np.ndarray) -> float:
    return float((np.asarray(mask)[truth] > 0).mean())


@pytest.mark.parametrize("kind,seed", [("histology", 0), ("brick", 3), ("gravel", 6)])
def test_every_object_on_a_busy_texture_is_kept_whole(kind, seed):
    img, placed = cs.scene(kind, seed=seed)
    assert len(placed) >= 3 and min(b[3] - b[1] for _, b, _ in placed) <= 62  # several, one small
    result = box_masks(img, [b for _, b, _ in placed], _classical())
    for (name, box, truth), rec in zip(placed, result.objects):
        assert _kept(result.mask, truth) >= 0.99, (kind, name, box, rec)
    assert result.fallbacks == []  # every object was found: no whole-box rectangles of old background


def test_whole_frame_would_have_cut_them():
    """The reason for box prompts, kept true: the whole-frame mask loses objects on the same scene."""
    img, placed = cs.scene("histology", seed=0)
    whole = np.asarray(_classical()(img)) > 0
    assert min(float(whole[t].mean()) for _, _, t in placed) < 0.99


def test_masks_repeat_exactly():
    img, placed = cs.scene("foliage", seed=1)
    boxes = [b for _, b, _ in placed]
    a, b = box_masks(img, boxes, _classical()), box_masks(img, boxes, _classical())
    assert np.array_equal(np.asarray(a.mask), np.asarray(b.mask)) and a.objects == b.objects


class _HalfSegmenter:
    """Finds only the top half of whatever the classical segmenter finds (a model that misses a
    white dress): stands in for a weak model, outside the code under test."""

    name = "half"

    def __call__(self, image):
        m = np.asarray(_classical()(image)).copy()
        m[m.shape[0] // 2:] = 0
        return Image.fromarray(m)


def _disk_scene():
    rng = np.random.default_rng(0)
    img = Image.fromarray((np.array([60, 140, 60]) + rng.normal(0, 10, (200, 260, 3))).clip(0, 255).astype(np.uint8))
    ImageDraw.Draw(img).ellipse((80, 50, 180, 150), fill=(200, 60, 60))
    truth = Image.new("L", img.size, 0)
    ImageDraw.Draw(truth).ellipse((80, 50, 180, 150), fill=255)
    return img, (80, 50, 181, 151), np.asarray(truth) > 0


def test_a_mask_that_stops_short_of_its_box_is_flagged_and_not_claimed_unchanged():
    img, box, truth = _disk_scene()
    result = box_masks(img, [box], _HalfSegmenter(), grabcut=False)
    rec = result.objects[0]
    assert _kept(result.mask, truth) < 0.7  # the object really is cut
    assert rec["doubtful"] and rec["sides"] < 4 and rec["confidence"] < 0.8
    assert any("may not be whole" in w for w in result.warnings)
    # the label check compares kept pixels only, so it must not call the object unchanged
    from backdrop.datasets.labels import Labels, Obj

    labels = Labels(objects=(Obj(category=0, box=box),))
    src = np.asarray(img)
    check = label_check(labels, src, src.copy(), result.mask, objects=result.objects)
    obj = check["per_object"][0]
    assert obj["kept_unchanged"] is True and obj["unchanged"] is None and obj["whole"] == "doubtful"
    assert check["unchanged"] == 0 and check["not_known_whole"] == [0]
    # GrabCut from the box prompt recovers the rest, and then the record says so
    fixed = box_masks(img, [box], _HalfSegmenter())
    assert _kept(fixed.mask, truth) >= 0.99 and fixed.objects[0]["sides"] == 4


def test_nothing_in_the_box_falls_back_to_the_whole_box():
    rng = np.random.default_rng(1)
    img = Image.fromarray((np.array([120, 120, 160]) + rng.normal(0, 6, (120, 160, 3))).clip(0, 255).astype(np.uint8))
    result = box_masks(img, [(20, 30, 60, 80)], _classical())
    assert result.fallbacks == [0] and result.objects[0]["fallback"]
    assert (np.asarray(result.mask)[30:80, 20:60] == 255).all()
    assert any("whole box kept" in w for w in result.warnings)
    thin = box_masks(img, [(100, 10, 101, 60)], _classical())  # a 1-px wide box: nothing to segment, kept
    assert thin.fallbacks == [0] and (np.asarray(thin.mask)[10:60, 100] == 255).all()


def test_a_crop_is_not_judged_as_a_whole_image():
    """A box's crop is the box and a margin: its object touches the crop's border by design. The
    classical segmenter's whole-image warnings (border touched, ...) are not said for crops; the
    object is judged against its box instead."""
    from backdrop import runlog

    rng = np.random.default_rng(2)
    img = Image.fromarray((np.array([60, 140, 60]) + rng.normal(0, 10, (200, 260, 3))).clip(0, 255).astype(np.uint8))
    ImageDraw.Draw(img).rectangle((0, 50, 99, 149), fill=(200, 60, 60))  # at the image's left edge
    box = (0, 50, 100, 150)
    crop = img.crop((0, 25, 125, 175))  # the box and its 25 % margin, cut by the image's edge
    with runlog.collecting() as whole:
        _classical()(crop)
    assert any("touches the image border" in w for w in whole["warnings"])  # what the crop alone says
    with runlog.collecting() as rec:
        result = box_masks(img, [box], _classical())
    assert not [w for w in rec["warnings"] if w.startswith("classical segmenter")], rec["warnings"]
    assert (np.asarray(result.mask)[50:150, 0:100] == 255).all() and result.objects[0]["sides"] == 4


def _models_dir() -> Path | None:
    env = os.environ.get("BACKDROP_TEST_MODELS")
    if not env:
        return None
    for d in (Path(env), Path(env) / "models"):
        if (d / "isnet-medium.onnx").is_file():
            return d
    return None


@pytest.mark.skipif(_models_dir() is None, reason="real ISNet: set BACKDROP_TEST_MODELS to a folder with isnet-medium.onnx")
@pytest.mark.parametrize("kind,seed", [("histology", 0), ("brick", 3)])
def test_real_isnet_keeps_every_object(kind, seed):
    seg = SEGMENTERS.create("rembg", SegmentConfig(backend="rembg", device="cpu",
                                                   model=str(_models_dir() / "isnet-medium.onnx")))
    img, placed = cs.scene(kind, seed=seed)
    result = box_masks(img, [b for _, b, _ in placed], seg)
    for (name, box, truth), rec in zip(placed, result.objects):
        assert _kept(result.mask, truth) >= 0.99, (kind, name, rec)
    assert result.fallbacks == []


# -- the cache keeps what the segmenter said -----------------------------------------------------------


def _border_scene(path: Path) -> Path:
    """A micrograph whose cell runs off the image's edge: the classical segmenter warns about it."""
    rng = np.random.default_rng(3)
    img = Image.fromarray((np.array([225, 200, 215]) + rng.normal(0, 5, (120, 160, 3))).clip(0, 255).astype(np.uint8))
    ImageDraw.Draw(img).ellipse((100, 30, 200, 100), fill=(120, 70, 160))
    img.save(path)
    return path


def test_a_doubtful_mask_keeps_its_warnings_when_cached(tmp_path):
    src = _border_scene(tmp_path / "cell.png")
    cache = tmp_path / "masks"
    runs = []
    for k in (1, 2):
        out = tmp_path / f"out{k}"
        res = CliRunner().invoke(app, ["run", str(src), "-o", str(out), "--segmenter", "classical", "--generator",
                                       "texture", "-n", "1", "--seed", "1", "--mask-cache", str(cache), "-q"])
        assert res.exit_code == 0, res.output
        runs.append(json.loads((out / "cell" / "run.json").read_text()))
    cold, warm = runs
    assert "mask_cache" not in cold["notes"] and warm["notes"]["mask_cache"] == "hit"
    seg_warnings = [w for w in cold["warnings"] if "border" in w]
    assert seg_warnings, cold["warnings"]  # the doubt is there the first time ...
    assert warm["warnings"] == cold["warnings"]  # ... and, word for word, the second
    assert (tmp_path / "out1/cell/mask.png").read_bytes() != b""
    m1 = np.asarray(Image.open(tmp_path / "out1/cell/mask.png"))
    m2 = np.asarray(Image.open(tmp_path / "out2/cell/mask.png"))
    assert np.array_equal(m1, m2)


def test_box_records_come_back_from_the_cache(tmp_path):
    img, box, truth = _disk_scene()
    path = tmp_path / "disk.png"
    img.save(path)
    cache = MaskCache(tmp_path / "cache")
    cfg = SegmentConfig(backend="classical")
    cold = item_mask(_HalfSegmenter(), cfg, img, path, boxes=[box], cache=cache)
    warm = item_mask(_HalfSegmenter(), cfg, img, path, boxes=[box], cache=cache)
    assert not cold.cached and warm.cached
    assert warm.warnings == cold.warnings and warm.objects == cold.objects
    assert np.array_equal(np.asarray(warm.mask), np.asarray(cold.mask))
    # the key holds the segmenter's settings: another input size is another mask
    other = item_mask(_HalfSegmenter(), SegmentConfig(backend="classical", size=512), img, path, boxes=[box], cache=cache)
    assert not other.cached
    # a mask cached without its record (an older backdrop) is not trusted: remade, record and all
    key = cache.key(path, cfg, None, {"method": METHOD, "boxes": [list(map(float, box))], "grow": 0.05})
    p = cache._path(key)
    Image.open(p).convert("L").save(p)  # the same pixels, no text chunk
    again = item_mask(_HalfSegmenter(), cfg, img, path, boxes=[box], cache=cache)
    assert not again.cached and again.objects == cold.objects
