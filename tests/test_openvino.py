"""The OpenVINO runtime of the diffusion generators (``--runtime openvino``), on tiny random models.

Every model is built in code (tests/tiny_models.py) and loaded through diffusers' real
from_pretrained paths; the UNet and VAE decoder are really converted with openvino.convert_model,
cached under $BACKDROP_HOME (a fresh folder per test) and compiled for this CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ov = pytest.importorskip("openvino")
torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import make_bad_inputs as bad  # noqa: E402
import tiny_models  # noqa: E402
from conftest_models import tiny_lcm, tiny_sdxl, tiny_taesd  # noqa: E402,F401  (session fixtures)
from typer.testing import CliRunner  # noqa: E402

from backdrop.cli import app  # noqa: E402
from backdrop.config import GenerateConfig  # noqa: E402
from backdrop.errors import ConfigError, MissingDependencyError  # noqa: E402
from backdrop.generate import ov_runtime  # noqa: E402
from backdrop.generate.diffusion import Img2ImgGenerator, InpaintGenerator, Txt2ImgGenerator  # noqa: E402
from backdrop.types import GenerateRequest, Prompt  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

W, H = 80, 56
ROOT = Path(__file__).resolve().parents[1]


def _requests(seeds, prompt="a photo of the sky") -> list[GenerateRequest]:
    """The variants of one image: the same image objects and prompt, one seed each."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "RGB")
    mask = np.zeros((H, W), np.uint8)
    mask[16:40, 24:56] = 255
    m = Image.fromarray(mask, "L")
    bg = Image.fromarray(np.full((H, W, 3), (90, 140, 200), np.uint8), "RGB")
    return [GenerateRequest(img, m, bg, Image.fromarray(255 - mask, "L"), Prompt(prompt, "blurry"), s)
            for s in seeds]


def _gen(model, cls=Txt2ImgGenerator, **kw):
    kw.setdefault("short_side", 64)
    kw.setdefault("steps", 2)
    gen = cls(GenerateConfig(backend=cls.name, model=str(model), device="cpu", threads=1, **kw))
    gen.load()
    return gen


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, np.int16)


def _entries(home: Path) -> list[Path]:
    root = home / "cache" / "openvino"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _home() -> Path:
    return Path(os.environ["BACKDROP_HOME"])


def _ran_in_openvino(gen) -> None:
    """The torch UNet could not have run: its weights are gone, and the compiled models were called."""
    assert gen._ov is not None
    assert sum(p.numel() for p in gen._pipe.unet.parameters()) == 0
    assert gen._ov.unet._compiled, "the OpenVINO UNet was never called"


def _unet_vs_torch(gen, model, shape=(2, 4, 9, 13)) -> float:
    """max |OpenVINO UNet - torch UNet| / max |torch UNet| on one random input (a fresh torch UNet)."""
    from diffusers import UNet2DConditionModel

    ref = UNet2DConditionModel.from_pretrained(Path(model) / "unet").eval()
    g = torch.Generator("cpu").manual_seed(0)
    cfg = ref.config
    x = torch.randn(shape[0], cfg.in_channels, *shape[2:], generator=g)
    ehs = torch.randn(shape[0], 77, cfg.cross_attention_dim, generator=g)
    kw = {}
    if cfg.time_cond_proj_dim is not None:
        kw["timestep_cond"] = torch.randn(shape[0], cfg.time_cond_proj_dim, generator=g)
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(shape[0], pooled, generator=g),
                                   "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * shape[0])}
    t = torch.tensor(321)
    with torch.no_grad():
        want = ref(x, t, ehs, return_dict=False, **kw)[0]
        got = gen._pipe.unet(x, t, ehs, return_dict=False, **kw)[0]
    assert got.shape == want.shape
    return ((got - want).abs().max() / want.abs().max()).item()


# -- (a) the image matches torch's ------------------------------------------------------------------------


@pytest.mark.parametrize("vae", ["taesd", "full"])
def test_f32_image_matches_torch(tiny_sd, tiny_taesd, vae):
    tiny = str(tiny_taesd) if vae == "taesd" else None
    torch_gen = _gen(tiny_sd, tiny_vae=tiny)
    ov_gen = _gen(tiny_sd, tiny_vae=tiny, runtime="openvino", openvino_precision="f32")
    seeds = [3, 4]
    want = torch_gen.generate_batch(_requests(seeds))
    got = ov_gen.generate_batch(_requests(seeds))
    _ran_in_openvino(ov_gen)
    assert ov_gen._ov.decoder._compiled, "the OpenVINO decoder was never called"
    for a, b in zip(want, got):
        assert a.size == b.size == (W, H)
        diff = np.abs(_arr(a) - _arr(b))
        assert diff.max() <= 2 and diff.mean() <= 0.05, (diff.max(), diff.mean())
    assert not np.array_equal(_arr(got[0]), _arr(got[1]))  # the seeds still differ
    # the UNet itself, at a latent size that is not a multiple of its up-sampling factor (odd: 9x13)
    assert _unet_vs_torch(ov_gen, tiny_sd) < 1e-4


