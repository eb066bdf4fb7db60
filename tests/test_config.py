"""Typed config: JSON/TOML round trips, the CLI's --config, refusals naming the field, presets."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import fields, is_dataclass

import pytest
from typer.testing import CliRunner

import make_bad_inputs as bad
from backdrop.cli import app
from backdrop.config import (
    PRESETS,
    CaptionConfig,
    CompositeConfig,
    GenerateConfig,
    InpaintConfig,
    PipelineConfig,
    RefineConfig,
    SegmentConfig,
    preset,
)
from backdrop.errors import ConfigError

CUSTOM = PipelineConfig(
    segment=SegmentConfig(backend="classical", grabcut=False, keep_components=2, threshold=100),
    inpaint=InpaintConfig(backend="ns", radius=3, dilate=4, max_side=512),
    caption=CaptionConfig(backend="describe", max_tokens=12, device="cpu"),
    refine=RefineConfig(backend="template", style="microscopy", temperature=0.7, seed=3),
    generate=GenerateConfig(backend="texture", patch=32, variation=0.0, guidance=5.0, steps=12,
                            scheduler="euler-a", dtype="float32"),
    composite=CompositeConfig(feather=0, harmonize=True),
    variants=3,
    seed=99,
    prompt='a "quoted" prompt, with unicode: 日本 ✓\nand a second line',
    negative=None,
    max_pixels=1_000_000,
)


@pytest.fixture(autouse=True)
def _restore_backdrop_logger():
    logger = logging.getLogger("backdrop")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def to_toml(data: dict) -> str:
    """A small TOML writer for config dicts (scalars first, then one table per stage; None left out)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes

    top = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict) and v is not None]
    tables = []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append(f"[{k}]")
            tables += [f"{kk} = {value(vv)}" for kk, vv in v.items() if vv is not None]
    return "\n".join(top + [""] + tables) + "\n"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# -- round trips ---------------------------------------------------------------------------------------


def test_dict_round_trip_every_field():
    data = CUSTOM.to_dict()
    assert PipelineConfig.from_dict(data) == CUSTOM
    # every field of every stage is in the dict
    for f in fields(PipelineConfig):
        assert f.name in data
        if is_dataclass(getattr(CUSTOM, f.name)):
            assert set(data[f.name]) == {g.name for g in fields(getattr(CUSTOM, f.name))}


def test_json_round_trip(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(CUSTOM.to_json(), encoding="utf-8")
    assert PipelineConfig.from_file(path) == CUSTOM
    json.loads(CUSTOM.to_json())  # plain JSON


def test_toml_round_trip(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text(to_toml(CUSTOM.to_dict()), encoding="utf-8")
    loaded = PipelineConfig.from_file(path)
    assert loaded == CUSTOM
    assert loaded.prompt == CUSTOM.prompt and loaded.generate.variation == 0.0


def test_partial_file_defaults_the_rest(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text('variants = 2\n[generate]\npatch = 24\n', encoding="utf-8")
    cfg = PipelineConfig.from_file(path)
    assert cfg.variants == 2 and cfg.generate.patch == 24
    assert cfg.generate.backend == GenerateConfig().backend and cfg.segment == SegmentConfig()


def test_int_accepted_for_float_field():
    cfg = PipelineConfig.from_dict({"generate": {"guidance": 7}})
    assert cfg.generate.guidance == 7 and math.isclose(cfg.generate.guidance, 7.0)


# -- refusals that name the field --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,needles",
    [
        ({"bogus": 1}, ["config", "bogus", "variants"]),  # the message lists the known settings
        ({"generate": {"stepz": 3}}, ["config.generate", "stepz", "steps"]),
        ({"segment": {"backend": "classical", "colour": "red"}}, ["config.segment", "colour"]),
        ({"variants": "2"}, ["variants", "expected int", "'2'"]),
        ({"variants": True}, ["variants", "expected int"]),
        ({"variants": 2.5}, ["variants", "expected int"]),
        ({"seed": 1.5}, ["seed"]),
        ({"generate": {"guidance": "high"}}, ["generate.guidance", "expected float", "'high'"]),
        ({"composite": {"harmonize": "yes"}}, ["composite.harmonize", "expected bool"]),
        ({"segment": 5}, ["segment", "table"]),
        ({"segment": {"device": "tpu"}}, ["segment.device", "'cuda'", "'tpu'"]),
        ({"generate": {"dtype": "float8"}}, ["generate.dtype", "float8"]),
        ({"generate": {"steps": 0}}, ["generate.steps", "1", "0"]),
        ({"generate": {"short_side": 100}}, ["generate.short_side", "multiple of 8"]),
        ({"refine": {"temperature": -1}}, ["refine.temperature"]),
        ({"variants": None}, ["variants", "None"]),
        ({"prompt": 5}, ["prompt", "expected str"]),
    ],
)
def test_bad_settings_rejected_naming_the_field(data, needles):
    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_dict(data)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="variants"):
        PipelineConfig(variants=0)
    with pytest.raises(ConfigError, match="generate: expected GenerateConfig"):
        PipelineConfig(generate=SegmentConfig())
    with pytest.raises(ConfigError, match="generate.patch"):
        PipelineConfig().with_overrides(generate={"patch": 2})
    with pytest.raises(ConfigError, match="generate.*unknown.*pach"):
        PipelineConfig().with_overrides(generate={"pach": 32})


@pytest.mark.parametrize(
    "name,text,needle",
    [
        ("cfg.json", "{not json", "not valid json"),
        ("cfg.toml", "variants = [", "not valid toml"),
        ("cfg.json", "[1, 2]", "table/object"),
    ],
)
def test_bad_files(tmp_path, name, text, needle):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=needle) as err:
        PipelineConfig.from_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        PipelineConfig.from_file(tmp_path / "none.toml")


