"""Model families, LoRA, tiny VAE, batched variants and device plans of the diffusion generators.

Every model is a tiny random one built in code (tests/tiny_models.py) and loaded back through
diffusers' real AutoPipeline / from_pretrained / load_lora_weights paths.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("diffusers")

import tiny_models  # noqa: E402
from conftest_models import tiny_lcm, tiny_sdxl, tiny_taesd  # noqa: E402,F401  (session fixtures)

from backdrop.config import GenerateConfig, PipelineConfig  # noqa: E402
from backdrop.devices import pick_threads  # noqa: E402
from backdrop.errors import ConfigError, ModelNotFoundError  # noqa: E402
from backdrop.generate import GENERATORS  # noqa: E402
from backdrop.generate.diffusion import (  # noqa: E402
    PROFILES,
    Img2ImgGenerator,
    InpaintGenerator,
    LoraSpec,
    Txt2ImgGenerator,
    a1111_extra,
    a1111_lora_hash,
    auto_batch,
    guess_profile,
    load_plan,
)
from backdrop.metadata import a1111_parameters, parse_a1111  # noqa: E402
from backdrop.types import GenerateRequest, Prompt  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

W, H = 80, 56


def _request(seed: int, progress=None, prompt: str = "a photo of the sky") -> GenerateRequest:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "RGB")
    mask = np.zeros((H, W), np.uint8)
    mask[16:40, 24:56] = 255
    return GenerateRequest(image=img, mask=Image.fromarray(mask, "L"),
                           background=Image.fromarray(np.full((H, W, 3), (90, 140, 200), np.uint8), "RGB"),
                           known=Image.fromarray(255 - mask, "L"), prompt=Prompt(prompt, "blurry"), seed=seed,
                           progress=progress)


def _requests(seeds, progress=None) -> list[GenerateRequest]:
    """The variants of one image: the same image objects and prompt, one seed each."""
    base = _request(seeds[0], progress)
    return [GenerateRequest(base.image, base.mask, base.background, base.known, base.prompt, s, progress)
            for s in seeds]


def _cfg(model, backend="sd-txt2img", **kw) -> GenerateConfig:
    kw.setdefault("short_side", 64)
    return GenerateConfig(backend=backend, model=str(model), device="cpu", **kw)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, np.int16)


@pytest.fixture(scope="module")
def loras(tiny_sd, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return {
        "style": tiny_models.make_tiny_lora(folder / "style.safetensors", tiny_sd),
        # an LCM-LoRA under a neutral name: recognised from its safetensors metadata only
        "meta-lcm": tiny_models.make_tiny_lora(folder / "distilled.safetensors", tiny_sd,
                                               metadata={"ss_output_name": "lcm-lora-tiny"}, seed=1),
    }


# -- model families and profiles ------------------------------------------------------------------


def test_sd15_profile_fills_unset_settings(tiny_sd):
    gen = Txt2ImgGenerator(_cfg(tiny_sd, short_side=None))
    assert not gen.loaded, "constructing a generator loads nothing"
    gen.load()
    assert gen.profile.name == "sd15"
    assert (gen.steps, gen.guidance, gen.short_side) == (30, 7.5, 512)
    mine = Txt2ImgGenerator(_cfg(tiny_sd, steps=3, guidance=2.0, short_side=64))
    assert (mine.steps, mine.guidance, mine.short_side) == (3, 2.0, 64), "the user's options win"


def test_sdxl_through_autopipeline(tiny_sdxl):
    gen = Txt2ImgGenerator(_cfg(tiny_sdxl, steps=2))
    out = gen(_request(seed=1))
    assert type(gen.load()).__name__ == "StableDiffusionXLPipeline"
    assert out.size == (W, H) and out.mode == "RGB"
    info = gen.describe()
    assert info["profile"] == "sdxl" and info["cfg_scale"] == 5.0 and info["steps"] == 2
    assert info["sampler"] == "Euler" and info["scheduler"] == "EulerDiscreteScheduler"
    assert gen.profile.size == 1024, "SDXL's native size"
    assert np.array_equal(_arr(out), _arr(gen(_request(seed=1)))), "same seed, same image"
    for cls in (InpaintGenerator, Img2ImgGenerator):
        other = cls(_cfg(tiny_sdxl, backend=cls.name, steps=2))
        assert other(_request(seed=2)).size == (W, H)
        assert type(other.load()).__name__.startswith("StableDiffusionXL")


def test_turbo_profile_one_step_no_cfg(tmp_path):
    folder = tiny_models.make_tiny_sdxl(tmp_path / "my-model", turbo=True)  # no hint in the name
    gen = Txt2ImgGenerator(_cfg(folder))
    calls = []
    out = gen(_request(seed=1, progress=lambda s, t: calls.append((s, t))))
    assert out.size == (W, H)
    assert gen.profile.name == "sdxl-turbo", "trailing timesteps mark a Turbo model"
    assert calls == [(1, 1)], "one denoising step"
    assert gen.describe()["cfg_scale"] == 0.0
    # img2img at the default strength still gets a step to run
    img = Img2ImgGenerator(_cfg(folder, backend="sd-img2img", strength=0.6))
    assert img(_request(seed=1)).size == (W, H) and img.steps == 2
    assert guess_profile("stabilityai/sd-turbo").name == "sd-turbo"
    assert guess_profile("sdxl-turbo").family == "sdxl"


def test_lcm_model_profile_and_sampler(tiny_lcm):
    gen = Txt2ImgGenerator(_cfg(tiny_lcm))
    out = gen(_request(seed=1))
    assert type(gen.load()).__name__ == "LatentConsistencyModelPipeline"  # it takes no negative prompt
    assert out.size == (W, H)
    info = gen.describe()
    assert info["profile"] == "lcm" and info["steps"] == 4 and info["sampler"] == "LCM"
    img = Img2ImgGenerator(_cfg(tiny_lcm, backend="sd-img2img"))
    assert img(_request(seed=1)).size == (W, H)


def test_profile_option_overrides_detection(tiny_sd):
    gen = Txt2ImgGenerator(_cfg(tiny_sd, profile="sd-turbo"))
    gen(_request(seed=1))
    assert gen.profile.name == "sd-turbo" and gen.steps == 1 and gen.guidance == 0.0


# -- LoRA -----------------------------------------------------------------------------------------


def test_lora_changes_the_image_and_is_recorded_as_a1111_does(tiny_sd, loras):
    plain = Txt2ImgGenerator(_cfg(tiny_sd, steps=2))(_request(seed=1))
    gen = Txt2ImgGenerator(_cfg(tiny_sd, steps=2, lora=(f"{loras['style']}:0.7",)))
    styled = gen(_request(seed=1))
    assert np.abs(_arr(styled) - _arr(plain)).max() > 0, "a LoRA must change the output"
    info = gen.describe()
    raw = loras["style"].read_bytes()
    header = int.from_bytes(raw[:8], "little")
    expected = hashlib.sha256(raw[8 + header:]).hexdigest()[:12]
    assert a1111_lora_hash(loras["style"]) == expected
    assert info["lora"] == [{"name": "style", "scale": 0.7, "hash": expected, "source": str(loras["style"]),
                             "lcm": False}]
    assert info["profile"] == "sd15", "an ordinary LoRA keeps the profile"
    extra = a1111_extra(info)
    assert info["a1111"] == extra
    assert extra["Lora hashes"] == f"style: {expected}" and extra["prompt_suffix"] == " <lora:style:0.7>"
    text = a1111_parameters("a beach" + extra["prompt_suffix"], "blurry", steps=2, sampler=info["sampler"],
                            extra={"Lora hashes": extra["Lora hashes"]})
    parsed = parse_a1111(text)
    assert parsed["prompt"] == "a beach <lora:style:0.7>"
    assert parsed["fields"]["Lora hashes"] == f"style: {expected}"

    zero = Txt2ImgGenerator(_cfg(tiny_sd, steps=2, lora=(f"{loras['style']}:0",)))(_request(seed=1))
    assert np.abs(_arr(zero) - _arr(plain)).max() <= 2, "scale 0 leaves the model as it was"


def test_lcm_lora_recognised_by_metadata_switches_to_lcm(tiny_sd, tiny_taesd, loras):
    gen = Txt2ImgGenerator(_cfg(tiny_sd, lora=(str(loras["meta-lcm"]),), tiny_vae=str(tiny_taesd)))
    calls = []
    out = gen(_request(seed=1, progress=lambda s, t: calls.append(s)))
    assert out.size == (W, H)
    info = gen.describe()
    assert info["profile"] == "sd15+lcm-lora" and info["sampler"] == "LCM" and info["scheduler"] == "LCMScheduler"
    assert info["steps"] == 4 and info["cfg_scale"] == 1.0 and len(calls) == 4
    assert info["lora"][0]["lcm"] is True
    assert info["vae"] == str(tiny_taesd) and info["a1111"]["VAE"] == tiny_taesd.name
    assert type(gen.load().vae).__name__ == "AutoencoderTiny"


def test_lcm_lora_from_the_store_by_name(tiny_sd, loras, tmp_path):
    from typer.testing import CliRunner

    from backdrop.cli import app

    missing = Txt2ImgGenerator.availability(_cfg(tiny_sd, lora=("lcm",)))
    assert missing and "backdrop models pull lcm-lora-sdv1-5" in missing
    with pytest.raises(ModelNotFoundError, match="backdrop models pull lcm-lora-sdv1-5") as err:
        Txt2ImgGenerator(_cfg(tiny_sd, lora=("lcm",))).load()
    assert "\n" not in str(err.value)

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "pytorch_lora_weights.safetensors").write_bytes(loras["style"].read_bytes())
    pulled = CliRunner().invoke(app, ["models", "pull", "lcm-lora-sdv1-5", "--source", str(snapshot)])
    assert pulled.exit_code == 0, pulled.output
    assert Txt2ImgGenerator.availability(_cfg(tiny_sd, lora=("lcm",))) is None
    gen = Txt2ImgGenerator(_cfg(tiny_sd, lora=("lcm",)))  # the family's LCM-LoRA, by its store name
    gen(_request(seed=1))
    info = gen.describe()
    assert info["lora"][0]["name"] == "lcm-lora-sdv1-5" and info["lora"][0]["lcm"] is True, "known by its name"
    assert info["profile"] == "sd15+lcm-lora"


def test_missing_lora_is_one_line_naming_it(tiny_sd, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source, words in [(str(tmp_path / "nope.safetensors"), "nope"),
                          ("someone/no-such-lora", "hf download someone/no-such-lora")]:
        assert words in Txt2ImgGenerator.availability(_cfg(tiny_sd, lora=(source,)))
        with pytest.raises(ModelNotFoundError) as err:
            Txt2ImgGenerator(_cfg(tiny_sd, lora=(source,))).load()
        assert "\n" not in str(err.value) and words in str(err.value)


def test_lora_spec_parsing():
    assert LoraSpec.parse("a/b:0.5") == LoraSpec("a/b", 0.5)
    assert LoraSpec.parse("/x/y.safetensors") == LoraSpec("/x/y.safetensors", 1.0)
    assert LoraSpec.parse("C:\\l\\z.safetensors").source == "C:\\l\\z.safetensors"
    with pytest.raises(ConfigError):
        Txt2ImgGenerator(GenerateConfig(backend="sd-txt2img", lora=("",)))
    cfg = PipelineConfig.from_dict({"generate": {"lora": ["a:0.5", "b"]}})
    assert cfg.generate.lora == ("a:0.5", "b")
    with pytest.raises(ConfigError, match="generate.lora"):
        PipelineConfig.from_dict({"generate": {"lora": [1, 2]}})


# -- tiny VAE -------------------------------------------------------------------------------------


def test_tiny_vae_auto_from_the_store(tiny_sd, tiny_taesd):
    from backdrop import models

    reason = Txt2ImgGenerator.availability(_cfg(tiny_sd, tiny_vae="auto"))
    assert reason and "backdrop models pull taesd" in reason
    models.pull("taesd", source=tiny_taesd, progress=False)
    full = Txt2ImgGenerator(_cfg(tiny_sd, steps=2))
    tiny = Txt2ImgGenerator(_cfg(tiny_sd, steps=2, tiny_vae="auto"))
    a, b = full(_request(seed=1)), tiny(_request(seed=1))
    assert type(tiny.load().vae).__name__ == "AutoencoderTiny" and tiny.describe()["vae"] == "taesd"
    assert a.size == b.size and np.abs(_arr(a) - _arr(b)).max() > 0, "another decoder, other pixels"


def test_vae_tiling_and_slicing_are_set(tiny_sd):
    gen = Txt2ImgGenerator(_cfg(tiny_sd, steps=1, vae_tiling=True))
    vae = gen.load().vae
    assert vae.use_tiling and vae.use_slicing
    assert gen(_request(seed=1)).size == (W, H)


# -- batched variants -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny_sd", "tiny_sdxl"])
def test_a_variant_is_the_same_alone_or_in_a_batch(model, request):
    folder = request.getfixturevalue(model)
    gen = Txt2ImgGenerator(_cfg(folder, steps=2, batch_size=4))
    seeds = [11, 12, 13, 14]
    batch = gen.generate_batch(_requests(seeds))
    assert gen.describe()["batch_size"] == 4
    alone = [gen(_request(s)) for s in seeds]
    for b, a in zip(batch, alone):
        assert b.size == (W, H)
        # one generator per variant: the same noise; a batched matmul may differ in the last bits,
        # which moves a pixel by at most one or two levels of 255
        assert np.abs(_arr(b) - _arr(a)).max() <= 2
    assert len({im.tobytes() for im in batch}) == 4


def test_batches_split_by_batch_size_with_one_progress(tiny_sd):
    gen = InpaintGenerator(_cfg(tiny_sd, backend="sd-inpaint", steps=2, batch_size=2))
    calls = []
    out = gen.generate_batch(_requests([1, 2, 3], progress=lambda s, t: calls.append((s, t))))
    assert len(out) == 3 and all(im.size == (W, H) for im in out)
    assert [s for s, _ in calls] == list(range(1, len(calls) + 1)) and calls[-1][0] == calls[-1][1]
    alone = gen(_request(3))
    assert np.abs(_arr(out[2]) - _arr(alone)).max() <= 2


def test_generate_batch_with_other_images_or_prompts_goes_one_by_one(tiny_sd):
    gen = Txt2ImgGenerator(_cfg(tiny_sd, steps=1))
    mixed = [_request(1), _request(2, prompt="a photo of the sea")]
    out = gen.generate_batch(mixed)
    assert np.abs(_arr(out[1]) - _arr(gen(mixed[1]))).max() <= 2
    assert gen.generate_batch([]) == []


def test_pipeline_facing_attributes():
    for name in ("sd-txt2img", "sd-inpaint", "sd-img2img"):
        cls = GENERATORS.load(name)
        assert cls.uses_prompt is True and callable(cls.generate_batch) and callable(cls.max_batch)
    gen = Txt2ImgGenerator(GenerateConfig(backend="sd-txt2img", device="cpu", batch_size=3))
    assert gen.max_batch() == 3 and gen.batch_size == 3 and not gen.loaded
    assert Txt2ImgGenerator(GenerateConfig(backend="sd-txt2img", device="cpu")).max_batch(512, 512) == 4


def test_auto_batch_per_device():
    assert auto_batch("cpu", 512, 512, cfg=True) == 4
    assert auto_batch("cpu", 1024, 1024, cfg=True) == 1
    assert auto_batch("mps", 512, 512, cfg=False) == 1
    assert auto_batch("cuda", 512, 512, cfg=False, free_bytes=40 << 30) == 8
    assert auto_batch("cuda", 1024, 1024, cfg=True, free_bytes=10 << 30, family="sdxl") == 1
    assert auto_batch("cuda", 512, 512, cfg=True, free_bytes=None) == 1


# -- devices: the CUDA plan (decided without a GPU) and threads --------------------------------------


def test_cuda_plan_fp16_channels_last_compile_offload():
    plan = load_plan(GenerateConfig(compile=True), "cuda", "float16")
    assert plan.channels_last and plan.compile and plan.offload is None and plan.vae_slicing
    assert load_plan(GenerateConfig(offload=True), "cuda", "float16").offload == "model"
    seq = load_plan(GenerateConfig(offload=True, offload_mode="sequential", compile=True), "cuda", "float16")
    assert seq.offload == "sequential" and not seq.compile, "a compiled graph would be rebuilt per layer move"
    cpu = load_plan(GenerateConfig(offload=True, compile=True, vae_tiling=True), "cpu", "float32")
    assert cpu.offload is None and not cpu.compile and not cpu.channels_last and cpu.vae_tiling
    from backdrop.devices import pick_dtype

    assert str(pick_dtype("cuda")) == "torch.float16"


def test_describe_records_the_cuda_plan_offload_and_compile():
    """run.json says how the UNet ran: the plan's offload and compile are recorded with the torch
    runtime (a merge once nested them under the OpenVINO branch, where they never apply)."""
    from backdrop.generate.diffusion import Txt2ImgGenerator

    config = GenerateConfig(backend="sd-txt2img", model="some/model", offload=True, compile=True)
    gen = Txt2ImgGenerator(config)
    gen._plan = load_plan(config, "cuda", "float16")  # what _load decides on a GPU (none is lent here)
    info = gen.describe()
    assert info["runtime"] == "torch" and info["device"] == "cuda" and info["offload"] == "model"
    assert info["compile"] is True
    gen._plan = load_plan(config, "cpu", "float32")
    assert "offload" not in gen.describe() and "compile" not in gen.describe()


def test_thread_choice(monkeypatch):
    import os

    monkeypatch.delenv("BACKDROP_THREADS", raising=False)
    assert pick_threads(3) == 3
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    idle = pick_threads()
    assert 1 <= idle <= (os.cpu_count() or 1)
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    assert pick_threads() == 1, "a busy machine gets one thread, not every logical CPU"
    monkeypatch.setenv("BACKDROP_THREADS", "5")
    assert pick_threads() == 5 and pick_threads(2) == 2
    monkeypatch.setenv("BACKDROP_THREADS", "many")
    with pytest.raises(ConfigError, match="BACKDROP_THREADS"):
        pick_threads()


def test_cli_passes_the_new_generate_options(tmp_path, tiny_sd, loras):
    from typer.testing import CliRunner

    import make_bad_inputs as bad
    from backdrop.cli import app
    from backdrop.metadata import read_metadata

    src = bad.scene(tmp_path, "thing.png", width=96, height=64)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "run", str(src), "-o", str(out), "-n", "3", "--seed", "5", "--preset", "offline", "--generator", "sd-txt2img",
        "--sd-model", str(tiny_sd), "--steps", "2", "--short-side", "64", "--device", "cpu",
        "--lora", f"{loras['style']}:0.5", "--batch-size", "2", "--threads", "1", "--prompt", "a photo of the sky"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "thing" / "run.json").read_text())
    gen = run["backends"]["generate"]
    assert gen["profile"] == "sd15" and gen["sampler"] == "PLMS"
    assert gen["lora"][0]["name"] == "style" and gen["lora"][0]["scale"] == 0.5
    assert run["config"]["generate"]["lora"] == [f"{loras['style']}:0.5"]
    assert run["config"]["generate"]["batch_size"] == 2 and run["config"]["refine"]["threads"] == 1
    fields = read_metadata(out / "thing" / "composite_1.png")["parsed"]["fields"]
    assert fields["Sampler"] == "PLMS" and fields["Steps"] == "2"


def test_studio_lora_tiny_vae_and_presets(tiny_sd, tiny_taesd, loras):
    from backdrop.generate.diffusion import load_txt2img
    from backdrop.studio import core

    assert core.speed_settings("custom", f"{loras['style']}:0.5\n") == {
        "lora": (f"{loras['style']}:0.5",), "tiny_vae": None, "profile_sampling": False, "scheduler": None}
    fast = core.speed_settings("fast", "", str(tiny_taesd))
    assert fast["lora"] == ("lcm",) and fast["tiny_vae"] == str(tiny_taesd)
    assert "backdrop models pull lcm-lora-sdv1-5" in core.model_problem(str(tiny_sd), "cpu", lora=fast["lora"])
    assert core.speed_settings("quality")["scheduler"] == "dpm++"

    gen = core.Txt2Img(load_txt2img(_cfg(tiny_sd, lora=(f"{loras['style']}:0.5",), tiny_vae=str(tiny_taesd))))
    images, described = gen.generate(Prompt("a photo of the sea", "blurry"), seed=3, width=64, height=64,
                                     num_images=2, steps=2, guidance=None, scheduler="default")
    assert len(images) == 2 and described["steps"] == 2 and described["cfg_scale"] == 7.5  # the profile's CFG
    text = core.a1111_for(Prompt("a photo of the sea", "blurry"), described, seed=3, size=(64, 64), model="m")
    parsed = parse_a1111(text)
    assert parsed["prompt"] == "a photo of the sea <lora:style:0.5>"
    assert parsed["fields"]["Lora hashes"] == f"style: {a1111_lora_hash(loras['style'])}"
    assert parsed["fields"]["VAE"] == tiny_taesd.name and parsed["fields"]["Sampler"] == "PLMS"