# -- (b) LCM-distilled, SDXL and inpainting UNets ---------------------------------------------------------------


def test_lcm_distilled_unet_with_timestep_cond(tiny_lcm):
    torch_gen = _gen(tiny_lcm)
    ov_gen = _gen(tiny_lcm, runtime="openvino", openvino_precision="f32")
    assert "timestep_cond" in ov_gen._ov.names
    want, got = torch_gen.generate_batch(_requests([5]))[0], ov_gen.generate_batch(_requests([5]))[0]
    _ran_in_openvino(ov_gen)
    assert np.abs(_arr(want) - _arr(got)).max() <= 2
    assert _unet_vs_torch(ov_gen, tiny_lcm) < 1e-4


def test_sdxl_unet_with_added_cond_kwargs(tiny_sdxl):
    torch_gen = _gen(tiny_sdxl)
    ov_gen = _gen(tiny_sdxl, runtime="openvino", openvino_precision="f32")
    assert ov_gen._ov.names[-2:] == ["text_embeds", "time_ids"]
    want, got = torch_gen.generate_batch(_requests([5]))[0], ov_gen.generate_batch(_requests([5]))[0]
    _ran_in_openvino(ov_gen)
    assert np.abs(_arr(want) - _arr(got)).max() <= 2
    assert _unet_vs_torch(ov_gen, tiny_sdxl) < 1e-4


@pytest.mark.parametrize("cls", [InpaintGenerator, Img2ImgGenerator])
def test_inpainting_and_img2img(tiny_sd, tiny_sd_inpaint, cls):
    model = tiny_sd_inpaint if cls is InpaintGenerator else tiny_sd  # inpainting: a 9-channel UNet
    torch_gen = _gen(model, cls)
    ov_gen = _gen(model, cls, runtime="openvino", openvino_precision="f32")
    want, got = torch_gen.generate_batch(_requests([5]))[0], ov_gen.generate_batch(_requests([5]))[0]
    _ran_in_openvino(ov_gen)
    assert np.abs(_arr(want) - _arr(got)).max() <= 2


@pytest.mark.parametrize("field, value", [("addition_embed_type", "image"), ("encoder_hid_dim_type", "image_proj"),
                                          ("class_embed_type", "timestep")])
def test_unsupported_unet_is_refused(field, value):
    cfg = type("Cfg", (), {field: value})()
    with pytest.raises(ConfigError, match="runtime openvino.*--runtime torch"):
        ov_runtime.unet_inputs(cfg)


def test_inputs_the_ir_does_not_take_are_an_error_not_ignored(tiny_sd):
    from backdrop.errors import GenerationError

    gen = _gen(tiny_sd, runtime="openvino")
    x, ehs = torch.zeros(1, 4, 8, 8), torch.zeros(1, 77, 32)
    with pytest.raises(GenerationError, match="image_embeds"):
        gen._pipe.unet(x, 1, ehs, added_cond_kwargs={"image_embeds": torch.zeros(1, 4)})
    with pytest.raises(GenerationError, match="down_block_additional_residuals"):
        gen._pipe.unet(x, 1, ehs, down_block_additional_residuals=(x,))


# -- (c) batches with CFG -----------------------------------------------------------------------------------------


def test_variant_in_a_batch_matches_it_alone(tiny_sd):
    batched = _gen(tiny_sd, runtime="openvino", batch_size=3)
    alone = _gen(tiny_sd, runtime="openvino", batch_size=1)
    three = batched.generate_batch(_requests([7, 8, 9]))
    one = alone.generate_batch(_requests([8]))[0]
    _ran_in_openvino(batched)
    # CFG (guidance 7.5) doubles the UNet's batch: 3 variants -> 6, 1 -> 2
    assert [s[0][0] for s in batched._ov.unet._compiled] == [6]
    assert [s[0][0] for s in alone._ov.unet._compiled] == [2]
    diff = np.abs(_arr(three[1]) - _arr(one))
    assert diff.max() <= 2 and diff.mean() <= 0.1, (diff.max(), diff.mean())
    assert not np.array_equal(_arr(three[0]), _arr(three[1]))


