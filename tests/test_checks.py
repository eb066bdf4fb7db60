"""Background checks: a pasted copy of the object, the old background again, a repeated variant."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from backdrop.checks import BackgroundChecker, CheckResult, colour_similarity, duplicate_score
from backdrop.config import ChecksConfig, PipelineConfig
from backdrop.errors import ConfigError, InputError
from backdrop.generate.random import render

W, H = 320, 240
OLD = np.array([225, 120, 160])  # a pink old background


def _scene(plain: bool = False):
    """A textured (or plain) purple object on a grainy pink background, with its mask and known."""
    rng = np.random.default_rng(0)
    old = np.clip(OLD + rng.normal(0, 10, (H, W, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (160, 120), (45, 30), 20, 0, 360, 255, -1)
    obj = np.clip(np.array([90, 40, 140]) + rng.normal(0, 30, (H, W, 3)), 0, 255).astype(np.uint8)
    obj = cv2.GaussianBlur(obj, (0, 0), 1.5)
    if plain:
        obj[:] = (90, 40, 140)
    img = old.copy()
    img[mask == 255] = obj[mask == 255]
    known = np.where(cv2.dilate(mask, np.ones((11, 11), np.uint8)) == 0, 255, 0).astype(np.uint8)
    return img, mask, old, known


def _paste_copy(background: np.ndarray, img: np.ndarray, mask: np.ndarray, at=(20, 200), scale=1.0) -> np.ndarray:
    """What SD sometimes paints: a second copy of the kept object elsewhere in the background."""
    ys, xs = np.nonzero(mask)
    crop = img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    cm = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if scale != 1.0:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        cm = cv2.resize(cm, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    out = background.copy()
    y, x = at
    region = out[y : y + crop.shape[0], x : x + crop.shape[1]]
    region[cm == 255] = crop[cm == 255]
    return out


def _check(checker, scene, new, earlier=()):
    img, mask, old, known = scene
    return checker.check(Image.fromarray(img), Image.fromarray(mask), Image.fromarray(old), Image.fromarray(known),
                         Image.fromarray(new), [Image.fromarray(e) for e in earlier])


@pytest.mark.parametrize("plain", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.8])
def test_duplicate_object_painted_into_the_background_fires(plain, scale):
    scene = _scene(plain)
    checker = BackgroundChecker(ChecksConfig())
    clean = render(W, H, 3, "any")
    assert _check(checker, scene, clean).passed
    painted = _paste_copy(clean, scene[0], scene[1], scale=scale)
    res = _check(checker, scene, painted)
    assert not res.passed and "object_copy" in res.failed
    assert res.scores["object_copy"] >= ChecksConfig().copy_threshold


@pytest.mark.parametrize("style", ["any", "microscopy", "studio", "outdoor"])
def test_clean_random_backgrounds_pass(style):
    scene = _scene()
    checker = BackgroundChecker(ChecksConfig())
    earlier: list[np.ndarray] = []
    for seed in range(6):
        bg = render(W, H, seed, style)
        res = _check(checker, scene, bg, earlier)
        assert res.passed, (style, seed, res.scores)
        earlier.append(bg)


def test_background_equal_to_the_old_one_is_too_close():
    scene = _scene()
    img, mask, old, known = scene
    res = _check(BackgroundChecker(ChecksConfig()), scene, old)
    assert res.failed == ["too_close"] and res.scores["too_close"] > 0.95
    # the same colours rearranged are still the class cue; another colour is not
    shuffled = np.random.default_rng(1).permutation(old.reshape(-1, 3)).reshape(old.shape)
    assert colour_similarity(old, known == 255, shuffled) > 0.9
    blue = np.clip(np.array([40, 60, 200]) + np.random.default_rng(2).normal(0, 10, old.shape), 0, 255).astype(np.uint8)
    assert colour_similarity(old, known == 255, blue) < 0.2


def test_two_identical_variants_fail_the_duplicate_check():
    scene = _scene()
    checker = BackgroundChecker(ChecksConfig())
    a, b = render(W, H, 10, "any"), render(W, H, 11, "any")
    assert _check(checker, scene, a).passed
    assert _check(checker, scene, b, [a]).passed
    res = _check(checker, scene, a.copy(), [b, a])
    assert res.failed == ["near_duplicate"] and res.scores["near_duplicate"] == pytest.approx(1.0)
    # slightly changed (grain, a little brightness) is still the same background
    near = np.clip(a.astype(int) + 3 + np.random.default_rng(0).integers(-4, 5, a.shape), 0, 255).astype(np.uint8)
    assert duplicate_score(Image.fromarray(near), [Image.fromarray(a)]) >= ChecksConfig().duplicate_threshold


def test_disabled_checks_do_not_run_and_result_is_json_friendly():
    scene = _scene()
    cfg = ChecksConfig(object_copy=False, too_close=False, near_duplicate=True)
    res = _check(BackgroundChecker(cfg), scene, scene[2], [scene[2]])
    assert set(res.scores) == {"near_duplicate"} and res.failed == ["near_duplicate"]
    record = json.loads(json.dumps(res.to_dict()))
    assert record["passed"] is False and record["failed"] == ["near_duplicate"]
    assert set(record["seconds"]) == {"near_duplicate"}
    assert isinstance(res, CheckResult)


def test_salient_object_check_with_the_classical_segmenter():
    scene = _scene()
    checker = BackgroundChecker(ChecksConfig(salient_object=True, object_copy=False, too_close=False,
                                             near_duplicate=False))
    plain = np.clip(np.array([60, 160, 90]) + np.random.default_rng(3).normal(0, 4, (H, W, 3)), 0, 255).astype(np.uint8)
    assert _check(checker, scene, plain).scores["salient_object"] < ChecksConfig().salient_threshold
    with_object = _paste_copy(plain, scene[0], scene[1])
    res = _check(checker, scene, with_object)
    assert res.failed == ["salient_object"]
    # an object painted exactly under the kept one is hidden by it: it does not count
    hidden = _paste_copy(plain, scene[0], scene[1], at=(np.nonzero(scene[1])[0].min(), np.nonzero(scene[1])[1].min()))
    assert _check(checker, scene, hidden).passed


def test_mismatched_sizes_are_an_input_error():
    img, mask, old, known = _scene()
    with pytest.raises(InputError, match="mask"):
        BackgroundChecker(ChecksConfig()).check(Image.fromarray(img), Image.new("L", (10, 10)), Image.fromarray(old),
                                                None, Image.fromarray(old), [])


def test_checks_config_in_pipeline_config_round_trips_and_validates():
    cfg = PipelineConfig(checks=ChecksConfig(retries=3, on_fail="drop", close_threshold=0.6))
    assert PipelineConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert PipelineConfig().checks == ChecksConfig()
    with pytest.raises(ConfigError, match="checks.on_fail"):
        PipelineConfig.from_dict({"checks": {"on_fail": "explode"}})
    with pytest.raises(ConfigError, match="checks.retries"):
        PipelineConfig.from_dict({"checks": {"retries": -1}})
    with pytest.raises(ConfigError, match="checks.copy_threshold"):
        PipelineConfig.from_dict({"checks": {"copy_threshold": 1.5}})


def test_salient_object_check_with_real_isnet(monkeypatch):
    """ISNet (when the model store holds it) finds a pasted copy of the object in a background."""
    pytest.importorskip("rembg")
    import os
    from pathlib import Path

    from backdrop import models

    monkeypatch.setenv("BACKDROP_HOME", str(Path(os.environ.get("BACKDROP_TEST_MODELS") or models.default_home())))
    if models.find("isnet-medium") is None:
        pytest.skip("isnet-medium is not in the model store: `backdrop models pull isnet-medium`")
    scene = _scene()
    checker = BackgroundChecker(ChecksConfig(salient_object=True, segmenter="rembg", segment_model="isnet-medium",
                                             object_copy=False, too_close=False, near_duplicate=False))
    clean = render(W, H, 2, "studio")
    before = _check(checker, scene, clean)
    assert before.passed, before.scores  # ISNet's raw output: no object, no mask (rembg would stretch it)
    res = _check(checker, scene, _paste_copy(clean, scene[0], scene[1]))
    assert res.failed == ["salient_object"], res.scores
