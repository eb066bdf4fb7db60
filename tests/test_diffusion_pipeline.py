"""Stable Diffusion through the whole pipeline and CLI: variants batched into one call match the
same variants made one by one, and a LoRA reaches every saved image's A1111 text."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

import make_bad_inputs as bad
import tiny_models
from backdrop.cli import app


def _run(src, out, tiny_sd, *extra):
    args = ["run", str(src), "-o", str(out), "-n", "3", "--seed", "9", "--segmenter", "classical",
            "--refiner", "template", "--generator", "sd-txt2img", "--sd-model", str(tiny_sd), "--steps", "2",
            "--short-side", "64", "--device", "cpu", "-q", *map(str, extra)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return [np.asarray(Image.open(out / "thing" / f"background_{k}.png")).astype(int) for k in (1, 2, 3)]


def test_batched_variants_match_one_by_one(tmp_path, tiny_sd, torch_one_thread):
    src = bad.scene(tmp_path, "thing.png", width=96, height=64)
    batched = _run(src, tmp_path / "b", tiny_sd, "--batch-size", "3")
    single = _run(src, tmp_path / "s", tiny_sd, "--batch-size", "1")
    for k, (a, b) in enumerate(zip(batched, single), 1):
        assert np.abs(a - b).max() <= 2, k  # floating point in the batched arithmetic only
    assert not np.array_equal(batched[0], batched[1])  # and the variants do differ


def test_lora_tags_and_hashes_reach_the_saved_images(tmp_path, tiny_sd, torch_one_thread):
    lora = tiny_models.make_tiny_lora(tmp_path / "style.safetensors", tiny_sd)
    src = bad.scene(tmp_path, "thing.png", width=96, height=64)
    _run(src, tmp_path / "o", tiny_sd, "--lora", f"{lora}:0.7")
    text = Image.open(tmp_path / "o" / "thing" / "composite_1.png").text["parameters"]
    first, rest = text.split("\n", 1)
    assert "<lora:style:0.7>" in first
    assert 'Lora hashes: "style: ' in rest
