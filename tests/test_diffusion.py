"""Stable Diffusion generators on tiny random pipelines, loaded through the real from_pretrained path."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tiny_models import fake_hub_cache  # noqa: E402

from backdrop import hf, runlog  # noqa: E402
from backdrop.composite import composite  # noqa: E402
from backdrop.config import CompositeConfig, GenerateConfig  # noqa: E402
from backdrop.devices import pick_device, pick_dtype  # noqa: E402
from backdrop.errors import ConfigError, ModelCorruptError, ModelNotFoundError  # noqa: E402
from backdrop.generate import GENERATORS  # noqa: E402
from backdrop.generate.diffusion import (  # noqa: E402
    Img2ImgGenerator,
    InpaintGenerator,
    Txt2ImgGenerator,
    generation_size,
    load_txt2img,
    text_to_image,
)
from backdrop.types import GenerateRequest, Prompt  # noqa: E402

W, H = 80, 56  # not square, not multiples of 64: generation is 88x64 (short side 64)
BACKENDS = ["sd-txt2img", "sd-inpaint", "sd-img2img"]

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _request(seed: int, progress=None) -> GenerateRequest:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "RGB")
    mask = np.zeros((H, W), np.uint8)
    mask[16:40, 24:56] = 255
    background = Image.fromarray(np.full((H, W, 3), (90, 140, 200), np.uint8), "RGB")
    return GenerateRequest(
        image=img,
        mask=Image.fromarray(mask, "L"),
        background=background,
        known=Image.fromarray(255 - mask, "L"),
        prompt=Prompt("a photo of the sky", "blurry"),
        seed=seed,
        progress=progress,
    )


def _config(name: str, model, **kw) -> GenerateConfig:
    return GenerateConfig(backend=name, model=str(model), steps=2, short_side=64, device="cpu", **kw)


@pytest.fixture(scope="module")
def generators(tiny_sd, tiny_sd_inpaint):
    """One generator per backend for the whole module: each loads its pipeline once."""
    folders = {"sd-txt2img": tiny_sd, "sd-inpaint": tiny_sd_inpaint, "sd-img2img": tiny_sd}
    return {name: GENERATORS.create(name, _config(name, folders[name])) for name in BACKENDS}


def _warm() -> None:
    """Import the heavy modules first, so that timings measure the model lookup only."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline  # noqa: F401


def _bytes(img: Image.Image) -> bytes:
    return img.tobytes()


@pytest.mark.parametrize("name", BACKENDS)
def test_seeded_size_and_reproducible(generators, name):
    gen = generators[name]
    assert gen.generative is True
    first = gen(_request(seed=1))
    pipe = gen.load()
    again = gen(_request(seed=1))
    other = gen(_request(seed=2))
    assert gen.load() is pipe, "the pipeline must be loaded once and reused"
    assert first.size == (W, H) and first.mode == "RGB"
    assert _bytes(first) == _bytes(again), "same seed must give the same image"
    assert _bytes(first) != _bytes(other), "different seeds must give different images"
    info = gen.describe()
    assert info["model"] == str(gen.config.model)
    assert info["steps"] == 2 and info["cfg_scale"] == 7.5
    assert info["size"] == "88x64"
    assert info["sampler"] == "PLMS" and info["scheduler"] == "PNDMScheduler"  # A1111 name, diffusers class
    assert info["profile"] == "sd15"
    if name == "sd-img2img":
        assert info["strength"] == 0.6


@pytest.mark.parametrize("name", BACKENDS)
def test_composite_keeps_foreground_byte_identical(generators, name):
    req = _request(seed=3)
    background = generators[name](req)
    out = composite(req.image, req.mask, background, CompositeConfig(feather=2))
    fg = np.asarray(req.mask) == 255
    assert np.array_equal(np.asarray(out)[fg], np.asarray(req.image)[fg])
    # and outside the feathered edge the new background is what shows
    far = np.ones_like(fg)
    far[10:46, 18:62] = False
    assert np.array_equal(np.asarray(out)[far], np.asarray(background)[far])


def test_progress_reports_every_step(generators):
    calls = []
    generators["sd-txt2img"](_request(seed=4, progress=lambda s, t: calls.append((s, t))))
    assert calls, "progress was never called"
    steps = [s for s, _ in calls]
    assert steps == list(range(1, len(calls) + 1))
    assert calls[-1][0] == calls[-1][1], "the last call must report step == total"


