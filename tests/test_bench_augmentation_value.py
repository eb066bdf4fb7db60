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
    results = bench.run(bench.QUICK, correlation=0.9, variants=2, sd_model=None, threads=1, out=out,
                        tasks=("shift", "habitat"), results_dir=False)
    text = out.getvalue()
    rows = {m.group(1) for m in re.finditer(r"^\| (\S.*?) \|", text, re.M)}
    for cond in ("originals", "oracle"):
        assert cond in rows
    for cond in ("texture", "random", "pool", "swap", "swap+random"):
        assert f"+ 2 `{cond}` variants each" in rows
    # Stable Diffusion is listed, and says why it did not run
    assert re.search(r"^\| sd-txt2img \| skipped: no --sd-model given", text, re.M)
    assert "settings:" in text and "seeds [0]" in text
    # one table per task and budget, each with the background gap and training accuracy columns
    assert len(re.findall(r"^task (shift|habitat), (4|6) steps", text, re.M)) == 4
    assert text.count("| background gap | training accuracy |") == 4
    assert set(results) == {"shift", "habitat"}
    for task in results.values():
        assert set(task) == set(bench.QUICK.budgets)
        for budget in task.values():
            assert set(budget) == {"originals", "texture", "random", "pool", "swap", "swap+random", "oracle"}
            for accs in budget.values():
                assert set(accs[0]) == {"in-dist", "OOD swapped", "OOD novel", "mixed-rand", "train"}


def test_results_are_saved_per_condition_and_a_rerun_trains_nothing(bench, tmp_path, monkeypatch):
    size = bench.Size(**{**bench.QUICK.__dict__, "budgets": (3,)})
    first = bench.run(size, 0.9, 1, None, 1, out=io.StringIO(), only=["random"], results_dir=tmp_path)
    saved = sorted(p.name for p in tmp_path.rglob("*.json"))
    assert saved == ["3-steps_seed0_oracle.json", "3-steps_seed0_originals.json", "3-steps_seed0_random.json"]
    calls = []
    monkeypatch.setattr(bench, "train_and_test", lambda *a, **k: calls.append(a) or {})
    again = bench.run(size, 0.9, 1, None, 1, out=io.StringIO(), only=["random"], results_dir=tmp_path)
    assert calls == [] and again == first  # resumed from the saved results: no training at all


def test_swap_condition_draws_other_classes_backgrounds(bench, tmp_path):
    """The benchmark's swap variants come from the library's donor store: another training image's
    background, of another class, never the image's own."""
    size = bench.Size(**{**bench.QUICK.__dict__, "train": 40})
    train, _ = bench.build_sets(size, seed=0, correlation=1.0)
    extra = bench.augment(train, "swap", 2, 0, tmp_path, None)
    assert len(extra) == 80
    border = lambda a: np.concatenate([a[0], a[-1]]).astype(float).mean(0)  # noqa: E731
    own = 0
    for i, s in enumerate(extra):
        src = train[i // 2]
        assert np.array_equal(s.image[src.mask == 255], src.image[src.mask == 255])
        nearest = min(range(len(train)), key=lambda j: np.linalg.norm(border(train[j].background) - border(s.background)))
        own += train[nearest].label == src.label
    assert own / len(extra) < 0.2  # at correlation 1: backgrounds of other classes' families


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
    assert set(tests) == {"in-dist", "OOD swapped", "OOD novel", "mixed-rand"}
    # mixed-rand: the in-distribution objects, each on another test image's background
    for s, m in zip(tests["in-dist"], tests["mixed-rand"]):
        fg = s.mask == 255
        assert np.array_equal(s.image[fg], m.image[fg]) and m.label == s.label
        assert not np.array_equal(s.background, m.background)
    # swapped test: no object sits on its own class's family (nearest family by border colour)
    for s in tests["OOD swapped"]:
        nearest = int(np.argmin([np.linalg.norm(border(s) - m) for m in means]))
        assert nearest != s.label
