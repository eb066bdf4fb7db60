"""The weight-free captioner: colour names, light, texture, determinism."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from backdrop.caption import CAPTIONERS
from backdrop.caption.describe import DescribeCaptioner, analyse, colour_name
from backdrop.config import CaptionConfig

H, W = 240, 320


def flat(rgb, noise: float = 0.0, seed: int = 0, mono: bool = True) -> np.ndarray:
    a = np.full((H, W, 3), rgb, np.float32)
    if noise:
        rng = np.random.default_rng(seed)
        a += rng.normal(0, noise, (H, W, 1 if mono else 3)).astype(np.float32)
    return a


def img(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def caption(a: np.ndarray) -> str:
    return DescribeCaptioner(CaptionConfig())(img(a))


@pytest.mark.parametrize(
    "rgb, word, not_words",
    [
        ((245, 205, 215), "pink", ("blue", "grey", "green")),
        ((40, 80, 200), "blue", ("pink", "grey", "purple")),
        ((128, 128, 128), "grey", ("pink", "blue", "warm", "cool")),
        ((30, 130, 60), "green", ("blue", "grey")),
        ((250, 250, 250), "white", ("grey", "pink")),
        ((10, 10, 10), "black", ("grey", "blue")),
    ],
)
def test_colour_naming_on_plain_and_grainy_backgrounds(rgb, word, not_words):
    for a in (flat(rgb), flat(rgb, noise=8, mono=False)):
        text = caption(a)
        assert word in text, text
        assert not any(w in text.split() for w in not_words), text
        assert text.endswith("background") or " background " in text


def test_colour_name_modifiers():
    assert colour_name((245, 205, 215)) == "pale pink"
    assert colour_name((40, 80, 200)) == "blue"
    assert colour_name((128, 128, 128)) == "grey"
    assert colour_name((25, 35, 90)) == "navy"
    assert colour_name((10, 50, 15)) == "dark green"
    assert colour_name((235, 225, 250)).startswith("pale ")


def test_two_colour_background_names_both():
    a = flat((245, 245, 245))
    a[:, : W // 2] = (40, 80, 200)
    d = analyse(img(a))
    names = [n for n, _ in d.colours]
    assert any("blue" in n for n in names) and "white" in names
    assert sum(s for _, s in d.colours) == pytest.approx(1.0, abs=0.01)
    # a single edge between two colours is not a texture, and its lightness is not "lighting"
    assert d.texture == "smooth" and d.lighting == ""


def test_smooth_grainy_striped_mottled():
    smooth = analyse(img(flat((200, 190, 170), noise=0.5)))
    grainy = analyse(img(flat((200, 190, 170), noise=14, seed=1)))
    faint = analyse(img(flat((200, 190, 170), noise=3, seed=1)))
    yy, xx = np.mgrid[0:H, 0:W]
    stripes = flat((200, 190, 170)) + (30 * np.sign(np.sin(2 * np.pi * xx / 16)))[..., None]
    striped = analyse(img(stripes))
    h_stripes = analyse(img(flat((200, 190, 170)) + (25 * np.sin(2 * np.pi * yy / 12))[..., None]))
    blobs = cv2.GaussianBlur(np.random.default_rng(2).normal(0, 40, (H, W)).astype(np.float32), (0, 0), 6)
    mottled = analyse(img(flat((200, 190, 170)) + 8 * blobs[..., None]))
    board = np.sign(np.sin(2 * np.pi * xx / 20) * np.sin(2 * np.pi * yy / 20))
    checks = analyse(img(flat((150, 150, 150)) + (30 * board)[..., None]))

    assert smooth.texture == "smooth" and "smooth" in smooth.caption() and "grain" not in smooth.caption()
    assert grainy.texture == "fine grain" and "grainy" in grainy.caption() and "smooth" not in grainy.caption()
    assert faint.texture == "faint grain" and "faint fine grain" in faint.caption()
    assert striped.texture == "stripes" and "vertical stripes" in striped.caption()
    assert h_stripes.texture == "stripes" and h_stripes.stripes == "horizontal"
    assert mottled.texture == "mottled" and "mottled" in mottled.caption()
    assert checks.texture == "pattern" and "pattern" in checks.caption()
    # the same colour is named whatever the texture
    assert {d.colours[0][0] for d in (smooth, grainy, mottled)} == {smooth.colours[0][0]}


def test_brightness_and_lighting():
    xx = np.mgrid[0:H, 0:W][1]
    dim = analyse(img(flat((40, 35, 30))))
    bright = analyse(img(flat((250, 245, 240))))
    assert dim.brightness == "dim" and "dim" in dim.caption()
    assert bright.brightness == "bright" and bright.lighting == "even" and "evenly lit" in bright.caption()
    grad = analyse(img(flat((100, 140, 200)) + (70 * (0.5 - xx / W))[..., None]))
    assert grad.lighting == "gradient" and grad.light_from == "left"
    assert "gradient from the left" in grad.caption()
    yy, xx = np.mgrid[0:H, 0:W]
    vig = analyse(img(flat((230, 220, 200)) - (150 * ((xx / W - 0.5) ** 2 + (yy / H - 0.5) ** 2))[..., None]))
    assert vig.lighting == "vignette" and "vignette" in vig.caption()


def test_high_contrast():
    yy, xx = np.mgrid[0:H, 0:W]
    a = np.where(((xx // 10) % 2 == 0)[..., None], np.float32([20, 20, 20]), np.float32([240, 240, 240]))
    assert analyse(img(a)).contrast == "high"
    assert analyse(img(flat((128, 128, 128)))).contrast == ""


def test_deterministic_and_size_independent():
    a = flat((180, 200, 220), noise=10, seed=4)
    a += cv2.GaussianBlur(np.random.default_rng(5).normal(0, 30, (H, W)).astype(np.float32), (0, 0), 3)[..., None]
    first = caption(a)
    assert all(caption(a) == first for _ in range(3))
    fresh = DescribeCaptioner(CaptionConfig())
    assert fresh(img(a.copy())) == first
    # big images are analysed at a bounded resolution (and quickly)
    big = img(np.tile(flat((245, 205, 215)), (8, 8, 1)))
    assert "pink" in DescribeCaptioner(CaptionConfig())(big)


def test_registry_and_modes():
    cap = CAPTIONERS.create("describe", CaptionConfig())
    assert cap.name == "describe"
    assert CAPTIONERS.availability("describe", CaptionConfig()).usable
    rgba = img(flat((40, 80, 200))).convert("RGBA")
    assert "blue" in cap(rgba)
    gray = Image.new("L", (50, 40), 128)
    assert "grey" in cap(gray)
    tiny = Image.new("RGB", (3, 2), (245, 205, 215))
    assert "pink" in cap(tiny)
