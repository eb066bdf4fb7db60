"""OpenCV inpainters: the hole is filled from the background, nothing outside it changes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from backdrop import runlog
from backdrop.config import InpaintConfig
from backdrop.errors import InputError
from backdrop.inpaint import INPAINTERS
from backdrop.inpaint.opencv import NavierStokesInpainter, TeleaInpainter, hole_mask

BACKENDS = [TeleaInpainter, NavierStokesInpainter]
PINK = np.array([235, 200, 210], dtype=np.float64)
GREEN = np.array([20, 150, 30], dtype=np.float64)


def scene(w: int, h: int, seed: int = 0, halo: int = 0) -> tuple[Image.Image, Image.Image, np.ndarray]:
    """A grainy pink background with a green disc (the object); optionally a green halo ring
    ``halo`` pixels wide just outside the mask, as a segmenter's soft edge leaves behind."""
    rng = np.random.default_rng(seed)
    rgb = PINK.astype(np.float32) + rng.normal(0, 6, (h, w, 3)).astype(np.float32)
    yy, xx = np.ogrid[0:h, 0:w]
    r = np.hypot(xx - w / 2, yy - h / 2)
    radius = min(w, h) / 4
    rgb[r <= radius] = GREEN
    if halo:
        ring = (r > radius) & (r <= radius + halo)
        rgb[ring] = 0.5 * GREEN + 0.5 * PINK
    mask = np.where(r <= radius, 255, 0).astype(np.uint8)
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb), Image.fromarray(mask, mode="L"), rgb


def brute_hole(mask: np.ndarray, d: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    out = np.zeros(mask.shape, bool)
    for y, x in zip(ys, xs):
        out |= (yy - y) ** 2 + (xx - x) ** 2 <= d * d
    return out


@pytest.mark.parametrize("cls", BACKENDS)
def test_outside_the_hole_is_byte_identical_and_hole_is_background(cls):
    image, mask, rgb = scene(160, 120)
    cfg = InpaintConfig(dilate=4)
    out = cls(cfg)(image, mask)
    assert out.mode == "RGB" and out.size == image.size
    got = np.asarray(out)
    hole = np.asarray(hole_mask(mask, 4)) > 0
    assert np.array_equal(got[~hole], rgb[~hole])
    filled = got[hole].astype(np.float64)
    assert np.abs(filled.mean(0) - PINK).max() < 3  # pink, and no drift (8-bit Telea drifts)
    assert np.linalg.norm(filled - GREEN, axis=1).min() > 100  # no green pixel left in the hole


@pytest.mark.parametrize("cls", BACKENDS)
def test_reduced_resolution_path_keeps_outside_pixels(cls):
    image, mask, rgb = scene(3000, 2000, seed=1)
    cfg = InpaintConfig(max_side=512, dilate=7)
    with runlog.collecting() as rec:
        out = cls(cfg)(image, mask)
    assert rec["notes"]["inpaint.scale"] < 0.2  # the fill really ran at reduced resolution
    got = np.asarray(out)
    hole = np.asarray(hole_mask(mask, 7)) > 0
    assert np.array_equal(got[~hole], rgb[~hole])
    filled = got[hole].astype(np.float64)
    assert np.abs(filled.mean(0) - PINK).max() < 3
    assert np.linalg.norm(filled - GREEN, axis=1).min() > 100


def test_small_hole_in_large_image_uses_reduced_path_and_only_touches_the_hole():
    rng = np.random.default_rng(3)
    rgb = np.clip(PINK + rng.normal(0, 6, (1500, 2000, 3)), 0, 255).astype(np.uint8)
    rgb[700:720, 1900:1930] = GREEN  # near the right edge: the crop is clipped there
    mask = np.zeros((1500, 2000), np.uint8)
    mask[700:720, 1900:1930] = 255
    out = np.asarray(TeleaInpainter(InpaintConfig(max_side=256))(Image.fromarray(rgb), Image.fromarray(mask)))
    hole = np.asarray(hole_mask(Image.fromarray(mask), 7)) > 0
    assert np.array_equal(out[~hole], rgb[~hole])
    assert np.linalg.norm(out[hole].astype(float) - GREEN, axis=1).min() > 100


def test_dilation_removes_the_halo_and_no_dilation_keeps_it():
    image, mask, rgb = scene(160, 120, halo=3)
    halo = (np.asarray(hole_mask(mask, 3)) > 0) & (np.asarray(mask) == 0)
    halo_colour = 0.5 * GREEN + 0.5 * PINK
    kept = np.asarray(TeleaInpainter(InpaintConfig(dilate=0))(image, mask))
    assert np.array_equal(kept[halo], rgb[halo])  # outside the (undilated) hole: untouched
    cleaned = np.asarray(TeleaInpainter(InpaintConfig(dilate=5))(image, mask)).astype(np.float64)
    # the halo is refilled from the pink beyond it, not from the halo colour
    assert np.abs(cleaned[halo].mean(0) - PINK).max() < 4
    assert np.linalg.norm(cleaned[halo].mean(0) - halo_colour) > 40


@pytest.mark.parametrize("d", [0, 1, 5, 12, 13, 30])
def test_hole_mask_is_a_euclidean_growth(d):
    rng = np.random.default_rng(d)
    m = np.zeros((70, 90), np.uint8)
    m[rng.integers(0, 70, 6), rng.integers(0, 90, 6)] = rng.integers(1, 256, 6)  # soft values count
    got = np.asarray(hole_mask(Image.fromarray(m, mode="L"), d))
    assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 255}
    assert np.array_equal(got > 0, brute_hole(m, d))


