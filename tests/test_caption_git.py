"""GIT / BLIP captioner on tiny random models, loaded through the real from_pretrained path."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("transformers")


from backdrop.caption import CAPTIONERS  # noqa: E402
from backdrop.caption.git import GitCaptioner  # noqa: E402
from backdrop.config import CaptionConfig  # noqa: E402
from backdrop.errors import ModelNotFoundError  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("fixture,model_type", [("tiny_git", "git"), ("tiny_blip", "blip")])
def test_caption_is_text_deterministic_and_loaded_once(request, fixture, model_type):
    folder = request.getfixturevalue(fixture)
    config = CaptionConfig(backend="git", model=str(folder), max_tokens=6, device="cpu")
    assert CAPTIONERS.availability("git", config).usable
    cap = CAPTIONERS.create("git", config)
    first = cap(_image(0))
    model = cap._model
    again = cap(_image(0))
    cap(_image(1))
    assert cap._model is model, "the model must be loaded once and reused"
    assert cap.model_type == model_type
    assert isinstance(first, str) and first == first.strip()
    assert first == again, "greedy decoding: same image, same caption"
    # max_tokens bounds the caption (each new token decodes to at most one word piece)
    assert len(first.split()) <= 6
    assert cap.describe()["model"] == str(folder)


def test_missing_folder_is_model_not_found(tmp_path):
    config = CaptionConfig(backend="git", model=str(tmp_path / "absent"), device="cpu")
    assert "does not exist" in GitCaptioner.availability(config)
    with pytest.raises(ModelNotFoundError) as err:
        GitCaptioner(config)(_image(0))
    assert "\n" not in str(err.value)


def test_unknown_hub_id_offline_fails_fast_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = CaptionConfig(backend="git", model="nobody-here/no-captioner", device="cpu")
    assert GitCaptioner.availability(config).startswith("model nobody-here/no-captioner not downloaded")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor  # noqa: F401  (warm imports)

    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as err:
        GitCaptioner(config)(_image(0))
    assert time.monotonic() - start < 10
    msg = str(err.value)
    assert "\n" not in msg and "hf download nobody-here/no-captioner" in msg
    assert "--captioner describe" in msg


@pytest.mark.slow
def test_real_git_caption_when_cached():
    """With microsoft/git-large-coco in the HF cache: an English caption of a plain blue image."""
    config = CaptionConfig(backend="git")
    reason = GitCaptioner.availability(config)
    if reason:
        pytest.skip(reason)
    text = GitCaptioner(config)(Image.new("RGB", (224, 224), (60, 110, 220)))
    assert text and any(c.isalpha() for c in text)
