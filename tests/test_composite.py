"""Composite: foreground byte-identical, feathered edge outside it, optional edge harmonisation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from backdrop.composite import composite
from backdrop.config import CompositeConfig
from backdrop.errors import InputError


def _inputs(width=96, height=72, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (width // 2, height // 2), min(width, height) // 4, 255, -1)
    mask[5:9, 5:30] = 255  # a second, thin part
    bg = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(img), Image.fromarray(mask), Image.fromarray(bg)


def _distance_outside(mask: np.ndarray) -> np.ndarray:
    return cv2.distanceTransform((mask != 255).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


@pytest.mark.parametrize("feather", [0, 1, 2, 6])
@pytest.mark.parametrize("harmonize", [False, True])
def test_foreground_is_byte_identical(feather, harmonize):
    img, mask, bg = _inputs()
    out = composite(img, mask, bg, CompositeConfig(feather=feather, harmonize=harmonize))
    fg = np.asarray(mask) == 255
    assert out.mode == "RGB" and out.size == img.size
    assert np.array_equal(np.asarray(out)[fg], np.asarray(img)[fg])


def test_no_feather_is_a_hard_paste():
    img, mask, bg = _inputs()
    out = np.asarray(composite(img, mask, bg, CompositeConfig(feather=0)))
    fg = np.asarray(mask) == 255
    assert np.array_equal(out[~fg], np.asarray(bg)[~fg])


def test_feather_band_ramps_from_object_into_background():
    w, h = 80, 40
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (255, 0, 0)
    mask = np.zeros((h, w), np.uint8)
    mask[:, :30] = 255  # foreground: the left 30 columns
    bg = Image.new("RGB", (w, h), (0, 0, 255))
    out = np.asarray(composite(Image.fromarray(img), Image.fromarray(mask), bg, CompositeConfig(feather=4)))
    row = out[h // 2].astype(int)
    assert (row[:30] == (255, 0, 0)).all()
    band = row[30:34, 0]  # 4 px outside the object
    assert (np.diff(band) < 0).all() and band[0] < 255 and band[-1] > 0  # a falling ramp of red
    assert (row[34:] == (0, 0, 255)).all()  # beyond the feather: only the new background


def test_pixels_beyond_feather_are_the_new_background():
    img, mask, bg = _inputs(seed=1)
    out = np.asarray(composite(img, mask, bg, CompositeConfig(feather=3)))
    far = _distance_outside(np.asarray(mask)) >= 3.5
    assert np.array_equal(out[far], np.asarray(bg)[far])
    near = (_distance_outside(np.asarray(mask)) > 0) & ~far
    assert not np.array_equal(out[near], np.asarray(bg)[near])


def test_soft_mask_values_blend():
    img = Image.new("RGB", (10, 10), (200, 200, 200))
    mask = Image.new("L", (10, 10), 128)
    out = composite(img, mask, Image.new("RGB", (10, 10), (0, 0, 0)), CompositeConfig(feather=0))
    assert out.getpixel((5, 5)) == (100, 100, 100)


def test_background_of_another_size_is_resized():
    img, mask, _ = _inputs()
    bg = Image.new("RGB", (33, 17), (10, 20, 30))
    out = composite(img, mask, bg, CompositeConfig(feather=2))
    assert out.size == img.size
    far = _distance_outside(np.asarray(mask)) >= 2.5
    assert (np.asarray(out)[far] == (10, 20, 30)).all()


def test_mask_size_mismatch_is_an_input_error():
    img, _, bg = _inputs()
    with pytest.raises(InputError, match="mask is"):
        composite(img, Image.new("L", (5, 5)), bg, CompositeConfig())


def test_harmonize_moves_only_the_edge_toward_the_new_background():
    w, h = 90, 60
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (230, 40, 40)  # the original background around the object: red
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (45, 30), 15, 255, -1)
    img[mask == 255] = (128, 128, 128)
    bg = Image.new("RGB", (w, h), (30, 60, 220))  # new background: blue
    args = (Image.fromarray(img), Image.fromarray(mask), bg)
    plain = np.asarray(composite(*args, CompositeConfig(feather=4))).astype(int)
    tuned = np.asarray(composite(*args, CompositeConfig(feather=4, harmonize=True))).astype(int)
    dist = _distance_outside(mask)
    band = (dist > 0) & (dist < 5)
    blue = np.array([30, 60, 220])
    assert np.abs(tuned[band] - blue).sum(1).mean() < 0.5 * np.abs(plain[band] - blue).sum(1).mean()
    assert np.array_equal(tuned[~band], plain[~band])  # object and far background untouched


@pytest.mark.parametrize("harmonize", [False, True])
def test_feather_ring_carries_no_old_background(harmonize):
    # issue #10: the band outside the mask used to fade from the *original* pixels, i.e. the old,
    # class-tinted background; now it must look like the new background (plus the object's edge)
    w, h = 120, 90
    old = np.array([20, 220, 30])  # strongly green old background
    new = np.array([40, 40, 200])  # blue new background
    obj = np.array([128, 128, 128])  # a grey object
    img = np.empty((h, w, 3), np.uint8)
    img[:] = old
    mask = np.zeros((h, w), np.uint8)
    cv2.circle(mask, (60, 45), 20, 255, -1)
    img[mask == 255] = obj
    rng = np.random.default_rng(0)
    bg = np.clip(new + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    out = composite(Image.fromarray(img), Image.fromarray(mask), Image.fromarray(bg),
                    CompositeConfig(feather=3, harmonize=harmonize))
    out = np.asarray(out).astype(float)
    dist = _distance_outside(mask)
    ring = (dist > 0) & (dist <= 3.5)
    # green never rises above what the grey edge and the blue background could give
    assert out[ring][:, 1].max() <= max(obj[1], new[1]) + 20
    mean = out[ring].mean(0)
    assert np.linalg.norm(mean - old) > 3 * np.linalg.norm(mean - (obj + new) / 2)
    assert np.array_equal(out[mask == 255], img[mask == 255])  # the object stays byte-identical


def test_feather_takes_each_band_pixel_from_the_nearest_object_pixel():
    # a two-coloured object: the band beside each half carries that half's colour, not the other's
    w, h = 60, 40
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (0, 255, 0)  # old background
    mask = np.zeros((h, w), np.uint8)
    mask[10:30, 10:50] = 255
    img[10:30, 10:30] = (255, 0, 0)
    img[10:30, 30:50] = (0, 0, 255)
    out = np.asarray(composite(Image.fromarray(img), Image.fromarray(mask), Image.new("RGB", (w, h)),
                               CompositeConfig(feather=2))).astype(int)
    assert out[9, 15, 0] > 100 and out[9, 15, 1:].max() == 0  # above the red half: red, faded
    assert out[9, 45, 2] > 100 and out[9, 45, :2].max() == 0  # above the blue half: blue, faded
