"""The `backdrop` command and the public API, end to end, with the weight-free backends.

A few runs go through the real installed script (`.venv/bin/backdrop`) in a subprocess, to see the
real exit codes and stderr; the rest use typer's CliRunner in process (faster).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import make_bad_inputs as bad
from backdrop.cli import app
from backdrop.seeds import item_seed

ROOT = Path(__file__).resolve().parents[1]
EXE = ROOT / ".venv" / "bin" / "backdrop"
OFFLINE = ["--preset", "offline", "--generator", "texture"]
EXPECTED_FILES = {"mask.png", "bg_only.png", "background_1.png", "background_2.png", "composite_1.png",
                  "composite_2.png", "run.json", "pipeline.log"}
HEAVY = ("torch", "diffusers", "transformers", "onnxruntime", "llama_cpp", "streamlit", "gpt4all", "rembg")


@pytest.fixture(autouse=True)
def _restore_backdrop_logger():
    """The CLI sets up the 'backdrop' logger for its process; in-process runs must not leak that."""
    logger = logging.getLogger("backdrop")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def cli(*args, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-c", "from backdrop.cli import main; main()"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def stderr_of(result) -> str:
    return result.stderr if hasattr(result, "stderr") else result.output


def assert_one_error_line(stderr: str, *needles: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def arr(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def no_debris(out: Path) -> bool:
    """Nothing but outputs and backdrop's record: no temporary files anywhere."""
    tmp = [p for p in (out / ".backdrop" / "tmp").iterdir()] if (out / ".backdrop" / "tmp").exists() else []
    stray = [p for p in out.rglob("*") if p.name.endswith((".tmp", ".bdtmp")) or ".old-" in p.name]
    return not tmp and not stray


# the sample's own seed: from the base seed 5 and its path relative to the input root
S = item_seed(5, "sample.png")


# -- one real run, then a second with the same seed ----------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    image = bad.scene(work, "sample.png")
    procs = [cli("run", image, "-o", work / f"out{i}", *OFFLINE, "-n", "2", "--seed", "5", cwd=work)
             for i in (1, 2)]
    return work, image, procs


def test_run_writes_the_layout(runs):
    work, _, procs = runs
    for proc in procs:
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
    assert {p.name for p in (work / "out1" / "sample").iterdir()} == EXPECTED_FILES
    assert sorted(p.name for p in (work / "out1").iterdir()) == [".backdrop", "manifest.jsonl", "sample"]
    assert no_debris(work / "out1")
    assert "1 done, 0 already done, 0 copied unchanged, 0 failed" in procs[0].stderr


def test_foreground_pixels_identical_to_input(runs):
    work, image, _ = runs
    src = arr(image)
    mask = arr(work / "out1" / "sample" / "mask.png")
    assert mask.shape == src.shape[:2] and set(np.unique(mask)) <= {0, 255}
    fg = mask == 255
    assert fg.sum() > 0.05 * fg.size  # the object was found
    for k in (1, 2):
        comp = arr(work / "out1" / "sample" / f"composite_{k}.png")
        assert comp.shape == src.shape
        assert np.array_equal(comp[fg], src[fg])
        assert not np.array_equal(comp[~fg], src[~fg])  # and the background did change


def test_variants_differ(runs):
    d = runs[0] / "out1" / "sample"
    assert not np.array_equal(arr(d / "background_1.png"), arr(d / "background_2.png"))
    assert not np.array_equal(arr(d / "composite_1.png"), arr(d / "composite_2.png"))


def test_same_seed_same_pixels(runs):
    work = runs[0]
    for name in ("mask.png", "bg_only.png", "background_1.png", "background_2.png", "composite_1.png",
                 "composite_2.png"):
        assert np.array_equal(arr(work / "out1" / "sample" / name), arr(work / "out2" / "sample" / name)), name


