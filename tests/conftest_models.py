"""Session fixtures: tiny random model folders, built once per test session.

tests/conftest.py imports them, so every test file can ask for them by name.
Each folder is built at most once per process, whichever module asks first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

import tiny_models

_built: dict[str, Path] = {}


def _once(key: str, factory: pytest.TempPathFactory, build: Callable[[Path], Path]) -> Path:
    if key not in _built or not _built[key].exists():
        _built[key] = build(factory.mktemp("tiny_models") / key)
    return _built[key]


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny StableDiffusionPipeline folder (saved with save_pretrained)."""
    pytest.importorskip("diffusers")
    return _once("sd", tmp_path_factory, tiny_models.make_tiny_sd)


@pytest.fixture(scope="session")
def tiny_sd_inpaint(tmp_path_factory) -> Path:
    """A tiny StableDiffusionInpaintPipeline folder (UNet with 9 input channels)."""
    pytest.importorskip("diffusers")
    return _once("sd-inpaint", tmp_path_factory, lambda p: tiny_models.make_tiny_sd(p, inpaint=True))


@pytest.fixture(scope="session")
def tiny_git(tmp_path_factory) -> Path:
    """A tiny GIT captioner folder (GitForCausalLM + GitProcessor)."""
    pytest.importorskip("transformers")
    return _once("git", tmp_path_factory, tiny_models.make_tiny_git)


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory) -> Path:
    """A tiny BLIP captioner folder (BlipForConditionalGeneration + BlipProcessor)."""
    pytest.importorskip("transformers")
    return _once("blip", tmp_path_factory, tiny_models.make_tiny_blip)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run torch on one thread for the module: tiny models gain nothing from more, and on a busy
    machine (other test processes) spinning OpenMP threads make them 10-50x slower."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    """A tiny StableDiffusionXLPipeline folder (two text encoders)."""
    pytest.importorskip("diffusers")
    return _once("sdxl", tmp_path_factory, tiny_models.make_tiny_sdxl)


@pytest.fixture(scope="session")
def tiny_lcm(tmp_path_factory) -> Path:
    """A tiny LatentConsistencyModelPipeline folder (LCMScheduler, guidance-embedding UNet)."""
    pytest.importorskip("diffusers")
    return _once("lcm", tmp_path_factory, lambda p: tiny_models.make_tiny_sd(p, lcm=True))


@pytest.fixture(scope="session")
def tiny_taesd(tmp_path_factory) -> Path:
    """A tiny AutoencoderTiny folder (TAESD's architecture)."""
    pytest.importorskip("diffusers")
    return _once("taesd", tmp_path_factory, tiny_models.make_tiny_taesd)
