"""The studio's real Streamlit script driven by streamlit.testing (AppTest), both pages.

Text to image runs a tiny random Stable Diffusion pipeline saved to a temporary folder (typed
into the model field); the background page runs the weight-free backends on a generated
image. Every saved image is read back with read_metadata (PNG and JPEG).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from backdrop.metadata import read_metadata  # noqa: E402
from backdrop.studio import APP  # noqa: E402

TIMEOUT = 240  # seconds per AppTest run: the first one imports torch and diffusers on a slow CPU


def scene(size=(320, 240), seed=0) -> Image.Image:
    """A green, grainy background with a red disc in the middle (a clear foreground)."""
    w, h = size
    img = Image.new("RGB", size, (60, 120, 60))
    ImageDraw.Draw(img).ellipse((w // 2 - 50, h // 2 - 50, w // 2 + 50, h // 2 + 50), fill=(220, 40, 40))
    noise = np.random.default_rng(seed).integers(-12, 13, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img, int) + noise, 0, 255).astype(np.uint8))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def out_dir(tmp_path, monkeypatch) -> Path:
    out = tmp_path / "generated"
    monkeypatch.setenv("BACKDROP_OUTPUT_DIR", str(out))
    monkeypatch.delenv("BACKDROP_STUDIO_MODEL", raising=False)
    return out


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers")
    from tiny_models import make_tiny_sd

    return make_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


def app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def values(elements) -> list[str]:
    return [e.value for e in elements]


def check_pair(png: Path, *, source_type: str, seed: int, prompt: str) -> tuple[dict, dict]:
    """The PNG and its JPEG twin carry the same record, parameters and AI_Watermark text."""
    jpg = png.with_suffix(".jpg")
    assert png.is_file() and jpg.is_file()
    metas = []
    for f, fmt in ((png, "PNG"), (jpg, "JPEG")):
        meta = read_metadata(f)
        assert meta["format"] == fmt
        assert meta["digital_source_type"] == source_type
        assert meta["parsed"]["prompt"] == prompt
        assert meta["parsed"]["fields"]["Seed"] == str(seed)
        assert meta["text"]["AI_Watermark"].startswith("Generated using ")
        assert meta["text"]["AI_Watermark"].endswith("(AI Origin Watermark)")
        assert meta["text"]["Timestamp"].startswith("20")
        assert meta["backdrop"]["file"]
        metas.append(meta)
    assert metas[0]["backdrop"] == metas[1]["backdrop"]
    return metas[0], metas[1]


# -- text to image -----------------------------------------------------------------------------------


def test_text_to_image_with_tiny_sd(tiny_sd, out_dir):
    at = app()
    assert [h.value for h in at.header] == ["Text to image"]  # the default page, at /
    at.sidebar.text_input(key="t2i_model").set_value(str(tiny_sd)).run()
    assert not at.warning, values(at.warning)  # the folder is a usable model
    at.text_area(key="t2i_prompt").set_value("a photo of the sea")
    at.sidebar.text_area(key="t2i_negative").set_value("blurry")
    at.selectbox(key="t2i_style").set_value("photographic")
    at.number_input(key="t2i_steps").set_value(2)
    at.number_input(key="t2i_width").set_value(256)
    at.number_input(key="t2i_height").set_value(264)
    at.number_input(key="t2i_count").set_value(2)
    at.selectbox(key="t2i_scheduler").set_value("euler")
    at.sidebar.checkbox(key="watermark").check()
    at.radio(key="t2i_seed_mode").set_value("Fixed").run()
    at.number_input(key="t2i_seed").set_value(1234).run()
    at.button(key="t2i_go").click().run()
    assert not at.exception, at.exception
    assert not at.error, values(at.error)
    assert any("Seed used: 1234" in v for v in values(at.success))

    pngs = sorted(out_dir.glob("*.png"))
    assert [p.name.split("_")[1] for p in pngs] == ["1234", "1235"]  # timestamp_seed_kind
    for k, png in enumerate(pngs):
        meta, jmeta = check_pair(png, source_type="trainedAlgorithmicMedia", seed=1234 + k,
                                 prompt=meta_prompt(png))
        assert meta["size"] == [256, 264]
        assert "photograph" in meta["parsed"]["prompt"] and "a photo of the sea" in meta["parsed"]["prompt"]
        assert meta["parsed"]["negative"].startswith("blurry, ")  # the user's, then the style's
        fields = meta["parsed"]["fields"]
        assert fields["Steps"] == "2" and fields["Sampler"] == "Euler"  # A1111 sampler name
        assert meta["text"]["AI_Watermark"] == f"Generated using {tiny_sd} (AI Origin Watermark)"
        rec = meta["backdrop"]
        assert rec["mode"] == "text-to-image" and rec["seed"] == 1234 + k and rec["style"] == "photographic"
        assert rec["invisible_watermark"] is True
        # the invisible watermark survives the PNG
        from backdrop.watermark import detect

        assert detect(png) == "backdrop"
        # what the page offers for download is what was written
        saved = at.session_state["t2i_results"][k]
        assert saved.png == png.read_bytes() and saved.jpeg == png.with_suffix(".jpg").read_bytes()

    # the same seed gives the same picture (the model stayed loaded: cache_resource)
    first = np.asarray(Image.open(pngs[0]))
    at.button(key="t2i_go").click().run()
    assert not at.error, values(at.error)
    again = sorted(set(out_dir.glob("*.png")) - set(pngs))
    assert len(again) == 2
    assert np.array_equal(np.asarray(Image.open(again[0])), first)


def meta_prompt(png: Path) -> str:
    return read_metadata(png)["backdrop"]["prompt"]["positive"]


def test_missing_model_says_how_to_get_it_and_app_keeps_working(tmp_path, out_dir):
    at = app()
    at.sidebar.text_input(key="t2i_model").set_value(str(tmp_path / "no-such-model")).run()
    warnings = values(at.warning)
    assert len(warnings) == 1 and "backdrop models pull sd15" in warnings[0]
    assert at.button(key="t2i_go").disabled
    # the default Hub id, absent from the (empty, offline) cache: one sentence with the pull command
    at.sidebar.text_input(key="t2i_model").set_value("stable-diffusion-v1-5/stable-diffusion-v1-5").run()
    assert values(at.warning) == [
        "Model stable-diffusion-v1-5/stable-diffusion-v1-5 is not on this machine; fetch it with "
        "`backdrop models pull sd15` or enter a local model folder in the sidebar."
    ]
    # the other page still works; its diffusion backends say the same about their model
    at.switch_page("views/new_background.py").run()
    assert not at.exception
    assert at.file_uploader(key="bg_upload") is not None
    at.sidebar.selectbox(key="bg_generate").set_value("sd-inpaint").run()
    assert any("`backdrop models pull sd15-inpainting`" in w for w in values(at.warning))
    at.sidebar.text_input(key="bg_model").set_value(str(tmp_path / "nope")).run()
    assert any("does not exist" in w and "save_pretrained" in w for w in values(at.warning))


def test_broken_model_folder_shows_one_line_error(tmp_path, out_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json", encoding="utf-8")
    at = app()
    at.sidebar.text_input(key="t2i_model").set_value(str(broken)).run()
    at.text_area(key="t2i_prompt").set_value("a beach")
    at.button(key="t2i_go").click().run()
    assert not at.exception, at.exception
    errors = values(at.error)
    assert len(errors) == 1 and errors[0].startswith("Generation failed (seed ") and "\n" not in errors[0]
    assert not out_dir.exists() or not any(out_dir.iterdir())
    # still usable: switch page and back
    at.switch_page("views/new_background.py").run()
    assert not at.exception


def test_styles_file_adds_presets(tmp_path, out_dir):
    styles = tmp_path / "my_styles.toml"
    styles.write_text('[underwater]\ndescription = "under the sea"\nprompt = "underwater photo of {prompt}, caustics"\n'
                      'negative = "fish"\n', encoding="utf-8")
    at = app()
    assert "underwater" not in at.selectbox(key="t2i_style").options
    at.sidebar.text_input(key="t2i_styles_file").set_value(str(styles)).run()
    at.selectbox(key="t2i_style").set_value("underwater")
    at.text_area(key="t2i_prompt").set_value("a reef").run()
    assert any("underwater photo of a reef, caustics" in v and "fish" in v for v in values(at.caption))
    at.sidebar.text_input(key="t2i_styles_file").set_value(str(tmp_path / "missing.toml")).run()
    assert len(at.error) == 1 and "missing.toml" in at.error[0].value  # said in one line; bundled styles stay


# -- new background ------------------------------------------------------------------------------------


def to_background_page(at: AppTest) -> AppTest:
    at.switch_page("views/new_background.py").run()
    assert not at.exception, at.exception
    for key, name in (("bg_segment", "classical"), ("bg_inpaint", "telea"), ("bg_caption", "describe"),
                      ("bg_refine", "template"), ("bg_generate", "texture")):
        at.sidebar.selectbox(key=key).set_value(name)
    at.run()
    assert not at.warning, values(at.warning)
    return at


def test_new_background_weight_free(out_dir):
    at = to_background_page(app())
    # one uploaded image: swap (backgrounds of a set's other images) needs a batch, so it is not offered
    options = at.sidebar.selectbox(key="bg_generate").options
    assert "random" in options and "swap" not in options
    img = scene()
    at.file_uploader(key="bg_upload").set_value(("../../etc/My scan (1).png", png_bytes(img), "image/png")).run()
    assert not at.error, values(at.error)
    at.button(key="bg_analyse").click().run()
    assert not at.exception and not at.error, (at.exception, values(at.error))
    analysis = at.session_state["bg_analysis"]
    mask = np.asarray(analysis.mask)
    assert mask[120, 160] == 255 and mask[5, 5] == 0  # the disc is foreground, the corner is not
    refined = at.text_area(key="bg_prompt").value
    assert analysis.caption and refined and "green" in analysis.caption
    assert any("Caption:" in v for v in values(at.markdown))

    edited = refined + ", mossy forest floor"
    at.text_area(key="bg_prompt").set_value(edited)
    at.number_input(key="bg_variants").set_value(2)
    at.radio(key="bg_seed_mode").set_value("Fixed").run()
    at.number_input(key="bg_seed").set_value(42).run()
    at.button(key="bg_go").click().run()
    assert not at.exception and not at.error, (at.exception, values(at.error))
    assert any("Seed used: 42" in v for v in values(at.success))

    saved = at.session_state["bg_results"]
    assert [(s.kind, s.seed) for s in saved] == [("composite-1", 42), ("background-1", 42),
                                                 ("composite-2", 43), ("background-2", 43)]
    # download names come from the sanitised upload name, never the raw one
    assert saved[0].png_name == "My_scan_1_42_composite.png"
    files = sorted(p.name for p in out_dir.iterdir())
    assert len(files) == 8 and all(".." not in f and "scan" not in f for f in files)
    for s in saved:
        kind = s.kind.split("-")[0]
        meta, _ = check_pair(s.png_path, source_type="compositeSynthetic" if kind == "composite" else "algorithmicMedia",
                             seed=s.seed, prompt="")  # texture reads no prompt: none is recorded as if it had
        rec = meta["backdrop"]
        assert rec["mode"] == "new-background" and rec["caption"] == analysis.caption
        assert rec["refined_prompt"]["positive"] == refined and rec["prompt_edited"] is True
        assert rec["variant"]["seed"] == s.seed and rec["input"]["upload"] == "My_scan_1_.png"
        assert rec["backends"]["segment"]["name"] == "classical" and rec["backends"]["generate"]["name"] == "texture"
        assert "AI_Watermark" in meta["text"]
    # the composite keeps the foreground pixel for pixel
    comp = np.asarray(Image.open(saved[0].png_path))
    assert np.array_equal(comp[mask == 255], np.asarray(img)[mask == 255])
    assert not np.array_equal(comp, np.asarray(img))

    # the zip offered for "download all" holds every image in both formats
    import zipfile

    from backdrop.studio.core import zip_of

    with zipfile.ZipFile(io.BytesIO(zip_of(saved))) as zf:
        names = zf.namelist()
        assert len(names) == 8 and "My_scan_1_43_background.jpg" in names
        assert read_metadata(zf.read("My_scan_1_42_composite.png"))["backdrop"]["variant"]["seed"] == 42


def test_upload_that_is_not_an_image_is_refused(out_dir):
    at = to_background_page(app())
    at.file_uploader(key="bg_upload").set_value(("photo.png", b"GIF89a not really" + b"\0" * 64, "image/png")).run()
    assert not at.exception
    errors = values(at.error)
    assert len(errors) == 1 and errors[0].startswith("This file cannot be used: upload:")
    assert "photo.png" not in errors[0]  # the uploaded name is not echoed as a path
    assert "bg_go" not in [b.key for b in at.button]
    # a real image afterwards works
    at.file_uploader(key="bg_upload").set_value(("ok.png", png_bytes(scene(seed=3)), "image/png")).run()
    assert not at.error
    at.button(key="bg_analyse").click().run()
    assert at.session_state["bg_analysis"].caption


def test_random_seed_is_drawn_and_shown(out_dir):
    at = to_background_page(app())
    at.file_uploader(key="bg_upload").set_value(("x.png", png_bytes(scene(seed=5)), "image/png")).run()
    at.button(key="bg_analyse").click().run()
    at.number_input(key="bg_variants").set_value(1).run()
    at.button(key="bg_go").click().run()
    seed = at.session_state["bg_used_seed"]
    assert isinstance(seed, int)
    assert any(f"Seed used: {seed}" in v for v in values(at.success))
    rec = read_metadata(at.session_state["bg_results"][0].jpeg_path)["backdrop"]
    assert rec["seed"] == seed and json.dumps(rec)