def test_run_json_is_complete(runs):
    rec = json.loads((runs[0] / "out1" / "sample" / "run.json").read_text())
    assert rec["config"]["variants"] == 2 and rec["config"]["seed"] == 5
    assert rec["config"]["generate"]["backend"] == "texture"
    assert {s: rec["backends"][s]["name"] for s in ("segment", "inpaint", "generate")} == {
        "segment": "classical", "inpaint": "telea", "generate": "texture"}
    # texture reads no prompt: caption and refine did not run, and no prompt is recorded
    assert "does not read a prompt" in rec["backends"]["caption"]["skipped"]
    assert "does not read a prompt" in rec["backends"]["refine"]["skipped"]
    assert rec["caption"] == "" and rec["prompt"] == {"positive": "", "negative": ""}
    assert [(v["index"], v["seed"]) for v in rec["variants"]] == [(1, S), (2, S + 1)]
    assert {"segment", "inpaint", "generate", "composite"} <= set(rec["timings"])
    assert all(isinstance(t, float) and t >= 0 for t in rec["timings"].values())
    assert rec["versions"]["backdrop"] == rec["backdrop_version"]
    assert {"python", "numpy", "pillow"} <= set(rec["versions"])
    assert rec["input"]["size"] == [160, 120]


def test_pipeline_log_written(runs):
    log = (runs[0] / "out1" / "sample" / "pipeline.log").read_text()
    assert "sample.png" in log and f"seeds [{S}, {S + 1}]" in log


def test_every_png_has_parameters_record_and_xmp(runs):
    d = runs[0] / "out1" / "sample"
    want_type = {"mask": None, "bg_only": "compositeSynthetic", "background": "algorithmicMedia",
                 "composite": "compositeSynthetic"}
    for png in sorted(d.glob("*.png")):
        im = Image.open(png)
        text = im.text
        assert "parameters" in text and "backdrop" in text, png.name
        assert "XML:com.adobe.xmp" in text, png.name
        rec = json.loads(text["backdrop"])
        assert rec["config"]["seed"] == 5 and rec["backends"]["generate"]["name"] == "texture"
        kind = png.stem.rstrip("_0123456789")
        if want_type[kind]:
            assert f"digitalsourcetype/{want_type[kind]}" in text["XML:com.adobe.xmp"], png.name
        if kind in ("background", "composite"):
            k = int(png.stem.rsplit("_", 1)[1])
            assert f"Seed: {S + k - 1}" in text["parameters"] and rec["variant"]["seed"] == S + k - 1
            assert "Size: 160x120" in text["parameters"]
            assert "Steps" not in text["parameters"]  # texture has no denoising steps: left out


def test_inspect_prints_it_back(runs):
    comp = runs[0] / "out1" / "sample" / "composite_2.png"
    rec = json.loads((runs[0] / "out1" / "sample" / "run.json").read_text())
    result = invoke("inspect", comp)
    assert result.exit_code == 0, stderr_of(result)
    out = result.stdout
    assert f"Seed: {S + 1}" in out and "compositeSynthetic" in out and '"backdrop_version"' in out
    as_json = json.loads(invoke("inspect", comp, "--json").stdout)
    assert as_json["backdrop"]["variant"] == {"index": 2, "seed": S + 1}
    assert as_json["parsed"]["fields"]["Seed"] == str(S + 1)


