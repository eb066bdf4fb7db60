"""Metadata written into every saved image and read back: A1111 parameters, the backdrop record,
the IPTC DigitalSourceType in XMP, extra text fields; PNG and JPEG; atomic saves."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import backdrop.outputs as outputs_mod
from backdrop.metadata import (
    IPTC_BASE,
    SOURCE_TYPES,
    a1111_parameters,
    encode_image,
    format_metadata,
    parse_a1111,
    read_metadata,
    xmp_packet,
)
from writers import save_image

IMG = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8), "RGB")
RECORD = {"config": {"variants": 2, "seed": 5}, "backends": {"generate": {"name": "texture"}}, "seeds": [5, 6],
          "note": "ünïcödé ✓"}
FULL = dict(steps=20, sampler="Euler a", cfg_scale=7.5, seed=1234, size=(512, 384), model="sd15")


# -- the A1111 text -------------------------------------------------------------------------------------


def test_a1111_layout_exact():
    text = a1111_parameters("a sandy beach", "blurry, lowres", **FULL)
    assert text == (
        "a sandy beach\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1234, Size: 512x384, Model: sd15"
    )


def test_a1111_inapplicable_fields_left_out():
    text = a1111_parameters("a lab bench", None, seed=7, size="160x120", model="texture-quilting")
    assert text == "a lab bench\nSeed: 7, Size: 160x120, Model: texture-quilting"
    assert "Steps" not in text and "Sampler" not in text and "CFG" not in text
    assert a1111_parameters("just a prompt") == "just a prompt"
    assert "Negative prompt" not in a1111_parameters("p", "")


TRICKY = [
    "a beach, sunset, (warm:1.2), [sand|gravel]",
    "ratio 16:9, time: dusk, Steps: inside the prompt",
    "line one\nline two, with comma\n\nline four after a blank",
    "日本の庭園, 桜 🌸 — «café» naïve, Ωmega",
    'quotes "inside" and \\backslash\\',
    "a sign that reads Negative prompt: none, Steps: 3",
    "   leading and trailing spaces   ",
    "",
]


@pytest.mark.parametrize("prompt", TRICKY)
@pytest.mark.parametrize("negative", ["", "blurry, text: watermark", "multi\nline negative, ✗"])
def test_parse_a1111_round_trip_tricky(prompt, negative):
    text = a1111_parameters(prompt, negative, **FULL)
    parsed = parse_a1111(text)
    assert parsed["prompt"] == prompt
    assert parsed["negative"] == negative
    assert parsed["fields"] == {"Steps": "20", "Sampler": "Euler a", "CFG scale": "7.5", "Seed": "1234",
                                "Size": "512x384", "Model": "sd15"}


def test_parse_a1111_multiline_prompt_whose_line_looks_like_fields():
    prompt = "a table\nSteps: 5, Seed: 1"  # a prompt line shaped like the fields line, not the last
    parsed = parse_a1111(a1111_parameters(prompt, "x", seed=9))
    assert parsed["prompt"] == prompt and parsed["fields"] == {"Seed": "9"}


@pytest.mark.parametrize(
    "value",
    ["C:\\models\\sd15.safetensors", "a, b", "key: value", '"quoted"', " padded ", "multi\nline", "日本, 語"],
)
def test_parse_a1111_field_values_that_need_quoting(value):
    text = a1111_parameters("p", sampler=value, model=value, seed=3, extra={"Note": value})
    fields = parse_a1111(text)["fields"]
    assert fields["Sampler"] == value and fields["Model"] == value and fields["Note"] == value
    assert fields["Seed"] == "3"


def test_parse_a1111_text_from_another_tool():
    text = ("masterpiece, 1girl, (blue sky:1.3)\nNegative prompt: lowres, bad anatomy\n"
            "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x768, Model hash: abc123, "
            'Model: anything-v3, Lora hashes: "x: 1, y: 2", Version: v1.6.0')
    parsed = parse_a1111(text)
    assert parsed["prompt"] == "masterpiece, 1girl, (blue sky:1.3)"
    assert parsed["negative"] == "lowres, bad anatomy"
    f = parsed["fields"]
    assert f["Sampler"] == "DPM++ 2M Karras" and f["Model hash"] == "abc123" and f["Lora hashes"] == "x: 1, y: 2"
    assert f["Version"] == "v1.6.0" and f["Seed"] == "42"


def test_parse_a1111_prompt_only():
    assert parse_a1111("a single line prompt") == {"prompt": "a single line prompt", "negative": "", "fields": {}}


# -- PNG and JPEG round trips ----------------------------------------------------------------------------


def _params():
    return a1111_parameters("a beach, sunset: warm\nsecond line 日本", "blurry, text", **FULL)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("source", ["compositeSynthetic", "compositeWithTrainedAlgorithmicMedia",
                                    "trainedAlgorithmicMedia"])
def test_round_trip(tmp_path, suffix, source):
    path = save_image(IMG, tmp_path / f"x{suffix}", parameters=_params(), record=RECORD, source_type=source,
                      text={"AI_Watermark": "backdrop", "Created": "2026-01-01T00:00:00Z"})
    meta = read_metadata(path)
    assert meta["format"] == ("PNG" if suffix == ".png" else "JPEG")
    assert meta["size"] == [32, 24]
    assert meta["parameters"] == _params()
    assert meta["parsed"]["prompt"] == "a beach, sunset: warm\nsecond line 日本"
    assert meta["parsed"]["negative"] == "blurry, text"
    assert meta["parsed"]["fields"]["Seed"] == "1234" and meta["parsed"]["fields"]["CFG scale"] == "7.5"
    assert meta["backdrop"] == RECORD
    assert meta["digital_source_type"] == source
    assert meta["text"]["AI_Watermark"] == "backdrop" and meta["text"]["Created"] == "2026-01-01T00:00:00Z"
    # the same from bytes
    assert read_metadata(path.read_bytes())["backdrop"] == RECORD


def test_png_pixels_lossless_and_chunks_standard(tmp_path):
    path = save_image(IMG, tmp_path / "x.png", parameters=_params(), record=RECORD,
                      source_type="trainedAlgorithmicMedia")
    im = Image.open(path)
    assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(IMG))
    # an A1111-aware reader looks for a text chunk named "parameters"
    assert im.text["parameters"] == _params()
    assert json.loads(im.text["backdrop"]) == RECORD
    xmp = im.text["XML:com.adobe.xmp"]
    assert f"{IPTC_BASE}trainedAlgorithmicMedia" in xmp


def test_jpeg_parameters_where_a1111_puts_them(tmp_path):
    """UserComment in the Exif sub-IFD, 'UNICODE' + UTF-16 text of the parameters (as A1111)."""
    path = save_image(IMG, tmp_path / "x.jpg", parameters=_params(), record=RECORD)
    exif = Image.open(path).getexif()
    comment = exif.get_ifd(0x8769)[0x9286]
    assert comment[:8] == b"UNICODE\x00"
    assert comment[8:].decode("utf-16-be") == _params()


def test_reads_a1111_files_made_elsewhere(tmp_path):
    params = "a cat\nNegative prompt: dog\nSteps: 20, Seed: 9, Size: 32x24"
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", params)
    IMG.save(tmp_path / "a.png", pnginfo=info)
    meta = read_metadata(tmp_path / "a.png")
    assert meta["parsed"]["prompt"] == "a cat" and meta["parsed"]["fields"]["Seed"] == "9"
    assert meta["backdrop"] is None and meta["digital_source_type"] is None
    for enc in ("utf-16-be", "utf-16-le"):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + params.encode(enc)
        IMG.save(tmp_path / "a.jpg", exif=exif)
        assert read_metadata(tmp_path / "a.jpg")["parameters"] == params, enc


def test_plain_image_has_empty_metadata(tmp_path):
    IMG.save(tmp_path / "p.png")
    IMG.save(tmp_path / "p.jpg")
    for name in ("p.png", "p.jpg"):
        meta = read_metadata(tmp_path / name)
        assert meta["parameters"] is None and meta["backdrop"] is None and meta["digital_source_type"] is None


@pytest.mark.parametrize("source", sorted(SOURCE_TYPES))
def test_xmp_is_well_formed_xml(source):
    packet = xmp_packet(source, description='a <b> & "c"', tool="backdrop test")
    body = packet[packet.index("<x:xmpmeta"): packet.index("<?xpacket end")]
    root = ET.fromstring(body)
    ns = {"Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/", "dc": "http://purl.org/dc/elements/1.1/"}
    dst = root.find(".//Iptc4xmpExt:DigitalSourceType", ns)
    assert dst is not None and dst.text == IPTC_BASE + source
    assert root.find(".//dc:description//{*}li", ns).text == 'a <b> & "c"'


def test_unknown_source_type_refused():
    with pytest.raises(ValueError, match="IPTC source type"):
        encode_image(IMG, "PNG", source_type="madeUp")


def test_jpeg_too_much_metadata_still_saves(tmp_path, caplog):
    """A JPEG segment holds 64 kB: an oversized prompt is cut and an oversized record left out,
    with a warning, rather than a failed save."""
    huge = "sand " * 20000  # 100 kB of prompt
    with caplog.at_level(logging.WARNING, logger="backdrop"):
        path = save_image(IMG, tmp_path / "big.jpg", parameters=huge, record={"blob": "x" * 100_000},
                          text={"k": "v"}, source_type="compositeSynthetic")
    meta = read_metadata(path)
    assert 20_000 < len(meta["parameters"]) < len(huge) and huge.startswith(meta["parameters"])
    assert meta["backdrop"] is None and meta["text"]["k"] == "v"
    assert meta["digital_source_type"] == "compositeSynthetic"
    assert "cut" in caplog.text and "left out" in caplog.text
    # and a PNG keeps it all
    path = save_image(IMG, tmp_path / "big.png", parameters=huge, record={"blob": "x" * 100_000})
    meta = read_metadata(path)
    assert meta["parameters"] == huge and len(meta["backdrop"]["blob"]) == 100_000


def test_format_metadata_shows_it_all(tmp_path):
    path = save_image(IMG, tmp_path / "x.png", parameters=_params(), record=RECORD,
                      source_type="compositeWithTrainedAlgorithmicMedia", text={"AI_Watermark": "backdrop"})
    text = format_metadata(read_metadata(path))
    assert "compositeWithTrainedAlgorithmicMedia" in text
    assert "Negative prompt: blurry, text" in text and "Seed: 1234" in text
    assert "AI_Watermark: backdrop" in text
    assert '"seeds": [' in text and "ünïcödé ✓" in text


# -- atomic saves -----------------------------------------------------------------------------------------


def test_save_encoding_failure_leaves_nothing(tmp_path):
    target = tmp_path / "f.png"
    with pytest.raises(OSError):
        save_image(Image.new("F", (8, 8)), target, parameters="x")  # PNG cannot hold float pixels
    with pytest.raises(ValueError):
        save_image(IMG, target, source_type="nope")
    assert list(tmp_path.iterdir()) == []


def test_save_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = save_image(IMG, tmp_path / "f.png", parameters="old")
    before = target.read_bytes()
    with pytest.raises(OSError):
        save_image(Image.new("F", (8, 8)), target, parameters="new")
    assert target.read_bytes() == before

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs_mod.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        save_image(IMG, target, parameters="new")
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]  # no temp file left
    assert read_metadata(target)["parameters"] == "old"


def test_saved_file_is_not_private(tmp_path):
    """Written through mkstemp (0600) but must end up as an ordinary file (0666 & ~umask)."""
    path = save_image(IMG, tmp_path / "f.png", parameters="x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def test_no_temp_name_visible_after_save(tmp_path):
    for i in range(3):
        save_image(IMG, tmp_path / f"f{i}.jpg", parameters="x", record={"i": i})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["f0.jpg", "f1.jpg", "f2.jpg"]
    assert not any(re.search(r"\.tmp$", n) for n in names)


def test_encode_image_bytes_match_read_back():
    data = encode_image(IMG, "PNG", parameters="p", record={"a": 1}, source_type="compositeSynthetic")
    assert read_metadata(data)["backdrop"] == {"a": 1}
    data = encode_image(IMG.convert("RGBA"), "JPEG", parameters="p")  # RGBA is flattened for JPEG
    assert Image.open(io.BytesIO(data)).mode == "RGB"