def test_inpaint_repaints_the_background_not_the_object(generators):
    gen = generators["sd-inpaint"]
    inputs = gen._inputs(_request(seed=0), 88, 64)
    repaint = np.asarray(inputs["mask_image"].resize((W, H), Image.NEAREST))
    fg = np.asarray(_request(seed=0).mask) == 255
    # white (255) = to be generated: all of the background, none of the interior of the object
    assert repaint[~fg].min() >= 250
    assert repaint[20:36, 28:52].max() <= 5
    assert inputs["image"].size == (88, 64)


def test_img2img_strength_changes_result_and_zero_keeps_background(tiny_sd):
    low = Img2ImgGenerator(_config("sd-img2img", tiny_sd, strength=0.5))
    high = Img2ImgGenerator(_config("sd-img2img", tiny_sd, strength=1.0))
    req = _request(seed=5)
    a, b = low(req), high(req)
    assert _bytes(a) != _bytes(b)
    # closer to the clean background at the lower strength
    bg = np.asarray(req.background, np.float32)
    assert np.abs(np.asarray(a, np.float32) - bg).mean() < np.abs(np.asarray(b, np.float32) - bg).mean()

    zero = Img2ImgGenerator(_config("sd-img2img", tiny_sd, strength=0.0))
    with runlog.collecting() as rec:
        kept = zero(req)
    assert _bytes(kept) == _bytes(req.background)
    assert not zero.loaded, "nothing to denoise: the model need not be loaded"
    assert rec["warnings"] and "strength" in rec["warnings"][0]


@pytest.mark.parametrize("scheduler,cls", [("ddim", "DDIMScheduler"), ("euler-a", "EulerAncestralDiscreteScheduler")])
def test_scheduler_by_name(tiny_sd, scheduler, cls):
    gen = Txt2ImgGenerator(_config("sd-txt2img", tiny_sd, scheduler=scheduler))
    assert gen.describe()["scheduler"] == cls
    out = gen(_request(seed=1))
    assert type(gen.load().scheduler).__name__ == cls
    assert out.size == (W, H)


def test_unknown_scheduler_is_a_config_error():
    with pytest.raises(ConfigError, match="scheduler"):
        Txt2ImgGenerator(GenerateConfig(backend="sd-txt2img", scheduler="warp-drive"))


def test_studio_generate_batch_matches_single_seeds(tiny_sd):
    gen = load_txt2img(_config("sd-txt2img", tiny_sd))
    assert gen.loaded
    batch = gen.generate(Prompt("a photo of the sea"), seed=10, width=64, height=72, num_images=2)
    assert [im.size for im in batch] == [(64, 72), (64, 72)]
    assert gen.describe()["size"] == "64x72"
    single = gen.generate("a photo of the sea", seed=11, width=64, height=72)[0]
    diff = np.abs(np.asarray(batch[1], np.int16) - np.asarray(single, np.int16))
    assert diff.max() <= 3, "image k of a batch must equal a single call with seed + k"
    assert _bytes(batch[0]) != _bytes(batch[1])

    one = text_to_image("a photo of the sea", "", config=_config("sd-txt2img", tiny_sd), seed=11, width=64, height=72)
    assert np.abs(np.asarray(one, np.int16) - np.asarray(single, np.int16)).max() <= 3


def test_generation_size_keeps_aspect_in_multiples_of_8():
    assert generation_size(W, H, 64) == (88, 64)
    assert generation_size(512, 1024, 512) == (512, 1024)
    w, h = generation_size(1234, 777, 512)
    assert h == 512 and w % 8 == 0 and abs(w / h - 1234 / 777) < 0.02


# -- missing models: one line, fast, no traceback-worthy surprises -------------------------------


def test_missing_local_folder(tmp_path):
    cfg = GenerateConfig(backend="sd-txt2img", model=str(tmp_path / "nope"), steps=2, short_side=64)
    assert "does not exist" in Txt2ImgGenerator.availability(cfg)
    _warm()
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as err:
        Txt2ImgGenerator(cfg)(_request(seed=1))
    assert time.monotonic() - start < 10
    assert "\n" not in str(err.value) and "nope" in str(err.value)