# -- the CLI's --config ----------------------------------------------------------------------------------------


def test_cli_uses_config_file_and_flags_override_it(tmp_path):
    image = bad.scene(tmp_path)
    cfg = tmp_path / "my.toml"
    cfg.write_text(
        'variants = 2\nseed = 11\n[segment]\nbackend = "classical"\n[refine]\nbackend = "template"\n'
        'style = "microscopy"\n[generate]\nbackend = "texture"\npatch = 32\n[composite]\nfeather = 0\n',
        encoding="utf-8",
    )
    result = invoke("run", image, "-o", tmp_path / "out", "--config", cfg, "-q")
    assert result.exit_code == 0, result.stderr
    rec = json.loads((tmp_path / "out" / "scene" / "run.json").read_text())
    assert rec["config"]["variants"] == 2 and rec["config"]["seed"] == 11
    assert rec["config"]["refine"]["style"] == "microscopy"
    assert rec["config"]["generate"]["patch"] == 32 and rec["config"]["composite"]["feather"] == 0
    from backdrop.seeds import item_seed

    s = item_seed(11, "scene.png")
    assert [v["seed"] for v in rec["variants"]] == [s, s + 1]
    assert (tmp_path / "out" / "scene" / "composite_2.png").is_file()

    # a flag beats the file; the file's other settings stay
    result = invoke("run", image, "-o", tmp_path / "out2", "--config", cfg, "-n", "1", "--seed", "4", "-q")
    assert result.exit_code == 0, result.stderr
    rec = json.loads((tmp_path / "out2" / "scene" / "run.json").read_text())
    assert rec["config"]["variants"] == 1 and rec["config"]["seed"] == 4
    assert rec["config"]["generate"]["patch"] == 32 and rec["config"]["refine"]["style"] == "microscopy"


def test_cli_json_config_round_trips_through_a_run(tmp_path):
    """A run.json's config, saved as a file, reproduces the run's settings."""
    image = bad.scene(tmp_path)
    cfg = preset("offline", PipelineConfig(variants=1, seed=8))
    (tmp_path / "c.json").write_text(cfg.to_json())
    assert invoke("run", image, "-o", tmp_path / "out", "--config", tmp_path / "c.json", "-q").exit_code == 0
    rec = json.loads((tmp_path / "out" / "scene" / "run.json").read_text())
    assert PipelineConfig.from_dict(rec["config"]) == cfg


