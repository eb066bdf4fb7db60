"""Smoke test of benchmarks/augmentation_value.py at its --quick size: every condition's code path
runs (the library's generators and composite on the shift task, training, the table); accuracy is
not asserted, the quick size is far too small to mean anything."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("augmentation_value", ROOT / "benchmarks" / "augmentation_value.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_quick_run_prints_every_condition(bench):
    out = io.StringIO()
    results = bench.run(bench.QUICK, correlation=0.9, variants=2, sd_model=None, threads=1, out=out)
    text = out.getvalue()
    rows = {m.group(1) for m in re.finditer(r"^\| (\S.*?) \|", text, re.M)}
    for cond in ("originals", "oracle"):
        assert cond in rows
    for cond in ("texture", "random", "pool"):
        assert f"+ 2 `{cond}` variants each" in rows
    # Stable Diffusion is listed, and says why it did not run
    assert re.search(r"^\| sd-txt2img \| skipped: no --sd-model given", text, re.M)
    assert "settings:" in text and "seeds [0]" in text
    assert set(results) == {"originals", "texture", "random", "pool", "oracle"}
    for accs in results.values():
        assert set(accs[0]) == {"in-dist", "OOD swapped", "OOD novel"}


def test_task_class_does_not_depend_on_colour_and_backgrounds_follow_the_class(bench):
    size = bench.QUICK
    train, tests = bench.build_sets(bench.Size(**{**size.__dict__, "train": 200}), seed=0, correlation=1.0)
    # masks are exact: outside them the image is the background it was made on
    for s in train[:20]:
        fg = s.mask == 255
        assert fg.any() and np.array_equal(s.image[~fg], s.background[~fg])
    # training backgrounds at correlation 1: each class's border colour is its own
    border = lambda s: np.concatenate([s.image[0], s.image[-1]]).mean(0)  # noqa: E731
    means = [np.mean([border(s) for s in train if s.label == c], axis=0) for c in range(bench.K)]
    assert min(np.linalg.norm(means[i] - means[j]) for i in range(bench.K) for j in range(i)) > 20
    assert set(tests) == {"in-dist", "OOD swapped", "OOD novel"}
    # swapped test: no object sits on its own class's family (nearest family by border colour)
    for s in tests["OOD swapped"]:
        nearest = int(np.argmin([np.linalg.norm(border(s) - m) for m in means]))
        assert nearest != s.label
