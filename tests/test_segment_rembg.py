"""rembg segmenter: a tiny ONNX model built here runs through rembg's real dis_custom session (by
path and by store name); providers, thresholds, offline errors; and the real ISNet weights from the
model store on the example images when they are present."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("rembg")
onnx = pytest.importorskip("onnx")

from backdrop import models, runlog  # noqa: E402
from backdrop.config import SegmentConfig  # noqa: E402
from backdrop.errors import ConfigError, ModelCorruptError, ModelNotFoundError  # noqa: E402
from backdrop.segment import SEGMENTERS  # noqa: E402
from backdrop.segment.rembg import RembgSegmenter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BOX = (40, 30, 120, 90)


def _tiny_onnx(path: Path) -> Path:
    """ISNet's interface (1x3x1024x1024 -> 1x1x1024x1024 in 0..1): sigmoid(10*(R - G)), a 'red object' detector."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([10.0, -10.0, 0.0], np.float32).reshape(1, 3, 1, 1)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "W", "B"], ["z"]), helper.make_node("Sigmoid", ["z"], ["output"])],
        "tiny_seg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 1024, 1024])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 1024, 1024])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(1, np.float32), "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _tiny_onnx(tmp_path_factory.mktemp("onnx") / "tiny_seg.onnx")


def _scene(size=(160, 120), seed=0) -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(seed)
    bg = (np.array([90, 140, 90]) + rng.normal(0, 8, (size[1], size[0], 3))).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(bg)
    ImageDraw.Draw(img).ellipse(BOX, fill=(200, 40, 40))
    truth = Image.new("L", size, 0)
    ImageDraw.Draw(truth).ellipse(BOX, fill=255)
    return img, np.asarray(truth) > 127


def _iou(mask: Image.Image, truth: np.ndarray) -> float:
    m = np.asarray(mask) > 127
    return float((m & truth).sum() / max((m | truth).sum(), 1))


def _cfg(model, **kw) -> SegmentConfig:
    kw.setdefault("runtime", "onnxruntime")  # the onnxruntime path; "auto" is tested below
    return SegmentConfig(backend="rembg", model=str(model), device=kw.pop("device", "cpu"), **kw)


def test_auto_runtime_is_openvino_where_installed_with_the_same_mask(tiny_model):
    img, truth = _scene()
    auto = RembgSegmenter(_cfg(tiny_model, runtime="auto"))
    want = "openvino" if importlib.util.find_spec("openvino") else "onnxruntime"
    assert auto.runtime == want and auto.describe()["runtime"] == want
    ort_mask = np.asarray(RembgSegmenter(_cfg(tiny_model))(img))
    auto_mask = np.asarray(auto(img))
    assert (ort_mask != auto_mask).mean() < 0.001 and _iou(auto(img), truth) > 0.95
    with pytest.raises(ConfigError, match="size/runtime apply to ISNet files"):
        RembgSegmenter(_cfg(tiny_model, runtime="openvino", alpha_matting=True))


# -- tiny model through the real rembg path ------------------------------------------------------


def test_onnx_path_runs_through_dis_custom(tiny_model, monkeypatch):
    monkeypatch.delenv("U2NET_HOME", raising=False)
    img, truth = _scene()
    seg = SEGMENTERS.create("rembg", _cfg(tiny_model))
    assert type(seg).__name__ == "RembgSegmenter" and seg.name == "rembg"
    assert type(seg.session).__name__ == "DisCustomSession"
    assert "U2NET_HOME" not in os.environ  # only set while the session was made
    with runlog.collecting() as rec:
        mask = seg(img)
    assert mask.mode == "L" and mask.size == img.size
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert _iou(mask, truth) > 0.95
    assert rec["notes"]["segment_provider"] == "CPUExecutionProvider" == seg.provider
    assert seg.describe()["file"] == str(tiny_model.resolve())


def test_one_session_for_many_images(tiny_model, monkeypatch):
    import rembg

    made = []
    real = rembg.new_session

    def counting(*args, **kwargs):
        made.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(rembg, "new_session", counting)
    seg = RembgSegmenter(_cfg(tiny_model))
    first = seg.session
    ious = [_iou(seg(_scene(seed=s)[0]), _scene(seed=s)[1]) for s in range(3)]
    assert made == ["dis_custom"] and seg.session is first
    assert min(ious) > 0.95


def test_threshold_moves_the_edge(tiny_model):
    # a red ramp: the model's alpha rises smoothly from left to right
    x = np.linspace(0, 1, 200)[None, :, None]
    ramp = (np.array([90, 140, 90]) * (1 - x) + np.array([200, 40, 40]) * x).repeat(60, axis=0)
    img = Image.fromarray(ramp.astype(np.uint8))
    low = np.asarray(RembgSegmenter(_cfg(tiny_model, threshold=30))(img)) > 0
    high = np.asarray(RembgSegmenter(_cfg(tiny_model, threshold=230))(img)) > 0
    assert high.sum() < low.sum()
    assert (high & ~low).sum() == 0  # higher threshold: a subset


