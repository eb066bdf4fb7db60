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


def test_default_is_a_hard_paste_along_the_mask():
    """What `run` and `augment` do unless --feather says otherwise: no band (issue #10: a band
    makes augmented objects' edges unlike real ones, a cue the model learns)."""
    img, mask, bg = _inputs()
    out = np.asarray(composite(img, mask, bg, CompositeConfig()))
    fg = np.asarray(mask) == 255
    assert np.array_equal(out[~fg], np.asarray(bg)[~fg])
    assert np.array_equal(out[fg], np.asarray(img)[fg])


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


# -- bounded memory: computed near the mask only, same result as the whole frame ----------------------


def _whole_frame(img: Image.Image, mask: Image.Image, bg: Image.Image, config: CompositeConfig) -> np.ndarray:
    """The compositing rule applied to every pixel of the frame (the reference)."""
    src, m, new = np.asarray(img), np.asarray(mask), np.asarray(bg)
    fg = m == 255
    alpha = m.astype(np.float32) / 255.0
    if config.feather > 0 and fg.any():
        alpha = np.maximum(alpha, np.clip((config.feather + 0.5 - _distance_outside(m)) / config.feather, 0.0, 1.0))
    band = (alpha > 0) & ~fg
    source = src.copy()
    if band.any() and fg.any():  # each band pixel: its nearest object pixel's colour
        _, labels = cv2.distanceTransformWithLabels((~fg).astype(np.uint8), cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
        where = np.flatnonzero(fg.ravel())
        lookup = np.zeros(len(where) + 1, np.int64)
        lookup[labels.ravel()[where]] = where
        source[band] = src.reshape(-1, 3)[lookup[labels[band]]]
    source = _whole_frame_harmonize(source, new, band, fg) if config.harmonize and band.any() else source
    a = alpha[..., None]
    out = np.clip(source * a + new * (1.0 - a) + 0.5, 0, 255).astype(np.uint8)
    out[fg] = src[fg]
    return out


def _whole_frame_harmonize(img, new, band, fg):
    from backdrop.composite import RING

    dist = _distance_outside(np.where(fg, 255, 0))
    width = float(dist[band].max())
    ring = (dist > width) & (dist <= width + max(RING, 3 * width))
    if not ring.any():
        return img
    lab_img = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    lab_new = cv2.cvtColor(new.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    edge, near = lab_img[band], lab_new[ring]
    gain = np.clip(near.std(axis=0) / np.maximum(edge.std(axis=0), 1e-3), 0.5, 2.0)
    out_lab = lab_img.copy()
    out_lab[band] = (edge - edge.mean(axis=0)) * gain + near.mean(axis=0)
    out = img.astype(np.float32)
    out[band] = np.clip(cv2.cvtColor(out_lab, cv2.COLOR_LAB2RGB)[band] * 255.0, 0, 255)
    return out


@pytest.mark.parametrize("feather", [0, 2, 7])
@pytest.mark.parametrize("harmonize", [False, True])
@pytest.mark.parametrize("where", ["middle", "corner", "soft", "empty"])
def test_composite_near_the_mask_equals_the_whole_frame(feather, harmonize, where):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    mask = np.zeros((300, 400), np.uint8)
    if where == "middle":
        cv2.circle(mask, (200, 140), 30, 255, -1)
    elif where == "corner":
        mask[0:25, 370:400] = 255
    elif where == "soft":
        cv2.circle(mask, (120, 100), 20, 255, -1)
        mask[280, 10] = 90  # a lone partial pixel far from the object
    out = composite(Image.fromarray(img), Image.fromarray(mask), Image.fromarray(bg),
                    CompositeConfig(feather=feather, harmonize=harmonize))
    want = _whole_frame(Image.fromarray(img), Image.fromarray(mask), Image.fromarray(bg),
                        CompositeConfig(feather=feather, harmonize=harmonize))
    assert np.array_equal(np.asarray(out), want)


@pytest.mark.parametrize("radius", [0.2, 0.5])  # 0.5: the mask's box is the whole frame
@pytest.mark.parametrize("harmonize", [False, True])
def test_composite_memory_is_a_few_bytes_per_pixel(radius, harmonize):
    """It made several full-size float32 copies: 86 bytes a pixel here, 3 GB of a run at 49 Mpx.
    Now: the inputs and output as arrays (9), the mask, a few booleans and one float32 distance."""
    import tracemalloc

    side = 2000
    img = Image.new("RGB", (side, side), (10, 200, 30))
    bg = Image.new("RGB", (side, side), (200, 10, 30))
    mask = np.zeros((side, side), np.uint8)
    cv2.circle(mask, (side // 2, side // 2), int(side * radius), 255, -1)
    tracemalloc.start()
    try:
        composite(img, Image.fromarray(mask), bg, CompositeConfig(feather=3, harmonize=harmonize))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * side * side, f"{peak / side / side:.1f} bytes a pixel"

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