def test_hole_mask_single_pixel_disc():
    m = Image.new("L", (21, 21), 0)
    m.putpixel((10, 10), 255)
    assert hole_mask(m, 2).histogram()[255] == 13
    assert hole_mask(m, 0).histogram()[255] == 1
    with pytest.raises(ValueError):
        hole_mask(m, -1)


def test_backends_differ_and_come_from_the_registry():
    image, mask, _ = scene(120, 90, seed=5)
    telea = INPAINTERS.create("telea", InpaintConfig())
    ns = INPAINTERS.create("ns", InpaintConfig())
    assert (telea.name, ns.name) == ("telea", "ns")
    assert isinstance(telea, TeleaInpainter) and isinstance(ns, NavierStokesInpainter)
    assert not np.array_equal(np.asarray(telea(image, mask)), np.asarray(ns(image, mask)))
    assert INPAINTERS.availability("telea", InpaintConfig()).usable


def test_empty_and_full_masks():
    image, _, rgb = scene(64, 48)
    empty = Image.new("L", image.size, 0)
    assert np.array_equal(np.asarray(TeleaInpainter(InpaintConfig())(image, empty)), rgb)
    full = Image.new("L", image.size, 255)
    with runlog.collecting() as rec:
        out = np.asarray(NavierStokesInpainter(InpaintConfig())(image, full))
    assert rec["warnings"] and "whole image" in rec["warnings"][0]
    assert (out == 128).all()


def test_modes_are_normalised_and_sizes_checked():
    image, mask, rgb = scene(80, 60)
    out = TeleaInpainter(InpaintConfig())(image.convert("RGBA"), mask.convert("1"))
    assert out.mode == "RGB"
    hole = np.asarray(hole_mask(mask, 7)) > 0
    assert np.array_equal(np.asarray(out)[~hole], rgb[~hole])
    with pytest.raises(InputError):
        TeleaInpainter(InpaintConfig())(image, mask.resize((40, 30)))


@pytest.mark.parametrize("cls", BACKENDS)
def test_deep_fill_does_not_drift_in_colour(cls):
    # OpenCV's 8-bit Telea brightens ~0.07 levels per pixel of depth (+9 at 100 px); the
    # backends fill in float, so the middle of a wide hole keeps the background's colour.
    rng = np.random.default_rng(7)
    rgb = np.clip(200 + rng.normal(0, 6, (400, 400, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.ogrid[0:400, 0:400]
    mask = np.where(np.hypot(xx - 200, yy - 200) <= 120, 255, 0).astype(np.uint8)
    out = np.asarray(cls(InpaintConfig(dilate=0))(Image.fromarray(rgb), Image.fromarray(mask)))
    centre = np.hypot(xx - 200, yy - 200) <= 40
    assert np.abs(out[centre].astype(float).mean(0) - rgb[mask == 0].mean(0)).max() < 1.5