# -- (d) the IR cache --------------------------------------------------------------------------------------------


def test_second_load_reuses_the_ir_and_lora_scale_changes_the_key(tiny_sd, tmp_path):
    pytest.importorskip("peft")
    home = _home()
    first = _gen(tiny_sd, runtime="openvino")
    assert first._ov.converted == ["unet", "decoder"]
    (entry,) = _entries(home)
    stamps = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    assert {"unet.xml", "unet.bin", "decoder.xml", "decoder.bin", "key.json"} <= set(stamps)

    second = _gen(tiny_sd, runtime="openvino")
    assert second._ov.converted == []  # read from the cache, not converted
    assert second._ov.folder == entry
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == stamps
    second.generate_batch(_requests([1]))
    _ran_in_openvino(second)

    lora = tiny_models.make_tiny_lora(tmp_path / "style.safetensors", tiny_sd)
    half = _gen(tiny_sd, runtime="openvino", lora=(f"{lora}:0.5",))
    full = _gen(tiny_sd, runtime="openvino", lora=(f"{lora}:1.0",))
    assert half._ov.converted and full._ov.converted  # each scale is other weights: converted anew
    assert len(_entries(home)) == 3
    assert json.loads((half._ov.folder / "key.json").read_text())["lora"][0][1] == 0.5
    # and the fused LoRA is in the IR: its images differ from the plain model's
    a = half.generate_batch(_requests([1]))[0]
    b = second.generate_batch(_requests([1]))[0]
    assert np.abs(_arr(a) - _arr(b)).max() > 2