def test_alpha_matting_is_passed_through(tiny_model, monkeypatch):
    import rembg.bg

    calls = []
    real = rembg.bg.alpha_matting_cutout

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rembg.bg, "alpha_matting_cutout", spy)
    img, truth = _scene()
    mask = RembgSegmenter(_cfg(tiny_model, alpha_matting=True))(img)
    assert calls == [1]
    assert mask.mode == "L" and _iou(mask, truth) > 0.9


def test_store_name_uses_the_store_file(tiny_model, monkeypatch):
    data = tiny_model.read_bytes()
    import hashlib

    spec = models.ModelSpec(name="tiny-seg", task="segment", filename="tiny-seg.onnx", size_bytes=len(data),
                            sha256=hashlib.sha256(data).hexdigest(), license="MIT", source="url",
                            details={"url": "http://localhost/none"})
    monkeypatch.setitem(models.CATALOGUE, spec.name, spec)
    cfg = _cfg("tiny-seg")
    reason = RembgSegmenter.availability(cfg)
    assert reason and "backdrop models pull tiny-seg" in reason
    with pytest.raises(ModelNotFoundError, match="backdrop models pull tiny-seg"):
        RembgSegmenter(cfg)
    models.pull("tiny-seg", source=tiny_model, progress=False)
    assert RembgSegmenter.availability(cfg) is None
    seg = RembgSegmenter(cfg)
    assert seg.describe()["file"] == str(models.models_dir() / "tiny-seg.onnx")
    img, truth = _scene()
    assert _iou(seg(img), truth) > 0.95


# -- errors ----------------------------------------------------------------------------------------


def test_cuda_requested_without_cuda_is_a_config_error(tiny_model):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ConfigError, match="segment.device is 'cuda'.*onnxruntime-gpu"):
        RembgSegmenter(_cfg(tiny_model, device="cuda"))
    reason = RembgSegmenter.availability(_cfg(tiny_model, device="cuda"))
    assert reason and "CUDAExecutionProvider" in reason
    auto = RembgSegmenter(_cfg(tiny_model, device="auto"))
    assert auto.provider == "CPUExecutionProvider"


def test_availability_and_offline_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    reason = RembgSegmenter.availability(_cfg(tmp_path / "nope.onnx"))
    assert reason and "no ONNX file" in reason
    reason = RembgSegmenter.availability(_cfg("u2netp"))
    assert reason and "not downloaded" in reason
    reason = RembgSegmenter.availability(_cfg("isnet-small"))  # the isolated store is empty
    assert reason and "backdrop models pull isnet-small" in reason
    assert SEGMENTERS.availability("rembg", _cfg("isnet-medium")).usable is False
    # rembg would download u2netp now: offline that is one line, not a traceback or a hang
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="rembg model u2netp is not downloaded.*no network") as info:
        RembgSegmenter(_cfg("u2netp"))
    assert "\n" not in str(info.value) and time.monotonic() - start < 60


def test_bad_models(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not onnx")
    with pytest.raises(ModelCorruptError, match="cannot load"):
        RembgSegmenter(_cfg(junk))
    with pytest.raises(ConfigError, match="refine model"):
        RembgSegmenter(_cfg("smollm2-135m-instruct"))
    with pytest.raises(ConfigError, match="neither a store model .*nor a rembg model"):
        RembgSegmenter(_cfg("no-such-rembg-model"))


# -- the real ISNet weights ---------------------------------------------------------------------


def _real_home() -> Path:
    return Path(os.environ.get("BACKDROP_TEST_MODELS") or models.default_home())


EXAMPLES = sorted((ROOT / "examples").glob("*.png"))
MIN_IOU = {"isnet-medium": 0.95, "isnet-small": 0.8}


@pytest.mark.parametrize("name", ["isnet-medium", pytest.param("isnet-small", marks=pytest.mark.slow)])
def test_real_isnet_on_examples(name, monkeypatch):
    monkeypatch.setenv("BACKDROP_HOME", str(_real_home()))
    if models.find(name) is None:
        pytest.skip(f"{name} is not in the store at {_real_home()}: `backdrop models pull {name}` "
                    f"(or set BACKDROP_TEST_MODELS to a store that has it)")
    pairs = [(p, ROOT / "examples" / "masks" / p.name) for p in EXAMPLES if (ROOT / "examples" / "masks" / p.name).exists()]
    if not pairs:
        pytest.skip("no examples/*.png with examples/masks/*.png")
    models.path(name, check_sha=True)  # the real file is the catalogued release
    seg = RembgSegmenter(SegmentConfig(backend="rembg", model=name, device="cpu"))
    # isnet-small is slower and rougher here: one image is enough to prove it works
    for image, truth in pairs[: 1 if name == "isnet-small" else None]:
        mask = seg(Image.open(image).convert("RGB"))
        iou = _iou(mask, np.asarray(Image.open(truth).convert("L")) > 127)
        assert iou >= MIN_IOU[name], f"{name} on {image.name}: IoU {iou:.3f}"
