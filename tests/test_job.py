"""The Job checks itself: every option, for every entry point (CLI, Python API, Ray, studio), before
any folder is created; and the run summary's exit code is a pure read."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

import backdrop
from backdrop.cli import app
from backdrop.config import PipelineConfig
from backdrop.job import Job, Outcome, Summary
from backdrop.errors import BackdropError, ConfigError, JobOptionError

# option -> (a bad value, a word the message must hold: the allowed values or the range)
BAD = {
    "kind": ("bogus", "dataset"),
    "inputs": ("not-a-tuple", "tuple"),
    "format": ("bogus", "yolo"),
    "splits": ((), "split"),
    "copy_other_splits": ("yes", "True or False"),
    "include_originals": (1, "True or False"),
    "image_format": ("gif", "png"),
    "quality": (0, "1 to 100"),
    "save_masks": ("no", "True or False"),
    "overwrite": (None, "True or False"),
    "box_grow": (-0.1, "0 to 10"),
    "box_min_cover": (1.5, "0 to 1"),
    "box_fallback": ("bogus", "box, skip"),
    "box_prompt": ("yes", "True or False"),
    "mask_cache": ("", "auto"),
    "base_seed": ("7", "integer"),
}


def test_every_job_option_is_checked():
    """The table above covers every option a caller can set (a new option needs a check and a row)."""
    from dataclasses import fields

    assert {f.name for f in fields(Job)} - {"config", "out"} == set(BAD)


@pytest.mark.parametrize("option", sorted(BAD))
def test_bad_option_is_a_value_error_naming_it(option, tmp_path):
    bad, allowed = BAD[option]
    with pytest.raises(ValueError) as err:
        Job(config=PipelineConfig(), out=str(tmp_path / "out"), **{"kind": "dataset", "inputs": (str(tmp_path),),
                                                                    option: bad})
    assert isinstance(err.value, JobOptionError) and isinstance(err.value, BackdropError)
    assert err.value.option == option and option in str(err.value) and allowed in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("option", sorted(set(BAD) - {"kind", "inputs", "base_seed"}))
def test_python_api_refuses_before_any_folder(option, tmp_path):
    src = tmp_path / "set"
    src.mkdir()
    Image.new("RGB", (32, 32), "white").save(src / "a.png")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=option):
        backdrop.augment(src, out, **{option: BAD[option][0]})
    assert not out.exists()
    assert not (tmp_path / "set-backdrop").exists()


def test_python_api_box_fallback_bogus(tmp_path):
    """The issue's example, as a user would type it."""
    src = tmp_path / "set"
    src.mkdir()
    with pytest.raises(ValueError, match=r"box_fallback \(--box-fallback\): expected one of box, skip"):
        backdrop.augment(src, tmp_path / "out", box_fallback="bogus")
    assert not (tmp_path / "out").exists()


def test_python_api_unknown_option_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="box_fallbak: unknown option; known options: .*box_fallback"):
        backdrop.augment(tmp_path, tmp_path / "out", box_fallbak="skip")
    assert not (tmp_path / "out").exists()


def test_python_api_engine_checked(tmp_path):
    with pytest.raises(ConfigError, match="engine: expected local or ray"):
        backdrop.augment(tmp_path, tmp_path / "out", engine="spark")


def test_from_options_takes_a_comma_list_of_splits(tmp_path):
    job = Job.from_options(PipelineConfig(), tmp_path / "o", kind="dataset", inputs=str(tmp_path),
                           splits="train, val")
    assert job.splits == ("train", "val") and job.inputs == (str(tmp_path),) and job.out == str(tmp_path / "o")


@pytest.mark.parametrize("args, message", [
    (["--box-fallback", "bogus"], "box_fallback (--box-fallback): expected one of box, skip, got 'bogus'"),
    (["--image-format", "gif"], "image_format (--image-format): expected one of same, png, jpg"),
    (["--quality", "0"], "quality (--quality): expected an integer from 1 to 100, got 0"),
    (["--box-cover", "2"], "box_min_cover (--box-cover): expected a number from 0 to 1"),
    (["--splits", ","], "splits (--splits): expected at least one split name"),
    (["--format", "bogus"], "format (--format): expected one of auto, yolo"),
])
def test_cli_errors_come_from_the_job(args, message, tmp_path):
    src = tmp_path / "set"
    src.mkdir()
    Image.new("RGB", (32, 32), "white").save(src / "a.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["augment", str(src), "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_summary_exit_code_is_a_pure_read():
    s = Summary()
    s.add(Outcome("a", "failed", "disk full", exit_code=7))
    s.add(Outcome("b", "failed", "disk full", exit_code=7))
    assert s.exit_code == 7 and s.exit_code == 7  # read twice: the same
    s.add(Outcome("c", "failed", "bad input", exit_code=2))
    assert s.exit_code == 1 and s.exit_code == 1  # a mix of failures: 1, every time
    assert Summary().exit_code == 0


def test_fingerprint_of_an_unknown_generator_does_not_fail():
    """The fingerprint is made before the backend is built: an unknown name fails later, with its own message."""
    from backdrop.config import GenerateConfig

    job = Job(config=PipelineConfig(generate=GenerateConfig(backend="no-such")), out="o", kind="run")
    assert len(job.fingerprint()) == 16
