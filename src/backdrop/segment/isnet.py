"""ISNet on CPU without rembg's fixed 1024x1024: a converted graph, tuned sessions, OpenVINO.

The exported ISNet graph carries fixed target sizes in its 39 ``Resize`` nodes (traced at
1024x1024), so it cannot run at any other input size, and it returns twelve outputs of which one
is used. :func:`convert` derives, from the store's own ONNX file (never downloaded), a graph whose
``Resize`` nodes are scale-based (the same factor at every input size), whose input is
``1x3xHxW`` (H, W multiples of 32) and whose only output is the final mask. The converted file is
kept under ``$BACKDROP_HOME/cache/segment`` (sha256 recorded beside it and checked on every load,
a size cap, :func:`prune` clears it).

:class:`IsnetRunner` runs it with onnxruntime (threads, full graph optimisation) or OpenVINO (the
CPU plugin, compiled models cached in the same folder), at a square input side chosen per call.

>>> runner = IsnetRunner(models.path("isnet-medium"))  # doctest: +SKIP
>>> prob = runner.probabilities(image, 768)  # float32 HxW in 0..1, the image's size  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

from .. import models
from ..errors import ConfigError, ModelCorruptError
from ..registry import require

log = logging.getLogger(__name__)

CONVERT_VERSION = 1  # bump when the conversion changes: old files are then unused (and pruned)
SIZES = (256, 320, 384, 512, 640, 768, 1024)  # the input sides a box crop may get (few, so OpenVINO compiles few)
# a box's crop is seen at most this large: the object fills the crop, GrabCut refines the edge at full
# resolution, and on bench_boxes' 30 objects a 320 cap kept as many true pixels as 512 and 1024 (one
# object of 30 below 99 %, the same one, flagged) for 1.8 instead of 2.3 CPU s per image
CROP_LIMIT = 320
DEFAULT_CAP_MB = 1024  # converted graphs + compiled OpenVINO blobs, all together
RUNTIMES = ("onnxruntime", "openvino")
_LOCK = threading.Lock()


def cache_dir() -> Path:
    return models.home() / "cache" / "segment"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def _source_sha(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = _sha256(path)
    return _SHA_MEMO[key]


def convert(source: Path, *, cap_mb: Optional[int] = None) -> Path:
    """The converted graph for ``source`` (made once, cached, sha256-checked on every call)."""
    source = Path(source)
    src_sha = _source_sha(source)
    folder = cache_dir()
    target = folder / f"{source.stem}-{src_sha[:16]}-c{CONVERT_VERSION}.onnx"
    meta = target.with_suffix(".json")
    with _LOCK:
        if target.is_file() and meta.is_file():
            try:
                want = json.loads(meta.read_text())["sha256"]
            except (OSError, ValueError, KeyError):
                want = None
            if want and _sha256(target) == want:
                os.utime(target)  # recently used: the cap removes the oldest first
                return target
            log.warning("converted ISNet %s does not match its checksum: made again", target)
        model = _rewrite(source)
        folder.mkdir(parents=True, exist_ok=True)
        from ..outputs import atomic_write_bytes as atomic_write

        data = model.SerializeToString()
        atomic_write(target, data)
        atomic_write(meta, (json.dumps({"sha256": hashlib.sha256(data).hexdigest(), "source": str(source),
                                        "source_sha256": src_sha, "version": CONVERT_VERSION}) + "\n").encode())
        enforce_cap(cap_mb, keep={target, meta})
        return target


def _rewrite(source: Path) -> Any:
    """Scale-based Resize nodes, dynamic H/W, the final output only (see the module docstring)."""
    onnx = require("onnx", "segment", "converting ISNet to other input sizes")
    from onnx import TensorProto, helper, numpy_helper

    ort = require("onnxruntime", "segment", "converting ISNet to other input sizes")
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # noqa: BLE001 - onnx raises its own types for a bad file
        raise ModelCorruptError(f"cannot load {source} as an ONNX model ({type(exc).__name__}: {str(exc).strip()[:120]})") from exc
    g = model.graph
    if len(g.input) != 1 or not g.output:
        raise ModelCorruptError(f"{source}: not an ISNet-like graph (one image input expected)")
    in_name, out_name = g.input[0].name, g.output[0].name
    dims = [d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    side = dims[2] if len(dims) == 4 and dims[2] else 1024
    resizes = [n for n in g.node if n.op_type == "Resize"]
    scales: dict[str, list[float]] = {}
    if resizes:
        # the sizes the trace fixed: run once at the traced side, reading each Resize's in and out shapes
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        del probe.graph.output[:]
        names = []
        for n in resizes:
            for t in (n.input[0], n.output[0]):
                if t not in names:
                    names.append(t)
                    probe.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        outs = sess.run(names, {in_name: np.zeros((1, 3, side, side), np.float32)})
        shapes = {n: o.shape for n, o in zip(names, outs)}
        del outs, sess, probe
        for n in resizes:
            i, o = shapes[n.input[0]], shapes[n.output[0]]
            scales[n.name] = [1.0, 1.0, o[2] / i[2], o[3] / i[3]]
    for n in resizes:
        name = f"{n.name}_scales"
        g.initializer.append(numpy_helper.from_array(np.array(scales[n.name], np.float32), name))
        x = n.input[0]
        del n.input[:]
        n.input.extend([x, "", name])
    g.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    g.input[0].type.tensor_type.shape.dim[3].dim_param = "width"
    elem = g.output[0].type.tensor_type.elem_type
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(out_name, elem, [1, 1, "height", "width"]))
    del g.value_info[:]
    _prune(g)
    return model


def _prune(g: Any) -> None:
    """Drop nodes (and initializers) nothing reads: the eleven side outputs' branches and the
    Shape/Slice/Concat chains that used to compute the Resize sizes."""
    producer = {o: n for n in g.node for o in n.output}  # the exported list is not always in order
    needed: set[str] = set()
    stack = [o.name for o in g.output]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None:
            stack.extend(i for i in node.input if i)
            stack.extend(node.output)
    keep = [n for n in g.node if any(o in needed for o in n.output)]
    del g.node[:]
    g.node.extend(keep)
    used = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(used)


def cached_files() -> list[Path]:
    folder = cache_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file())


def enforce_cap(cap_mb: Optional[int] = None, keep: set[Path] | frozenset = frozenset()) -> int:
    """Remove the least recently used files until the folder is under the cap. Returns bytes freed."""
    cap = (cap_mb if cap_mb is not None else int(os.environ.get("BACKDROP_SEGMENT_CACHE_MB", DEFAULT_CAP_MB))) << 20
    files = [(p.stat().st_mtime, p.stat().st_size, p) for p in cached_files()]
    total = sum(s for _, s, _ in files)
    freed = 0
    for _, size, p in sorted(files):
        if total <= cap:
            break
        if p in keep:
            continue
        try:
            p.unlink()
        except OSError:
            continue
        total -= size
        freed += size
    return freed


def prune() -> tuple[int, int]:
    """Delete everything in the segmenter's cache folder (all of it derived, remade on demand).
    Returns (files, bytes) removed."""
    n = size = 0
    for p in reversed(cached_files()):
        try:
            s = p.stat().st_size
            p.unlink()
        except OSError:
            continue
        n += 1
        size += s
    return n, size


def preprocess(image: Image.Image, side: int) -> np.ndarray:
    """rembg's ISNet input: resized (Lanczos) to side x side, scaled by the image's maximum, minus 0.5."""
    im = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS), dtype=np.float32)
    im = im / max(float(im.max()), 1e-6) - 0.5
    return np.ascontiguousarray(im.transpose(2, 0, 1)[None])


class IsnetRunner:
    """One loaded ISNet (converted), run at a chosen square side; thread count and runtime fixed."""

    def __init__(self, source: Path, *, runtime: str = "onnxruntime", threads: int = 0,
                 providers: Optional[list[str]] = None):
        if runtime not in RUNTIMES:
            raise ConfigError(f"segment.runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
        self.source = Path(source)
        self.runtime = runtime
        self.file = convert(self.source)
        self.threads = threads
        self._compiled: dict[int, Any] = {}
        if runtime == "onnxruntime":
            ort = require("onnxruntime", "segment", "the ISNet segmenter")
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads:
                opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            try:
                self.session = ort.InferenceSession(str(self.file), opts,
                                                    providers=providers or ["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001
                raise ModelCorruptError(f"cannot load {self.file} ({type(exc).__name__})") from exc
            self.provider = self.session.get_providers()[0]
            self.input = self.session.get_inputs()[0].name
            self.output = self.session.get_outputs()[0].name
        else:
            ov = require("openvino", "openvino", "the OpenVINO segmenter runtime")
            self.core = ov.Core()
            blobs = cache_dir() / "openvino"
            blobs.mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(blobs)})
            self.model = self.core.read_model(str(self.file))
            self.provider = "OpenVINO CPU"

    def _ov(self, side: int) -> Any:
        if side not in self._compiled:
            model = self.model.clone() if hasattr(self.model, "clone") else self.core.read_model(str(self.file))
            model.reshape([1, 3, side, side])
            cfg = {"PERFORMANCE_HINT": "LATENCY"}
            if self.threads:
                cfg["INFERENCE_NUM_THREADS"] = self.threads
            self._compiled[side] = self.core.compile_model(model, "CPU", cfg)
        return self._compiled[side]

    def raw(self, image: Image.Image, side: int) -> np.ndarray:
        """The model's output (sigmoid, 0..1) at side x side."""
        if side % 32:
            raise ConfigError(f"segment size must be a multiple of 32, got {side}")
        x = preprocess(image, side)
        if self.runtime == "onnxruntime":
            out = self.session.run([self.output], {self.input: x})[0]
        else:
            compiled = self._ov(side)
            out = compiled(x)[compiled.output(0)]
        return np.asarray(out, np.float32)[0, 0]

    def probabilities(self, image: Image.Image, side: int, *, normalise: bool = False) -> np.ndarray:
        """The mask's probabilities at the image's own size (float32, 0..1). ``normalise``: stretched
        to 0..1 by the map's own minimum and maximum, as rembg does."""
        pred = self.raw(image, side)
        if normalise:
            lo, hi = float(pred.min()), float(pred.max())
            pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
        small = Image.fromarray((np.clip(pred, 0, 1) * 255).astype(np.uint8), "L")
        return np.asarray(small.resize(image.size, Image.Resampling.LANCZOS), np.float32) / 255.0


def crop_side(width: int, height: int, limit: int = 1024) -> int:
    """The input side that suits a crop: the smallest of SIZES at or above its long side (the model
    never sees a crop shrunk), at most ``limit``."""
    long = max(width, height)
    for s in SIZES:
        if s >= long and s <= limit:
            return s
    return max([s for s in SIZES if s <= limit] or [SIZES[0]])
