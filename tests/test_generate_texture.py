"""Texture generator (image quilting): size, seeding, and that it copies only real background."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
from PIL import Image

from backdrop import runlog
from backdrop.config import GenerateConfig
from backdrop.errors import GenerationError
from backdrop.generate import GENERATORS
from backdrop.generate.texture import TextureGenerator
from backdrop.types import GenerateRequest, Prompt

RED = np.array([200, 60, 60])
GREEN = np.array([40, 210, 40])  # the forbidden colour: object and inpainted fill


def _scene(width: int, height: int, known_region: np.ndarray | None = None, seed: int = 0):
    """A red, speckled background; object + inpainted ring painted green; known = the red part."""
    rng = np.random.default_rng(seed)
    img = np.clip(RED + rng.normal(0, 12, (height, width, 3)), 0, 255)
    for _ in range(width * height // 800):  # darker red blobs: some structure to match
        c = (int(rng.integers(width)), int(rng.integers(height)))
        cv2.circle(img, c, int(rng.integers(2, 8)), (150, 40, 50), -1)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (width // 2, height // 2), (width // 5, height // 4), 0, 0, 360, 255, -1)
    if known_region is None:
        known = cv2.dilate(mask, np.ones((15, 15), np.uint8)) == 0
    else:
        known = known_region & (mask == 0)
    img[~known] = GREEN
    img = img.astype(np.uint8)
    return GenerateRequest(
        image=Image.fromarray(img),
        mask=Image.fromarray(mask),
        background=Image.fromarray(img),
        known=Image.fromarray(np.where(known, 255, 0).astype(np.uint8)),
        prompt=Prompt("a red background"),
        seed=seed,
    )


def _request(base: GenerateRequest, **changes) -> GenerateRequest:
    fields = dict(image=base.image, mask=base.mask, background=base.background, known=base.known,
                  prompt=base.prompt, seed=base.seed, progress=base.progress)
    fields.update(changes)
    return GenerateRequest(**fields)


def _green_pixels(img: Image.Image) -> int:
    arr = np.asarray(img).astype(np.int32)
    # any pixel that is even halfway from red toward green counts
    to_green = np.linalg.norm(arr - GREEN, axis=2)
    to_red = np.linalg.norm(arr - RED, axis=2)
    return int((to_green < to_red).sum())


def test_registered_and_described():
    assert GENERATORS.load("texture") is TextureGenerator
    gen = TextureGenerator(GenerateConfig(patch=24))
    assert gen.generative is False
    assert gen.describe() == {"model": "texture-quilting", "patch": 24, "variation": 0.08}


def test_output_size_and_mode():
    req = _scene(150, 100)
    out = TextureGenerator(GenerateConfig(patch=16))(req)
    assert out.mode == "RGB"
    assert out.size == (150, 100)


def test_same_seed_same_pixels_other_seed_differs():
    req = _scene(160, 120)
    gen = TextureGenerator(GenerateConfig(patch=16))
    a, b = gen(req), gen(req)
    assert a.tobytes() == b.tobytes()
    c = gen(_request(req, seed=req.seed + 1))
    assert c.tobytes() != a.tobytes()


def test_samples_only_known_pixels_at_working_resolution():
    # 900x600 is downscaled (by a non-integer factor) for the search and replayed at full size
    req = _scene(900, 600, seed=3)
    assert _green_pixels(req.image) > 10_000  # the forbidden colour is really there
    out = TextureGenerator(GenerateConfig(patch=48, variation=0.08))(req)
    assert out.size == (900, 600)
    assert _green_pixels(out) == 0
    # it is the background's texture: same colour on average, not a flat fill
    arr = np.asarray(out).astype(np.float32)
    known = np.asarray(req.known) == 255
    ref = np.asarray(req.image).astype(np.float32)[known]
    assert np.abs(arr.reshape(-1, 3).mean(0) - ref.mean(0)).max() < 0.15 * 255
    assert arr.std(axis=(0, 1)).min() > 5


def test_output_is_a_rearrangement_not_the_input():
    req = _scene(200, 160, seed=5)
    out = np.asarray(TextureGenerator(GenerateConfig(patch=24, variation=0.0))(req)).astype(int)
    known = np.asarray(req.known) == 255
    same = (np.abs(out - np.asarray(req.image).astype(int)).sum(2) == 0)[known].mean()
    assert same < 0.9  # patches were moved around, not the input copied back


def test_small_known_area_reduces_patch_and_warns(caplog):
    width, height = 240, 180
    strip = np.zeros((height, width), bool)
    strip[:, :14] = True  # only a 14 px wide strip of real background on the left
    req = _scene(width, height, known_region=strip, seed=2)
    with runlog.collecting() as rec, caplog.at_level(logging.WARNING, logger="backdrop"):
        out = TextureGenerator(GenerateConfig(patch=48, variation=0.0))(req)
    assert out.size == (width, height)
    assert _green_pixels(out) == 0
    assert any("patch reduced" in w for w in rec["warnings"])
    assert any("real background" in w for w in rec["warnings"])  # under 5% known
    assert rec["notes"]["texture.patch"] < 14


def test_scattered_known_pixels_fall_back_to_colour_field():
    width, height = 120, 90
    dots = np.zeros((height, width), bool)
    dots[::4, ::4] = True  # isolated real pixels: no patch fits anywhere
    req = _scene(width, height, known_region=dots, seed=4)
    with runlog.collecting() as rec:
        out = TextureGenerator(GenerateConfig(variation=0.0))(req)
    assert out.size == (width, height)
    assert _green_pixels(out) == 0
    assert rec["notes"]["texture.fallback"] == "pixels"
    assert rec["warnings"]


def test_no_known_pixels_is_a_generation_error():
    req = _scene(64, 48, known_region=np.zeros((48, 64), bool))
    with pytest.raises(GenerationError, match="no real background"):
        TextureGenerator(GenerateConfig())(req)


def test_progress_reports_every_row_up_to_total():
    calls = []
    req = _request(_scene(160, 120), progress=lambda step, total: calls.append((step, total)))
    TextureGenerator(GenerateConfig(patch=16))(req)
    assert calls and calls[-1][0] == calls[-1][1]
    assert [s for s, _ in calls] == list(range(1, calls[-1][1] + 1))


def test_variation_changes_colour_but_stays_seeded():
    req = _scene(120, 90)
    plain = np.asarray(TextureGenerator(GenerateConfig(patch=16, variation=0.0))(req)).astype(float)
    gen = TextureGenerator(GenerateConfig(patch=16, variation=0.5))
    varied = np.asarray(gen(req)).astype(float)
    assert np.asarray(gen(req)).astype(float).tolist() == varied.tolist()
    assert np.abs(varied.mean((0, 1)) - plain.mean((0, 1))).max() > 2


def test_min_error_cut_is_the_cheapest_connected_path():
    import itertools

    from backdrop.generate.texture import _min_path

    rng = np.random.default_rng(0)
    for _ in range(100):
        n, m = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        err = rng.random((n, m))
        paths = [p for p in itertools.product(range(m), repeat=n) if all(abs(p[r] - p[r - 1]) <= 1 for r in range(1, n))]
        best = min(sum(err[r, p[r]] for r in range(n)) for p in paths)
        path = _min_path(err)
        assert all(abs(int(path[r]) - int(path[r - 1])) <= 1 for r in range(1, n))
        assert sum(err[r, path[r]] for r in range(n)) == pytest.approx(best)