def test_inspect_bad_files(tmp_path):
    text = bad.text_as_png(tmp_path)
    result = invoke("inspect", text, tmp_path / "missing.png")
    assert result.exit_code != 0
    lines = [line for line in stderr_of(result).splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and "Traceback" not in stderr_of(result)


# -- overwriting ------------------------------------------------------------------------------------------------


def test_existing_output_kept_without_overwrite_then_replaced(tmp_path):
    image = bad.scene(tmp_path, "img.png")
    out = tmp_path / "out"
    first = invoke("run", image, "-o", out, *OFFLINE, "-n", "1", "--seed", "1", "-q")
    assert first.exit_code == 0, stderr_of(first)
    before = {p.name: p.read_bytes() for p in (out / "img").iterdir()}

    # the same command again: a resume, nothing to do, exit 0, nothing touched
    same = cli("run", image, "-o", out, *OFFLINE, "-n", "1", "--seed", "1", cwd=tmp_path)
    assert same.returncode == 0 and "0 done, 1 already done" in same.stderr, same.stderr
    assert {p.name: p.read_bytes() for p in (out / "img").iterdir()} == before

    proc = cli("run", image, "-o", out, *OFFLINE, "-n", "1", "--seed", "2", cwd=tmp_path)
    assert proc.returncode == 5
    assert_one_error_line(proc.stderr, "img", "other settings", "base seed 1", "--overwrite")
    assert {p.name: p.read_bytes() for p in (out / "img").iterdir()} == before

    again = invoke("run", image, "-o", out, *OFFLINE, "-n", "1", "--seed", "2", "--overwrite", "-q")
    assert again.exit_code == 0, stderr_of(again)
    rec = json.loads((out / "img" / "run.json").read_text())
    assert rec["variants"][0]["seed"] == item_seed(2, "img.png")
    assert (out / "img" / "background_1.png").read_bytes() != before["background_1.png"]
    assert sorted(p.name for p in out.iterdir()) == [".backdrop", "img", "manifest.jsonl"]
    assert no_debris(out)


# -- batches ----------------------------------------------------------------------------------------------------


def test_batch_good_and_bad(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = [bad.scene(folder, "a.png", seed=1), bad.scene(folder, "b.png", seed=2)]
    broken = [bad.truncated_jpeg(folder), bad.text_as_png(folder), bad.zero_byte(folder)]
    out = tmp_path / "out"
    proc = cli("run", folder, "-o", out, *OFFLINE, "-n", "1", "--seed", "3", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(broken), proc.stderr
    for path in broken:
        assert sum(path.name in line for line in errors) == 1
        assert not (out / "in" / path.stem).exists()
    for path in good:
        assert (out / "in" / path.stem / "composite_1.png").is_file()
    assert "2 done, 0 already done, 0 copied unchanged, 3 failed" in proc.stderr


def test_batch_same_stems_get_distinct_folders(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    bad.scene(folder, "a.png")
    Image.fromarray(bad.scene_array(seed=4)).save(folder / "a.jpg", quality=95)
    bad.scene(folder, "a_2.png", seed=5)
    result = invoke("run", folder, "-o", tmp_path / "out", *OFFLINE, "-n", "1", "--seed", "1", "-q")
    assert result.exit_code == 0, stderr_of(result)
    dirs = sorted(p.name for p in (tmp_path / "out" / "in").iterdir())
    # a.png and a.jpg share a stem in their folder: the suffix is folded into both names
    assert dirs == ["a_2", "a_jpg", "a_png"]
    sources = {json.loads((tmp_path / "out" / "in" / d / "run.json").read_text())["input"]["path"] for d in dirs}
    assert len(sources) == 3


# -- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option,stage", [("--segmenter", "segment"), ("--inpainter", "inpaint"),
                                          ("--captioner", "caption"), ("--refiner", "refine"),
                                          ("--generator", "generate")])
def test_unknown_backend_lists_valid_names(tmp_path, option, stage):
    from importlib import import_module

    registry = {"segment": "SEGMENTERS", "inpaint": "INPAINTERS", "caption": "CAPTIONERS", "refine": "REFINERS",
                "generate": "GENERATORS"}[stage]
    names = getattr(import_module(f"backdrop.{stage}"), registry).names()
    image = bad.scene(tmp_path)
    result = invoke("run", image, "-o", tmp_path / "out", "--preset", "offline", option, "nope")
    assert result.exit_code != 0
    line = assert_one_error_line(stderr_of(result), "nope", stage)
    for name in names:
        assert name in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["-n", "0"], "variants"),
        (["--steps", "-1"], "steps"),
        (["--short-side", "100"], "short_side"),
        (["--device", "tpu"], "device"),
        (["--style", "nope"], "style"),
        (["--preset", "nope"], "preset"),
        (["--guidance", "-3"], "guidance"),
        (["--strength", "1.5"], "strength"),
        (["--seed", "-1"], "seed"),
        (["--feather", "999"], "feather"),
        (["--max-pixels", "0"], "max_pixels"),
        (["--scheduler", "warp-drive"], "scheduler"),
        (["--config", "missing.toml"], "missing.toml"),
    ],
)
def test_invalid_option_values(tmp_path, args, needle):
    image = bad.scene(tmp_path)
    base = ["--preset", "offline"] if "--preset" not in args else []
    result = invoke("run", image, "-o", tmp_path / "out", *base, *args)
    assert result.exit_code not in (0, None), stderr_of(result)
    assert_one_error_line(stderr_of(result), needle)
    assert not (tmp_path / "out").exists()


def test_missing_input_one_line(tmp_path):
    result = invoke("run", tmp_path / "nothing.png", "-o", tmp_path / "out", "--preset", "offline")
    assert result.exit_code == 2
    assert_one_error_line(stderr_of(result), "nothing.png")


