"""segment.isnet: the exported graph's fixed-size Resize nodes rewritten to scale-based ones, so
the model runs at other input sizes; the final output only; the converted file cached, checked by
sha256 on load, capped and pruned. A tiny graph built here has ISNet's shape of problem (a Resize
whose target size is a constant traced at the export size, an extra side output)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from backdrop.segment import isnet  # noqa: E402

SIDE = 64


def _tiny_isnet(path):
    """input 1x3x64x64 -> MaxPool /2 -> Conv -> Resize to the constant [64, 64] -> Sigmoid = output;
    plus a side output, as ISNet has eleven."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([4.0, -4.0, 0.0], np.float32).reshape(1, 3, 1, 1)
    nodes = [
        helper.make_node("MaxPool", ["input"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "W", "B"], ["c"]),
        helper.make_node("Shape", ["c"], ["sh"]),
        helper.make_node("Slice", ["sh", "s0", "s2"], ["nc"]),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["c", "", "", "sizes"], ["up"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Sigmoid", ["up"], ["output"]),
        helper.make_node("Relu", ["c"], ["side1"]),
    ]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(1, np.float32), "B"),
             numpy_helper.from_array(np.array([0], np.int64), "s0"), numpy_helper.from_array(np.array([2], np.int64), "s2"),
             numpy_helper.from_array(np.array([SIDE, SIDE], np.int64), "hw")]
    graph = helper.make_graph(nodes, "tiny_isnet",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIDE, SIDE])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, SIDE, SIDE]),
                               helper.make_tensor_value_info("side1", TensorProto.FLOAT, [1, 1, SIDE // 2, SIDE // 2])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _image(w=160, h=120):
    rng = np.random.default_rng(0)
    a = (np.array([60, 140, 60]) + rng.normal(0, 5, (h, w, 3))).clip(0, 255).astype(np.uint8)
    a[30:90, 40:120] = (210, 40, 40)
    return Image.fromarray(a)


def test_the_original_cannot_run_at_another_size_the_converted_can(tmp_path):
    src = _tiny_isnet(tmp_path / "tiny.onnx")
    x = isnet.preprocess(_image(), 96)
    orig = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception):
        orig.run(None, {"input": x})  # fixed 64x64 input (and a Resize to 64x64 inside)
    conv = isnet.convert(src)
    g = onnx.load(str(conv)).graph
    assert [o.name for o in g.output] == ["output"]  # the side output and its branch are gone
    assert not [n for n in g.node if n.op_type in ("Shape", "Concat", "Relu")]
    sess = ort.InferenceSession(str(conv), providers=["CPUExecutionProvider"])
    for side in (32, 96, 128):
        out = sess.run(None, {"input": isnet.preprocess(_image(), side)})[0]
        assert out.shape == (1, 1, side, side)
    # at the traced size: the same numbers as the original graph
    x64 = isnet.preprocess(_image(), SIDE)
    np.testing.assert_allclose(sess.run(None, {"input": x64})[0], orig.run(["output"], {"input": x64})[0], atol=1e-6)


def test_runner_probabilities_at_the_image_size(tmp_path):
    runner = isnet.IsnetRunner(_tiny_isnet(tmp_path / "tiny.onnx"))
    img = _image()
    p = runner.probabilities(img, 128)
    assert p.shape == (120, 160) and p.dtype == np.float32
    assert p[40:80, 50:110].mean() > 0.9 and p[:20].mean() < 0.3  # the red block is found
    with pytest.raises(Exception, match="multiple of 32"):
        runner.raw(img, 100)


def test_openvino_runs_the_same_graph(tmp_path):
    pytest.importorskip("openvino")
    src = _tiny_isnet(tmp_path / "tiny.onnx")
    a = isnet.IsnetRunner(src).probabilities(_image(), 96)
    b = isnet.IsnetRunner(src, runtime="openvino").probabilities(_image(), 96)
    assert np.abs(a - b).max() < 0.02


def test_converted_file_is_checked_capped_and_pruned(tmp_path):
    src = _tiny_isnet(tmp_path / "tiny.onnx")
    conv = isnet.convert(src)
    assert conv.parent == isnet.cache_dir() and str(conv).startswith(os.environ["BACKDROP_HOME"])
    meta = json.loads(conv.with_suffix(".json").read_text())
    assert meta["sha256"] == isnet._sha256(conv) and meta["source"] == str(src)
    good = conv.read_bytes()
    conv.write_bytes(good[:-10] + b"0123456789")  # damaged on disk: not used, made again
    assert isnet.convert(src) == conv and conv.read_bytes() == good
    # the cap: the least recently used files go first, the one just made stays
    old = isnet.cache_dir() / "stale.bin"
    old.write_bytes(b"x" * (2 << 20))
    os.utime(old, (1, 1))
    assert isnet.enforce_cap(cap_mb=1, keep={conv, conv.with_suffix(".json")}) == 2 << 20
    assert not old.exists() and conv.exists()
    n, size = isnet.prune()
    assert n == 2 and size > 0 and not conv.exists() and src.exists()  # the store's file is never touched


def test_crop_side_suits_the_crop():
    assert isnet.crop_side(60, 100) == 256
    assert isnet.crop_side(300, 200) == 320
    assert isnet.crop_side(700, 500) == 768
    assert isnet.crop_side(700, 500, limit=512) == 512
    assert isnet.crop_side(2000, 100) == 1024