def test_the_model_files_are_part_of_the_key(tiny_sd, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_sd, copy)
    a = _gen(copy, runtime="openvino")
    weights = next((copy / "unet").glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    b = _gen(copy, runtime="openvino")
    assert a._ov.converted and b._ov.converted and a._ov.folder != b._ov.folder


def test_a_hub_model_is_known_by_its_snapshot_files(tiny_sd, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    snapshot = tiny_models.fake_hub_cache(cache, "acme/tiny-sd", tiny_sd)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    ident = ov_runtime.source_identity("acme/tiny-sd", "model_index.json", ("model_index.json", "unet", "vae"))
    assert ident["folder"] == str(snapshot)  # the snapshot folder names the revision
    files = {row[0] for row in ident["files"]}
    assert "model_index.json" in files and any(f.startswith("unet/") for f in files)
    assert not any(f.startswith("text_encoder/") for f in files)  # what does not reach the IR is not hashed
    assert ov_runtime.source_identity("acme/not-here", "model_index.json") == {"name": "acme/not-here"}


# -- (e) two processes at once --------------------------------------------------------------------------------------

_CHILD = """
import sys, torch
torch.set_num_threads(1)
from backdrop.config import GenerateConfig
from backdrop.generate.diffusion import Txt2ImgGenerator
from backdrop.types import Prompt
gen = Txt2ImgGenerator(GenerateConfig(backend="sd-txt2img", model=sys.argv[1], device="cpu", threads=1,
                                      steps=1, runtime="openvino"))
gen.load()
image = gen.generate(Prompt("a photo of the sky"), 1, 64, 64)[0]
assert image.size == (64, 64)
print("CONVERTED", ",".join(gen._ov.converted) or "-", gen._ov.folder.name)
"""


def test_two_processes_converting_at_once_share_one_entry(tiny_sd):
    home = _home()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
           "HF_HUB_OFFLINE": "1", "BACKDROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(tiny_sd)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    lines = [next(line for line in out.splitlines() if line.startswith("CONVERTED")).split() for out, _ in outs]
    assert sorted(line[1] for line in lines) == ["-", "unet,decoder"]  # one converted, the other waited and read
    assert lines[0][2] == lines[1][2]
    assert [p.name for p in _entries(home)] == [lines[0][2]]  # one entry, no temporary folders left
    assert not [p for p in (home / "cache" / "openvino").iterdir() if p.name.startswith(".")]


# -- (f) openvino not installed -------------------------------------------------------------------------------------


def test_missing_openvino_is_one_line_naming_the_extra(tiny_sd, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an environment without openvino looks like
    cfg = GenerateConfig(backend="sd-txt2img", model=str(tiny_sd), device="cpu", runtime="openvino")
    reason = Txt2ImgGenerator.availability(cfg)
    assert reason and "backdrop[openvino]" in reason and "\n" not in reason
    assert Txt2ImgGenerator.availability(GenerateConfig(backend="sd-txt2img", model=str(tiny_sd))) is None
    with pytest.raises(MissingDependencyError, match=r"backdrop\[openvino\]"):
        Txt2ImgGenerator(cfg).load()


def test_studio_reports_missing_openvino(tiny_sd, monkeypatch):
    from backdrop.studio import core

    monkeypatch.setitem(sys.modules, "openvino", None)
    assert "backdrop[openvino]" in core.model_problem(str(tiny_sd), "cpu", runtime="openvino")
    assert core.model_problem(str(tiny_sd), "cpu") is None


def test_threads_follow_torch(tiny_sd):
    torch.set_num_threads(1)  # the module's fixture sets 1 too; --threads 1 -> torch 1 -> OpenVINO 1
    gen = _gen(tiny_sd, runtime="openvino")
    gen.generate_batch(_requests([1]))
    compiled = next(iter(gen._ov.unet._compiled.values()))[0]
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 1 == gen.describe()["openvino_threads"]
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"


def test_openvino_on_cuda_falls_back_to_torch(tiny_sd, caplog):
    gen = Txt2ImgGenerator(GenerateConfig(backend="sd-txt2img", model=str(tiny_sd), runtime="openvino"))
    with caplog.at_level("WARNING"):
        assert gen._openvino(None, "cuda") is None
    assert "CPU only" in caplog.text


def test_config_validates_runtime_and_precision():
    from backdrop.config import PipelineConfig

    with pytest.raises(ConfigError, match="generate.runtime"):
        PipelineConfig(generate=GenerateConfig(runtime="onnx"))
    with pytest.raises(ConfigError, match="generate.openvino_precision"):
        PipelineConfig(generate=GenerateConfig(openvino_precision="int8"))
    cfg = PipelineConfig(generate=GenerateConfig(runtime="openvino", openvino_precision="f32"))
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg


# -- (g) describe() -----------------------------------------------------------------------------------------------


def test_describe_records_runtime_and_the_precision_compiled(tiny_sd):
    f32 = _gen(tiny_sd, runtime="openvino", openvino_precision="f32")
    f32.generate_batch(_requests([1]))
    assert f32.describe()["runtime"] == "openvino"
    assert f32.describe()["openvino_precision"] == "f32"

    auto = _gen(tiny_sd, runtime="openvino")
    auto.generate_batch(_requests([1]))
    compiled = next(iter(auto._ov.unet._compiled.values()))[0]
    assert auto.describe()["openvino_precision"] == compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    assert auto.describe()["openvino_precision"] == ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()

    plain = _gen(tiny_sd)
    assert plain.describe()["runtime"] == "torch" and "openvino_precision" not in plain.describe()


# -- (h) through the CLI ------------------------------------------------------------------------------------------


def test_cli_run_with_runtime_openvino(tmp_path, tiny_sd):
    src = bad.scene(tmp_path, "thing.png", width=96, height=64)
    out = tmp_path / "o"
    args = ["run", str(src), "-o", str(out), "-n", "2", "--seed", "9", "--segmenter", "classical",
            "--refiner", "template", "--generator", "sd-txt2img", "--sd-model", str(tiny_sd), "--steps", "2",
            "--short-side", "64", "--device", "cpu", "--threads", "1", "--runtime", "openvino",
            "--openvino-precision", "f32", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for k in (1, 2):
        assert Image.open(out / "thing" / f"background_{k}.png").size == (96, 64)
    rec = json.loads((out / "thing" / "run.json").read_text())
    text = json.dumps(rec)
    assert '"runtime": "openvino"' in text and '"openvino_precision": "f32"' in text
    # and each image carries it in its own metadata record
    from backdrop.metadata import read_metadata

    record = json.dumps(read_metadata(out / "thing" / "composite_1.png")["backdrop"])
    assert '"runtime": "openvino"' in record and '"openvino_precision": "f32"' in record
    assert len(_entries(_home())) == 1


def test_cli_augment_with_runtime_openvino(tmp_path, tiny_sd):
    src = tmp_path / "set"
    src.mkdir()
    bad.scene(src, "a.png", width=96, height=64)
    out = tmp_path / "aug"
    args = ["augment", str(src), "-o", str(out), "-n", "1", "--seed", "3", "--format", "plain", "--segmenter",
            "classical", "--generator", "sd-txt2img", "--sd-model", str(tiny_sd), "--steps", "1", "--device", "cpu",
            "--runtime", "openvino", "-q"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = [p for p in out.rglob("*.png") if "_backdrop" not in p.parts]
    assert written
    assert '"runtime": "openvino"' in json.dumps(read_metadata_of(written[0]))
    assert len(_entries(_home())) == 1


def read_metadata_of(path):
    from backdrop.metadata import read_metadata

    return read_metadata(path)["backdrop"]