def test_folder_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "model_index.json").write_text("{not json", encoding="utf-8")
    cfg = GenerateConfig(backend="sd-txt2img", model=str(tmp_path), steps=2, short_side=64, device="cpu")
    with pytest.raises(ModelCorruptError) as err:
        Txt2ImgGenerator(cfg).load()
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


@pytest.mark.parametrize("name", BACKENDS)
def test_unknown_hub_id_offline(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = GenerateConfig(backend=name, model="nobody-here/no-such-model", steps=2, short_side=64, device="cpu")
    reason = GENERATORS.availability(name, cfg).reason
    assert reason.startswith("model nobody-here/no-such-model not downloaded")
    _warm()
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as err:
        GENERATORS.create(name, cfg)(_request(seed=1))
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "\n" not in msg
    assert "hf download nobody-here/no-such-model" in msg


def test_old_model_names_are_aliases(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gen = Txt2ImgGenerator(GenerateConfig(backend="sd-txt2img", model="runwayml/stable-diffusion-v1-5"))
    assert gen.model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert InpaintGenerator(GenerateConfig(backend="sd-inpaint")).model == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert hf.canonical("runwayml/stable-diffusion-inpainting") == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    with pytest.raises(ModelNotFoundError, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        gen.load()


def test_cached_hub_id_loads_offline_and_old_name_is_found(tiny_sd, tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    fake_hub_cache(cache, "runwayml/stable-diffusion-v1-5", tiny_sd)
    # only the old name is in this cache: it is used rather than failing on the new one
    assert hf.resolve("runwayml/stable-diffusion-v1-5", "model_index.json", cache) == "runwayml/stable-diffusion-v1-5"
    assert hf.missing_reason("runwayml/stable-diffusion-v1-5", "model_index.json", cache) is None
    pipe = hf.load_pretrained(
        StableDiffusionPipeline.from_pretrained,
        "runwayml/stable-diffusion-v1-5",
        "Stable Diffusion",
        index_file="model_index.json",
        cache_dir=str(cache),
        safety_checker=None,
        requires_safety_checker=False,
    )
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"
    assert pipe.safety_checker is None


# -- devices ---------------------------------------------------------------------------------------


def test_device_and_dtype_choice():
    import torch

    assert pick_device("cpu") == "cpu"
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device("auto") == expected
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("cuda") == torch.float16
    assert pick_dtype("cpu", "bfloat16") == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="cuda"):
            pick_device("cuda")
        reason = Txt2ImgGenerator.availability(GenerateConfig(backend="sd-txt2img", device="cuda"))
        assert "cuda" in reason
    with pytest.raises(ConfigError):
        pick_device("tpu")
    with pytest.raises(ConfigError):
        pick_dtype("cpu", "float8")


def test_unreachable_hub_fails_fast_with_one_line(monkeypatch):
    """Online mode but no network (conftest blocks it): a short probe, then one clear line."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert not hf.offline()
    cfg = GenerateConfig(backend="sd-txt2img", model="nobody-here/no-such-model", device="cpu")
    _warm()
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as err:
        Txt2ImgGenerator(cfg).load()
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "\n" not in msg and "cannot be reached" in msg and "huggingface-cli download" in msg


def test_backend_modules_import_no_heavy_packages():
    import subprocess
    import sys

    code = (
        "import sys, backdrop.generate.diffusion, backdrop.caption.git, backdrop.hf, backdrop.devices; "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'huggingface_hub') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


@pytest.mark.slow
def test_real_stable_diffusion_when_cached():
    """With the real SD 1.5 weights in the HF cache: a plausible (non-flat) image of the right size."""
    cfg = GenerateConfig(backend="sd-txt2img", steps=4, short_side=256)
    reason = Txt2ImgGenerator.availability(cfg)
    if reason:
        pytest.skip(reason)
    out = Txt2ImgGenerator(cfg)(_request(seed=1))
    assert out.size == (W, H)
    assert np.asarray(out, np.float32).std() > 5


def test_partly_cached_hub_id_offline_says_so(tiny_sd, tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "model_index.json").write_bytes((tiny_sd / "model_index.json").read_bytes())
    cache = tmp_path / "hub"
    fake_hub_cache(cache, "acme/half-downloaded", partial)
    _warm()
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as err:
        hf.load_pretrained(
            StableDiffusionPipeline.from_pretrained, "acme/half-downloaded", "Stable Diffusion",
            index_file="model_index.json", cache_dir=str(cache),
        )
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "\n" not in msg and "only partly" in msg and "hf download acme/half-downloaded" in msg


# -- the CLI, end to end, with the tiny models -------------------------------------------------


def test_cli_runs_sd_inpaint_and_git_from_local_folders(tmp_path, tiny_sd_inpaint, tiny_git, torch_one_thread):
    """`backdrop run --generator sd-inpaint --sd-model DIR --captioner git --caption-model DIR`."""
    import json

    from typer.testing import CliRunner

    import make_bad_inputs as bad
    from backdrop.cli import app
    from backdrop.metadata import read_metadata

    src = bad.scene(tmp_path, "thing.png", width=96, height=64)
    out = tmp_path / "out"
    args = ["run", str(src), "-o", str(out), "-n", "2", "--seed", "5", "--segmenter", "classical",
            "--refiner", "template", "--captioner", "git", "--caption-model", str(tiny_git),
            "--generator", "sd-inpaint", "--sd-model", str(tiny_sd_inpaint), "--steps", "2", "--short-side", "64",
            "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = json.loads((out / "thing" / "run.json").read_text())
    assert run["backends"]["generate"]["name"] == "sd-inpaint"
    assert run["backends"]["generate"]["model"] == str(tiny_sd_inpaint)
    assert run["backends"]["caption"]["name"] == "git" and isinstance(run["caption"], str)
    from backdrop.seeds import item_seed

    s = item_seed(5, "thing.png")  # the image's own seed, from the base seed and its name
    assert [v["seed"] for v in run["variants"]] == [s, s + 1]

    image = np.asarray(Image.open(src).convert("RGB"))
    mask = np.asarray(Image.open(out / "thing" / "mask.png")) == 255
    assert mask.any()
    comps = [np.asarray(Image.open(out / "thing" / f"composite_{k}.png").convert("RGB")) for k in (1, 2)]
    for comp in comps:
        assert comp.shape == image.shape
        assert np.array_equal(comp[mask], image[mask])  # the object, byte for byte
    assert not np.array_equal(comps[0], comps[1])  # two seeds, two backgrounds

    meta = read_metadata(out / "thing" / "composite_1.png")
    assert meta["digital_source_type"] == "compositeWithTrainedAlgorithmicMedia"
    fields = meta["parsed"]["fields"]
    assert fields["Steps"] == "2" and fields["Seed"] == str(s) and fields["Model"] == str(tiny_sd_inpaint)
    assert fields["Size"] == "96x64"  # the generation size: the input's aspect, short side 64

    again = CliRunner().invoke(app, [*args[:3], str(tmp_path / "again"), *args[4:]])
    assert again.exit_code == 0, again.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again" / "thing" / "composite_1.png").convert("RGB")),
                          comps[0])  # same seed, same pixels


def test_pulled_store_model_is_what_the_backend_loads(tmp_path, tiny_sd, torch_one_thread):
    """`backdrop models pull sd15 --source DIR`, then `--sd-model sd15` or the default Hub id load it."""
    from typer.testing import CliRunner

    from backdrop import models
    from backdrop.cli import app

    missing = CliRunner().invoke(app, ["run", "x.png", "--generator", "sd-txt2img", "--sd-model", "sd15"])
    assert missing.exit_code != 0
    pulled = CliRunner().invoke(app, ["models", "pull", "sd15", "--source", str(tiny_sd)])
    assert pulled.exit_code == 0, pulled.output
    folder = models.find("sd15")
    assert folder is not None and (folder / "model_index.json").is_file()
    for name in ("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "runwayml/stable-diffusion-v1-5"):
        gen = Txt2ImgGenerator(GenerateConfig(backend="sd-txt2img", model=name, steps=2, short_side=64, device="cpu"))
        assert hf.missing_reason(name, "model_index.json") is None
        assert hf.resolve(name, "model_index.json") == str(folder)
        out = gen(_request(seed=3))
        assert out.size == _request(seed=3).image.size


def test_store_name_not_pulled_says_how_to_pull():
    with pytest.raises(ModelNotFoundError, match=r"backdrop models pull sd15"):
        Txt2ImgGenerator(GenerateConfig(backend="sd-txt2img", model="sd15", device="cpu")).load()
