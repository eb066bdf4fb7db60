"""The invisible watermark: embed then detect, through a PNG file, on 512x512 images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

pytest.importorskip("imwatermark")

from backdrop import watermark as wm  # noqa: E402
from backdrop.errors import InputError  # noqa: E402


def images():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 255, 512)
    gx, gy = np.meshgrid(x, x)
    smooth = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).resize((512, 512), Image.BICUBIC)
    return {
        "noise": Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)),
        "gradient": Image.fromarray(np.dstack([gx, gy, 255 - gx]).astype(np.uint8)),
        "smooth": smooth.filter(ImageFilter.GaussianBlur(3)),
        "white": Image.new("RGB", (512, 512), (255, 255, 255)),
        "sky": Image.new("RGB", (512, 512), (90, 150, 230)),
    }


@pytest.mark.parametrize("name", list(images()))
def test_embed_then_detect_through_png(name, tmp_path):
    original = images()[name]
    marked = wm.embed(original, "backdrop")
    assert marked.size == original.size and marked.mode == "RGB"
    diff = np.abs(np.asarray(marked, int) - np.asarray(original, int))
    assert diff.mean() < 1.0  # invisible: well under one grey level on average
    path = tmp_path / "marked.png"
    marked.save(path)
    assert wm.detect(path) == "backdrop"
    assert wm.detect(path.read_bytes()) == "backdrop"
    assert wm.detect(original) is None  # an unmarked image has no mark


def test_other_text_and_limits(tmp_path):
    img = images()["smooth"]
    marked = wm.embed(img, "lab-42 ✓")
    buf = io.BytesIO()
    marked.save(buf, "PNG")
    assert wm.detect(buf.getvalue()) == "lab-42 ✓"
    with pytest.raises(ValueError):
        wm.embed(img, "x" * 13)
    with pytest.raises(InputError):
        wm.embed(Image.new("RGB", (200, 200)), "backdrop")
    assert wm.detect(Image.new("RGB", (200, 200))) is None


def test_jpeg_keeps_it_only_without_chroma_subsampling():
    """Measured behaviour, kept honest: 4:4:4 JPEG keeps the mark, default 4:2:0 loses it."""
    marked = wm.embed(images()["smooth"], "backdrop")
    keep, lose = io.BytesIO(), io.BytesIO()
    marked.save(keep, "JPEG", quality=90, subsampling=0)
    marked.save(lose, "JPEG", quality=95)  # Pillow's default subsampling 4:2:0
    assert wm.detect(keep.getvalue()) == "backdrop"
    assert wm.detect(lose.getvalue()) is None


def test_decoder_is_imwatermarks():
    """The mark is read by invisible-watermark's own dwtDct decoder (the format is its)."""
    from imwatermark import WatermarkDecoder

    marked = wm.embed(images()["noise"], "backdrop")
    bgr = np.asarray(marked)[:, :, ::-1].copy()
    payload = WatermarkDecoder("bytes", wm.PAYLOAD_BYTES * 8).decode(bgr, "dwtDct")
    assert payload[:2] == b"BD" and payload[3:11] == b"backdrop"