@pytest.mark.parametrize(
    "text,needle",
    [
        ('[generate]\nstepz = 3\n', "config.generate: unknown setting(s) stepz"),
        ('variants = "two"\n', "variants: expected int"),
        ('[composite]\nfeather = 1.5\n', "composite.feather"),
    ],
)
def test_cli_bad_config_file_one_line(tmp_path, text, needle):
    image = bad.scene(tmp_path)
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text, encoding="utf-8")
    result = invoke("run", image, "-o", tmp_path / "out", "--config", cfg)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], result.stderr
    assert not (tmp_path / "out").exists()


# -- presets --------------------------------------------------------------------------------------------------------


def _backends(cfg: PipelineConfig) -> dict[str, str]:
    return {s: getattr(cfg, s).backend for s in ("segment", "inpaint", "caption", "refine", "generate")}


def test_presets_resolve_to_the_right_backends():
    from backdrop.pipeline import resolve_auto

    assert set(PRESETS) == {"default", "offline", "seed", "fast", "quality"}
    # default: "auto" stages; with an empty model store (tests isolate BACKDROP_HOME) they fall back
    # to the weight-free backends, with a notice saying how to get the better ones
    default, notices = resolve_auto(preset("default"))
    assert _backends(preset("default"))["segment"] == "auto" and _backends(preset("default"))["refine"] == "auto"
    assert _backends(default) == {"segment": "classical", "inpaint": "telea", "caption": "describe",
                                  "refine": "template", "generate": "texture"}
    assert len(notices) == 2 and all("pip install" in n for n in notices)

    offline, notices = resolve_auto(preset("offline"))
    assert _backends(offline) == _backends(default) and notices == []

    seed = preset("seed")
    assert _backends(seed) == {"segment": "rembg", "inpaint": "telea", "caption": "git", "refine": "gpt4all",
                               "generate": "sd-txt2img"}
    assert seed.segment.model == "isnet-general-use"
    assert seed.caption.model == "microsoft/git-large-coco"
    assert seed.refine.model == "mistral-7b-instruct-v0.1.Q4_0.gguf"
    assert seed.generate.model == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert resolve_auto(seed)[0] == seed  # nothing "auto" left to resolve

    # fast: the family's LCM-LoRA, tiny VAE, the profile's steps/guidance; quality: full VAE, DPM++
    fast = preset("fast", PipelineConfig(generate=GenerateConfig(steps=30, guidance=7.5)))
    assert fast.generate.backend == "sd-txt2img" and fast.generate.lora == ("lcm",)
    assert fast.generate.tiny_vae == "auto" and fast.generate.steps is None and fast.generate.guidance is None
    quality = preset("quality", fast)
    assert quality.generate.tiny_vae is None and quality.generate.scheduler == "dpm++"
    assert PipelineConfig.from_dict(json.loads(fast.to_json())) == fast  # tuples survive JSON


def test_preset_keeps_the_base_settings():
    base = PipelineConfig(variants=4, seed=2, generate=GenerateConfig(patch=20))
    cfg = preset("offline", base)
    assert cfg.variants == 4 and cfg.seed == 2 and cfg.generate.patch == 20
    assert cfg.segment.backend == "classical"


def test_offline_preset_is_weight_free_over_any_base():
    base = preset("seed")
    assert _backends(preset("offline", base)) == {"segment": "classical", "inpaint": "telea",
                                                  "caption": "describe", "refine": "template",
                                                  "generate": "texture"}


def test_cli_preset_flag_and_unknown_preset(tmp_path):
    image = bad.scene(tmp_path)
    result = invoke("run", image, "-o", tmp_path / "out", "--preset", "offline", "-n", "1", "--seed", "1", "-q")
    assert result.exit_code == 0, result.stderr
    rec = json.loads((tmp_path / "out" / "scene" / "run.json").read_text())
    assert rec["backends"]["segment"]["name"] == "classical" and rec["backends"]["generate"]["name"] == "texture"
    assert rec["backends"]["refine"]["skipped"]  # texture reads no prompt: the refiner is not even built
    result = invoke("run", image, "-o", tmp_path / "o2", "--preset", "warp-speed")
    assert result.exit_code == 2 and "default, offline, seed, fast, quality" in result.stderr