def test_real_exit_codes_and_stderr(tmp_path):
    image = bad.scene(tmp_path)
    proc = cli("run", image, "-o", tmp_path / "out", "--preset", "offline", "--steps", "-1", cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "generate.steps")
    proc = cli("run", tmp_path / "nope.png", "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "nope.png")
    proc = cli("run", image, "-o", tmp_path / "out", "--generator", "nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr, "unknown generate backend", "texture")


def test_debug_shows_traceback(tmp_path):
    image = bad.scene(tmp_path)
    proc = cli("run", image, "-o", tmp_path / "out", "--preset", "offline", "--style", "nope", "--debug",
               cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ConfigError" in proc.stderr and "nope" in proc.stderr


# -- other commands -----------------------------------------------------------------------------------------------


def test_backends_lists_every_backend_with_usability():
    from backdrop.caption import CAPTIONERS
    from backdrop.generate import GENERATORS
    from backdrop.inpaint import INPAINTERS
    from backdrop.refine import REFINERS
    from backdrop.segment import SEGMENTERS

    result = invoke("backends")
    assert result.exit_code == 0, stderr_of(result)
    out = result.stdout
    rows = [line for line in out.splitlines() if line.startswith("│") and "│" in line[1:]]
    table = {}
    for line in rows:
        cells = [c.strip() for c in line.strip("│").split("│")]
        if cells[0] and cells[1]:
            table[(cells[0], cells[1])] = cells[2]
    for stage, reg in (("segment", SEGMENTERS), ("inpaint", INPAINTERS), ("caption", CAPTIONERS),
                       ("refine", REFINERS), ("generate", GENERATORS)):
        for name in reg.names():
            assert (stage, name) in table, (stage, name, out)
            assert table[(stage, name)].startswith(("yes", "no")), table[(stage, name)]
    for weight_free in (("segment", "classical"), ("inpaint", "telea"), ("caption", "describe"),
                        ("refine", "template"), ("generate", "texture")):
        assert table[weight_free] == "yes"
    assert "auto picks:" in out


def test_styles_lists_presets():
    result = invoke("styles")
    assert result.exit_code == 0
    assert "photographic" in result.stdout and "negative:" in result.stdout


@pytest.mark.parametrize("code", [
    "import backdrop",
    "import sys; sys.argv = ['backdrop', '--help']\n"
    "from backdrop.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass",
    "import sys; sys.argv = ['backdrop', 'run', '--help']\n"
    "from backdrop.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass",
])
def test_no_heavy_imports(code):
    probe = code + f"\nimport sys\nprint('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "LOADED=", proc.stdout[-500:]


def test_help_lists_commands():
    proc = cli("--help")
    assert proc.returncode == 0
    for command in ("run", "backends", "inspect", "styles"):
        assert command in proc.stdout


# -- the public API -------------------------------------------------------------------------------------------------


class SolidGenerator:
    """A ready backend instance handed to Pipeline.from_config: one flat colour per seed."""

    name = "solid"
    generative = False

    def __init__(self):
        self.calls = []

    def __call__(self, request):
        self.calls.append(request.seed)
        return Image.new("RGB", request.image.size, (request.seed % 256, 10, 200))

    def describe(self):
        return {"model": "flat-colour"}


def test_public_api_with_instance_injection(tmp_path):
    import backdrop
    from backdrop import Pipeline, PipelineConfig
    from backdrop.config import preset

    assert {"Pipeline", "PipelineConfig", "Result", "Prompt"} <= set(backdrop.__all__)
    from backdrop.config import ChecksConfig

    gen = SolidGenerator()
    # two flat colours one step apart are near-duplicates by design here: that check is off
    cfg = preset("offline", PipelineConfig(variants=2, seed=40, checks=ChecksConfig(near_duplicate=False)))
    pipe = Pipeline.from_config(cfg, generator=gen)
    # an object that does not subclass backdrop.stages.Generator is adopted: wrapped once, used as is
    assert pipe.generator is gen or pipe.generator.inner is gen
    src = bad.scene_array()
    result = pipe(Image.fromarray(src))
    assert gen.calls == [40, 41]
    assert [v.seed for v in result.variants] == [40, 41]
    mask = np.asarray(result.mask) == 255
    assert mask.any()
    for v, colour in zip(result.variants, ((40, 10, 200), (41, 10, 200))):
        comp = np.asarray(v.composite)
        assert np.array_equal(comp[mask], src[mask])
        assert (np.asarray(v.background) == colour).all()
        assert (comp[0, 0] == colour).all()  # a corner far from the object shows the new colour
    assert result.backends["generate"] == {"name": "solid", "model": "flat-colour"}
    saved = pipe.save(result, tmp_path / "out", name="api")
    rec = json.loads((saved / "run.json").read_text())
    assert rec["backends"]["generate"]["name"] == "solid"
    from backdrop.metadata import read_metadata

    assert read_metadata(saved / "composite_1.png")["parsed"]["fields"]["Model"] == "flat-colour"


class PromptedSolidGenerator(SolidGenerator):
    name = "prompted-solid"
    uses_prompt = True


def test_fixed_prompt_skips_caption_and_refine(tmp_path):
    from backdrop import Pipeline, PipelineConfig
    from backdrop.config import preset

    cfg = preset("offline", PipelineConfig(variants=1, seed=1, prompt="a clean lab bench, soft light",
                                           negative="people"))
    Pipeline.from_config(cfg, generator=PromptedSolidGenerator()).process(bad.scene(tmp_path), tmp_path / "out")
    rec = json.loads((tmp_path / "out" / "scene" / "run.json").read_text())
    assert rec["prompt"] == {"positive": "a clean lab bench, soft light", "negative": "people"}
    assert rec["caption"] == ""
    assert rec["backends"]["caption"]["skipped"] == "fixed prompt"
    assert rec["backends"]["refine"]["skipped"] == "fixed prompt"
    assert "caption" not in rec["timings"] and "refine" not in rec["timings"]
    meta = Image.open(tmp_path / "out" / "scene" / "composite_1.png").text["parameters"]
    assert meta.startswith("a clean lab bench, soft light\nNegative prompt: people\n")
    # with a generator that reads no prompt, a fixed prompt made nothing: it is not recorded as if it had
    result = invoke("run", bad.scene(tmp_path), "-o", tmp_path / "o2", *OFFLINE, "-n", "1", "--prompt", "a bench", "-q")
    assert result.exit_code == 0, stderr_of(result)
    rec = json.loads((tmp_path / "o2" / "scene" / "run.json").read_text())
    assert rec["prompt"]["positive"] == "" and "does not read a prompt" in rec["backends"]["refine"]["skipped"]


def test_rerun_over_the_same_folder_ignores_its_outputs(tmp_path):
    bad.scene(tmp_path, "only.png")
    for extra in ([], ["--overwrite"]):
        result = invoke("run", tmp_path, "-o", tmp_path / "out", *OFFLINE, "-n", "1", "--seed", "1", "-q", *extra)
        assert result.exit_code == 0, stderr_of(result)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".backdrop", "manifest.jsonl", tmp_path.name]
    assert [p.name for p in (tmp_path / "out" / tmp_path.name).iterdir()] == ["only"]


def test_odd_file_names(tmp_path):
    image = bad.scene(tmp_path, "my scan – ü 1.png")
    result = invoke("run", image, "-o", tmp_path / "out dir", *OFFLINE, "-n", "1", "--seed", "1", "-q")
    assert result.exit_code == 0, stderr_of(result)
    assert (tmp_path / "out dir" / "my scan – ü 1" / "composite_1.png").is_file()


def test_out_is_a_file_one_line(tmp_path):
    image = bad.scene(tmp_path)
    (tmp_path / "taken").write_text("x")
    result = invoke("run", image, "-o", tmp_path / "taken", *OFFLINE, "-n", "1")
    assert result.exit_code != 0
    assert_one_error_line(stderr_of(result), "is a file, not a folder")
    assert (tmp_path / "taken").read_text() == "x"


class FailingGenerator(SolidGenerator):
    name = "failing"

    def __call__(self, request):
        if len(self.calls) == 1:
            raise RuntimeError("out of memory on variant 2")
        return super().__call__(request)


def test_failure_mid_image_keeps_finished_variants_only(tmp_path):
    """Variants are written as they are made: a failure on variant 2 keeps variant 1 (whole files,
    recorded), leaves no partial file or temporary debris, and the image counts as not done."""
    from backdrop import Pipeline, PipelineConfig
    from backdrop.config import preset
    from backdrop.errors import GenerationError

    pipe = Pipeline.from_config(preset("offline", PipelineConfig(variants=2, seed=1)), generator=FailingGenerator())
    image = bad.scene(tmp_path, "img.png")
    with pytest.raises(GenerationError, match="generate failed.*out of memory") as err:
        pipe.process(image, tmp_path / "out")
    assert "\n" not in str(err.value)
    out = tmp_path / "out"
    assert {p.name for p in (out / "img").iterdir()} == {"mask.png", "bg_only.png", "background_1.png",
                                                          "composite_1.png"}
    assert Image.open(out / "img" / "composite_1.png").size == (160, 120)
    assert no_debris(out)
    assert (out / "manifest.jsonl").read_text() == ""  # the image is not complete: not in the manifest


def test_api_pil_image_with_exif_is_upright(tmp_path):
    from backdrop import Pipeline, PipelineConfig
    from backdrop.config import preset

    pipe = Pipeline.from_config(preset("offline", PipelineConfig(seed=1)), generator=SolidGenerator())
    result = pipe(Image.open(bad.exif_rotated(tmp_path, 6, "PNG")))
    assert result.image.size == (120, 160) and result.variants[0].composite.size == (120, 160)


class FakeDiffusionGenerator(SolidGenerator):
    """Says it is a trained model, as the sd-* backends do: the labels and A1111 fields must follow."""

    name = "fake-sd"
    generative = True

    def describe(self):
        return {"model": "tiny/sd", "steps": 4, "sampler": "EulerDiscreteScheduler", "cfg_scale": 6.5}


def test_generative_backend_labels_and_fields(tmp_path):
    from backdrop import Pipeline, PipelineConfig
    from backdrop.config import preset
    from backdrop.metadata import read_metadata

    pipe = Pipeline.from_config(preset("offline", PipelineConfig(seed=21)), generator=FakeDiffusionGenerator())
    out = pipe.process(bad.scene(tmp_path, "img.png"), tmp_path / "out")
    comp = read_metadata(out / "composite_1.png")
    bg = read_metadata(out / "background_1.png")
    assert comp["digital_source_type"] == "compositeWithTrainedAlgorithmicMedia"
    assert bg["digital_source_type"] == "trainedAlgorithmicMedia"
    assert comp["parsed"]["fields"] == {"Steps": "4", "Sampler": "EulerDiscreteScheduler", "CFG scale": "6.5",
                                        "Seed": "21", "Size": "160x120", "Model": "tiny/sd"}


def test_missing_model_fails_once_for_the_whole_batch(tmp_path):
    """Models load before the first image: a batch with a missing model is one error, not one per image."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        bad.scene(folder, f"img{i}.png", seed=i)
    out = tmp_path / "out"
    result = cli("run", folder, "-o", out, "--preset", "offline", "--generator", "sd-txt2img",
                 "--sd-model", tmp_path / "no-such-model")
    assert result.returncode == 4, result.stderr
    assert_one_error_line(result.stderr, "no-such-model")
    assert not out.exists() or not any(out.iterdir())


def test_stages_nobody_reads_are_not_built_or_loaded(tmp_path):
    """texture reads no prompt: a refiner whose model is missing is never built, so the run works,
    and nothing about caption or refine is recorded as if it had made the image."""
    image = bad.scene(tmp_path, "img.png")
    out = tmp_path / "out"
    result = invoke("run", image, "-o", out, *OFFLINE, "--refiner", "llama-cpp", "--llm-model",
                    tmp_path / "missing.gguf", "--captioner", "git", "--caption-model", tmp_path / "no-git", "-q")
    assert result.exit_code == 0, stderr_of(result)
    rec = json.loads((out / "img" / "run.json").read_text())
    assert rec["backends"]["caption"]["skipped"] and rec["backends"]["refine"]["skipped"]
    assert rec["prompt"] == {"positive": "", "negative": ""} and rec["caption"] == ""
    assert "caption" not in rec["timings"] and "refine" not in rec["timings"]
    # the same refiner with a generator that reads the prompt: now it is built, and its absence is an error
    failed = invoke("run", image, "-o", tmp_path / "o2", *OFFLINE[:2], "--generator", "sd-txt2img", "--sd-model",
                    tmp_path / "no-sd", "--refiner", "llama-cpp", "--llm-model", tmp_path / "missing.gguf", "-q")
    assert failed.exit_code != 0 and "missing.gguf" in stderr_of(failed)
