"""Style presets (backdrop.styles) and the template refiner."""

from __future__ import annotations

import json

import pytest

from backdrop import runlog
from backdrop.config import RefineConfig
from backdrop.errors import ConfigError
from backdrop.refine import REFINERS
from backdrop.refine.template import FALLBACK, TemplateRefiner, background_phrase
from backdrop.styles import CLIP_TOKENS, Style, apply_style, approx_tokens, get_style, load_styles
from backdrop.types import Prompt

REQUIRED = {"photographic", "studio", "microscopy", "histology", "cinematic", "minimal", "none"}
CAPTION = "a smooth, evenly lit pale pink background with a fine grainy texture"


def test_bundled_styles_all_format():
    styles = load_styles()
    assert REQUIRED <= set(styles)
    for name, style in styles.items():
        assert isinstance(style, Style) and style.name == name
        assert style.description and "\n" not in style.description
        prompt = apply_style(style, "a brick wall background")
        assert isinstance(prompt, Prompt)
        assert "a brick wall background" in prompt.positive
        assert "{prompt}" not in prompt.positive and not prompt.positive.startswith((",", " "))
        assert prompt.negative == style.negative
        if name != "none":
            assert prompt.positive != "a brick wall background" and prompt.negative
    assert apply_style(styles["none"], "a grey wall") == Prompt("a grey wall", "")


def test_every_style_through_the_refiner():
    for name in load_styles():
        out = TemplateRefiner(RefineConfig(style=name))(CAPTION)
        assert "pale pink background" in out.positive
        assert approx_tokens(out.positive) <= CLIP_TOKENS


def test_user_toml_extends_and_overrides(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        '[underwater]\n'
        'description = "under the sea"\n'
        'prompt = "underwater photograph of {prompt}, caustics"\n'
        'negative = "fish"\n'
        '\n'
        '[photographic]\n'
        'negative = "only this"\n',
        encoding="utf-8",
    )
    styles = load_styles(path)
    bundled = load_styles()
    assert set(styles) == set(bundled) | {"underwater"}
    expected = Style("underwater", "underwater photograph of {prompt}, caustics", "fish", "under the sea")
    assert styles["underwater"] == expected
    # an override replaces only the fields it gives
    assert styles["photographic"].negative == "only this"
    assert styles["photographic"].prompt == bundled["photographic"].prompt
    # the bundled presets are not changed for later callers
    assert load_styles()["photographic"].negative == bundled["photographic"].negative
    out = TemplateRefiner(RefineConfig(style="underwater", styles_file=str(path)))("a photo of a rock")
    assert out == Prompt("underwater photograph of a rock background, caustics", "fish")


def test_user_json_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"clinic": {"prompt": "{prompt}, hospital lighting"}}), encoding="utf-8")
    assert get_style("clinic", path).prompt == "{prompt}, hospital lighting"
    assert get_style("clinic", path).negative == ""


@pytest.mark.parametrize(
    "suffix, text, words",
    [
        (".toml", "[broken\nprompt = 1", ["not valid TOML"]),
        (".json", "{not json", ["not valid JSON"]),
        (".json", "[1, 2]", ["table of presets"]),
        (".toml", 'x = "just a string"', ["'x'", "must be a table"]),
        (".toml", '[new]\nnegative = "n"', ["'new'", "needs a 'prompt'"]),
        (".toml", '[new]\nprompt = "no placeholder"', ["'new'", "{prompt}"]),
        (".toml", '[new]\nprompt = "{prompt}"\nnegtive = "typo"', ["unknown field", "negtive"]),
        (".toml", '[new]\nprompt = "{prompt}"\nnegative = 3', ["'negative'", "must be a string"]),
        (".toml", '["bad name"]\nprompt = "{prompt}"', ["bad preset name"]),
        (".yaml", "a: b", ["expected a .toml or .json"]),
    ],
)
def test_bad_user_file_names_file_and_problem(tmp_path, suffix, text, words):
    path = tmp_path / f"styles{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_styles(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    for w in words:
        assert w in message
    with pytest.raises(ConfigError):
        TemplateRefiner(RefineConfig(styles_file=str(path)))


def test_missing_user_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_styles(tmp_path / "nope.toml")


def test_unknown_style_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        get_style("vaporwave")
    for name in REQUIRED:
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="photographic"):
        TemplateRefiner(RefineConfig(style="vaporwave"))


def test_prompt_length_bound_keeps_style_words():
    long_caption = ", ".join(f"a very detailed description number {i} of the textured wall" for i in range(40))
    for name, style in load_styles().items():
        out = TemplateRefiner(RefineConfig(style=name))(long_caption)
        assert approx_tokens(out.positive) <= CLIP_TOKENS, name
        # the style's own words survive the cut (the description is what gets shortened)
        tail = style.prompt.split("{prompt}")[1].strip(" ,")
        if tail:
            assert out.positive.endswith(tail), name
    # a template longer than the budget is itself cut, never beyond the bound
    wordy = Style("wordy", "{prompt}, " + ", ".join(["intricate ornament"] * 60))
    with runlog.collecting() as rec:
        assert approx_tokens(apply_style(wordy, "a wall").positive) <= CLIP_TOKENS
    assert rec["notes"]["prompt_shortened"]["style"] == "wordy"
    assert apply_style(wordy, "a wall", max_tokens=None).positive.count("intricate") == 60


def test_approx_tokens_over_estimates_simply():
    assert approx_tokens("") == 0
    assert approx_tokens("a wall") == 2
    assert approx_tokens("a wall, 35mm") == 2 + 1 + 2 + 1  # comma, two digits, "mm"
    assert approx_tokens("hematoxylin") >= 2


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a photo of a dog running on the beach", "a beach background"),
        ("arafed man standing in front of a brick wall", "a brick wall background"),
        ("a cat sitting on a table in front of a white background", "a white background"),
        ("a close up of a white wall.", "a white wall background"),
        ("there is a bowl of fruit on a table in a kitchen", "a kitchen background"),
        ("a man with mountains in the background", "mountains background"),
        ("cells under a microscope", "an empty microscope field of view"),
        ("a blurry photo of a person in a living room", "a living room background"),
        (CAPTION, CAPTION),
    ],
)
def test_background_phrase(caption, expected):
    assert background_phrase(caption) == expected


def test_rephrasing_keeps_times_and_weather():
    assert "night" in background_phrase("an image of an empty street at night")
    assert "fog" in background_phrase("a tree in the fog")


def test_refiner_output_is_about_a_background_without_the_subject():
    out = TemplateRefiner(RefineConfig(style="photographic"))("A photo of a woman standing in front of a brick wall")
    assert "brick wall background" in out.positive
    assert "woman" not in out.positive and "photo of a" not in out.positive
    assert "people" in out.negative


def test_empty_caption_falls_back_with_a_warning():
    with runlog.collecting() as rec:
        out = TemplateRefiner(RefineConfig(style="none"))("a photo of")
    assert out.positive == FALLBACK
    assert rec["warnings"] and rec["notes"]["refine.style"] == "none"


def test_registry_builds_the_template_refiner():
    refiner = REFINERS.create("template", RefineConfig(style="microscopy"))
    assert refiner.name == "template" and refiner.style.name == "microscopy"
    assert REFINERS.availability("template", RefineConfig()).usable
    assert refiner("a glass slide").positive.startswith("brightfield microscopy image of a glass slide background")


def test_deterministic():
    r = TemplateRefiner(RefineConfig())
    assert r(CAPTION) == r(CAPTION) == TemplateRefiner(RefineConfig())(CAPTION)
